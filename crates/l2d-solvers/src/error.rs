//! The error type of every fallible operation in this crate.

/// Why a solve (or the construction of its inputs) failed.
///
/// Solvers never panic on bad input: every check below is done before or during the solve and
/// reported with the offending value, the time `t` and the step index where relevant.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SolverError {
    /// A tolerance (`rtol` or `atol`) is zero, negative or not finite.
    #[error("tolerance `{name}` must be positive and finite, got {value}")]
    InvalidTolerance {
        /// `"rtol"` or `"atol"`.
        name: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// A numeric option is out of its valid range.
    #[error("option `{name}` = {value} is invalid: {reason}")]
    InvalidOption {
        /// The option's name (e.g. `"safety"`, `"first_step"`, `"shift"`).
        name: &'static str,
        /// The rejected value.
        value: f64,
        /// What the option must satisfy.
        reason: &'static str,
    },
    /// A time grid (or list of requested times) has no points.
    #[error("time grid `{name}` is empty")]
    EmptyGrid {
        /// Which grid (`"times"`, `"grid"`).
        name: &'static str,
    },
    /// A time grid has a single point, so it spans no interval.
    #[error("time grid `{name}` has a single point ({t}); at least two are needed")]
    SinglePointGrid {
        /// Which grid.
        name: &'static str,
        /// Its only point.
        t: f64,
    },
    /// A time grid is not strictly monotone (or changes direction).
    #[error("time grid `{name}` is not strictly monotone at index {index}: {prev} then {next}")]
    UnorderedGrid {
        /// Which grid.
        name: &'static str,
        /// Index of the first point that breaks monotonicity.
        index: usize,
        /// The point before it.
        prev: f64,
        /// The offending point.
        next: f64,
    },
    /// A time value is NaN or infinite.
    #[error("time grid `{name}` has a non-finite value {t} at index {index}")]
    NonFiniteTime {
        /// Which grid.
        name: &'static str,
        /// Index of the value.
        index: usize,
        /// The value.
        t: f64,
    },
    /// A stepping grid does not start and end at the first and last requested time.
    #[error(
        "stepping grid spans [{grid_start}, {grid_end}] but the requested times span [{start}, {end}]"
    )]
    GridMismatch {
        /// First stepping-grid point.
        grid_start: f64,
        /// Last stepping-grid point.
        grid_end: f64,
        /// First requested time.
        start: f64,
        /// Last requested time.
        end: f64,
    },
    /// An adaptive controller was paired with a method that has no error estimate.
    #[error("method `{method}` has no embedded error estimate and cannot take adaptive steps")]
    NoErrorEstimate {
        /// The method's name.
        method: &'static str,
    },
    /// The adaptive step size became too small to advance `t` (`t + dt == t`) or fell below
    /// the configured minimum step while steps kept being rejected.
    #[error("step size underflow at t = {t} (dt = {dt}, step {step})")]
    StepSizeUnderflow {
        /// Time at which the step could not be taken.
        t: f64,
        /// The step size that was too small.
        dt: f64,
        /// Index of the attempted step (accepted + rejected so far).
        step: usize,
    },
    /// More steps (accepted + rejected) were needed than `max_steps` allows.
    #[error("max_steps = {max_steps} exceeded at t = {t}")]
    MaxStepsExceeded {
        /// The configured budget.
        max_steps: usize,
        /// Time reached when the budget ran out.
        t: f64,
    },
    /// The next step would need more vector-field evaluations than `max_nfe` allows.
    #[error("max_nfe = {max_nfe} exceeded at t = {t} ({nfe} evaluations done)")]
    MaxNfeExceeded {
        /// The configured budget.
        max_nfe: usize,
        /// Evaluations done so far.
        nfe: usize,
        /// Time reached when the budget ran out.
        t: f64,
    },
    /// The state (or the error estimate of an adaptive step) became NaN or infinite.
    #[error("non-finite state at t = {t} (step {step})")]
    NonFiniteState {
        /// Time of the non-finite state.
        t: f64,
        /// Index of the step that produced it.
        step: usize,
    },
}
