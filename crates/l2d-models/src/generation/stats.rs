//! Statistics of diffusion generation: per-token counts and times, and their sums.

use std::time::Duration;

use super::GenerationOutput;

/// Counts and time of one [`next_logits`](super::TokenStep::next_logits) call of a
/// [`DiffusionStep`](super::DiffusionStep) (one new token of every row).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokenStats {
    /// Rows in the batch.
    pub rows: usize,
    /// Per row, the paper's NFE: solver evaluations (fused and zero-velocity ones included)
    /// plus the final evaluation; 0 without diffusion.
    pub nfe: Vec<usize>,
    /// Diffusion-path forwards actually run, the final one included (a batched forward of
    /// the whole batch, or of both guidance branches, counts once).
    pub diffusion_forwards: usize,
    /// Evaluations at `t = 0` answered from the frozen pass.
    pub fused_evaluations: usize,
    /// Evaluations at `t ≥ 1` answered with a zero velocity.
    pub zero_velocity_evaluations: usize,
    /// Accepted solver steps (summed over rows for adaptive solves).
    pub accepted_steps: usize,
    /// Rejected adaptive steps.
    pub rejected_steps: usize,
    /// Rows that fell back to a fixed grid at the budget.
    pub budget_fallbacks: usize,
    /// Host time of the call (the device may still be working when it returns; the
    /// generation loop's sampling waits for it).
    pub time: Duration,
}

impl TokenStats {
    /// The mean NFE over the rows.
    pub fn mean_nfe(&self) -> f64 {
        if self.nfe.is_empty() {
            0.0
        } else {
            self.nfe.iter().sum::<usize>() as f64 / self.nfe.len() as f64
        }
    }
}

/// Statistics of a diffusion generation call: one [`TokenStats`] per step (the prefill's
/// first).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DiffusionStats {
    /// Per step call, in order.
    pub tokens: Vec<TokenStats>,
}

impl DiffusionStats {
    /// Mean NFE per token and row.
    pub fn mean_nfe_per_token(&self) -> f64 {
        let (sum, n) = self.tokens.iter().fold((0, 0), |(s, n), t| {
            (s + t.nfe.iter().sum::<usize>(), n + t.nfe.len())
        });
        if n == 0 { 0.0 } else { sum as f64 / n as f64 }
    }

    /// Diffusion forwards run in all calls.
    pub fn diffusion_forwards(&self) -> usize {
        self.tokens.iter().map(|t| t.diffusion_forwards).sum()
    }

    /// Fused evaluations in all calls.
    pub fn fused_evaluations(&self) -> usize {
        self.tokens.iter().map(|t| t.fused_evaluations).sum()
    }

    /// Host time of all calls.
    pub fn total_time(&self) -> Duration {
        self.tokens.iter().map(|t| t.time).sum()
    }
}

/// The result of [`Generator::generate`](super::Generator::generate).
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionOutput {
    /// Sequences, stops, timings (as base generation).
    pub generation: GenerationOutput,
    /// NFE and forwards per token.
    pub diffusion: DiffusionStats,
}
