//! Errors of diffusion generation.

use l2d_solvers::SolverError;

use super::GenerationError;
use crate::diffusion::DiffusionError;

/// Errors of diffusion generation (inside [`GenerationError::Step`] when raised during a
/// generation call).
#[derive(Debug, thiserror::Error)]
pub enum DiffusionGenerationError {
    /// The diffusion path failed (shapes, class labels, a base it was not built for).
    #[error(transparent)]
    Diffusion(#[from] DiffusionError),
    /// An option is invalid.
    #[error("invalid diffusion option `{field}`: {reason}")]
    Invalid {
        /// The option.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An adaptive solve of one row ran out of its evaluation budget.
    #[error(
        "row {row}: the adaptive solve needed more than max_nfe = {max_nfe} evaluations \
         (stopped at t = {t} after {nfe}); raise the budget or the tolerances, or use \
         BudgetPolicy::FixedGrid"
    )]
    BudgetExceeded {
        /// The batch row.
        row: usize,
        /// The budget.
        max_nfe: usize,
        /// Evaluations made.
        nfe: usize,
        /// The time reached.
        t: f64,
    },
    /// Given initial noise ran out.
    #[error("initial noise was given for {given} tokens, token {token} needs more")]
    NoiseExhausted {
        /// Tokens covered.
        given: usize,
        /// The token index asking.
        token: usize,
    },
    /// The final flow state of a token is NaN or infinite.
    #[error("the flow state of new token {token} is not finite (NaN or infinity)")]
    NonFinite {
        /// The token index (0 = first new token).
        token: usize,
    },
}

impl From<DiffusionGenerationError> for GenerationError {
    fn from(e: DiffusionGenerationError) -> Self {
        GenerationError::Step(Box::new(e))
    }
}

impl From<SolverError> for DiffusionGenerationError {
    fn from(e: SolverError) -> Self {
        DiffusionGenerationError::Diffusion(DiffusionError::Solver(e))
    }
}
