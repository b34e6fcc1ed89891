//! The crate's error type.

/// Every failure `l2d-guidance` reports. Each variant names the parameter or tensor at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A guidance parameter outside its valid range.
    #[error("invalid {field} = {value}: {reason}")]
    InvalidValue {
        /// The parameter at fault, e.g. `guidance weight`.
        field: &'static str,
        /// The value that was given, as text.
        value: String,
        /// What the value must satisfy.
        reason: &'static str,
    },
    /// A stacked model output whose batch cannot be split into two equal branches.
    #[error(
        "cannot split a batch of {batch} into conditional and unconditional halves (it must be even and positive)"
    )]
    OddBatch {
        /// The batch size found on dimension 0.
        batch: usize,
    },
    /// Guidance is active at `t` but no unconditional velocity was given.
    #[error("guidance is active at t = {t} but the unconditional velocity is missing")]
    MissingUnconditional {
        /// The time at which it was needed.
        t: f64,
    },
    /// Conditional and unconditional velocities of different shapes.
    #[error("the {tensor} has shape {got:?}, expected {expected:?}")]
    Shape {
        /// The tensor at fault.
        tensor: &'static str,
        /// The shape it should have.
        expected: Vec<usize>,
        /// The shape it has.
        got: Vec<usize>,
    },
}

/// `Result` with [`Error`] as the error type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn invalid(field: &'static str, value: impl ToString, reason: &'static str) -> Self {
        Error::InvalidValue {
            field,
            value: value.to_string(),
            reason,
        }
    }
}
