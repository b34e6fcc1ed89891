//! The guidance interval (Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval
//! Improves Sample and Distribution Quality in Diffusion Models").
//!
//! Guidance is applied only for flow times `t ∈ [start, end]`; elsewhere the conditional
//! velocity is used alone (and the unconditional branch need not be evaluated). In L2D time,
//! `t = 0` is pure noise and `t = 1` is data; an EDM noise level `σ` maps to
//! `t = s / (s + σ)` for data scale `s`.

use crate::error::{Error, Result};

/// A closed interval of flow time on which guidance is active.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuidanceInterval {
    start: f64,
    end: f64,
}

impl GuidanceInterval {
    /// The interval `[start, end]`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] if a bound is not finite or `start > end`.
    pub fn new(start: f64, end: f64) -> Result<Self> {
        if !start.is_finite() {
            return Err(Error::invalid(
                "guidance interval start",
                start,
                "must be finite",
            ));
        }
        if !end.is_finite() {
            return Err(Error::invalid(
                "guidance interval end",
                end,
                "must be finite",
            ));
        }
        if start > end {
            return Err(Error::invalid(
                "guidance interval",
                format!("[{start}, {end}]"),
                "the start must not exceed the end",
            ));
        }
        if start < 0.0 || end > 1.0 {
            return Err(Error::invalid(
                "guidance interval",
                format!("[{start}, {end}]"),
                "must lie within the flow's time range [0, 1]",
            ));
        }
        Ok(Self { start, end })
    }

    /// The whole time range `[0, 1]`.
    pub fn full() -> Self {
        Self {
            start: 0.0,
            end: 1.0,
        }
    }

    /// The first time at which guidance is active.
    pub fn start(&self) -> f64 {
        self.start
    }

    /// The last time at which guidance is active.
    pub fn end(&self) -> f64 {
        self.end
    }

    /// Whether `t` lies in `[start, end]`.
    pub fn contains(&self, t: f64) -> bool {
        self.start <= t && t <= self.end
    }
}

impl Default for GuidanceInterval {
    /// [`GuidanceInterval::full`].
    fn default() -> Self {
        Self::full()
    }
}
