//! The crate's error type: parse and validation failures of schedules and configuration values,
//! and shape mismatches between tensors that come from different sources (logits and an
//! embedding table, for example).

/// Every failure `l2d-core` reports. Each variant names the field or tensor at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A name that does not belong to a known set (a schedule, an estimator, a rescaling mode).
    #[error("unknown {field} `{name}`; expected one of: {expected}")]
    UnknownName {
        /// What was being parsed, e.g. `noise_schedule`.
        field: &'static str,
        /// The name that was given.
        name: String,
        /// The accepted names, comma separated.
        expected: &'static str,
    },
    /// A numeric value outside its valid range (non-finite, non-positive, odd dimension, ...).
    #[error("invalid {field} = {value}: {reason}")]
    InvalidValue {
        /// The parameter at fault, e.g. `shift`.
        field: &'static str,
        /// The value that was given (as text, so integers and floats read naturally).
        value: String,
        /// What the value must satisfy.
        reason: &'static str,
    },
    /// A string that should hold a schedule but cannot be parsed.
    #[error("cannot parse {field} `{input}`: {reason}")]
    Parse {
        /// What was being parsed, e.g. `temperature_schedule`.
        field: &'static str,
        /// The text that was given.
        input: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Two tensors whose shapes must agree do not.
    #[error("shape mismatch for {tensor}: expected {expected}, got {got:?}")]
    Shape {
        /// The tensor at fault, e.g. `flow embedding table`.
        tensor: &'static str,
        /// The shape that was required, in words.
        expected: String,
        /// The shape that was given.
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
