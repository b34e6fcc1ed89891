//! How step sizes are chosen: a fixed grid, or adaptive control (torchdiffeq's I-controller or
//! diffrax's PID controller).

use serde::{Deserialize, Serialize};

use crate::{SolverError, TimeGrid};

/// How the solver chooses its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StepController {
    /// One step per interval of the requested times (torchdiffeq's fixed-grid default, and
    /// L2D's: the grid *is* the output times).
    RequestedTimes,
    /// Step through this grid, which must start and end at the first and last requested time;
    /// outputs in between grid points are linearly interpolated (torchdiffeq's `interp="linear"`).
    Grid(TimeGrid),
    /// Adaptive steps with an embedded error estimate.
    Adaptive(AdaptiveController),
}

impl StepController {
    /// Adaptive control with torchdiffeq's defaults and the given tolerances.
    pub fn adaptive(rtol: f64, atol: f64) -> Self {
        StepController::Adaptive(AdaptiveController::new(rtol, atol))
    }
}

/// The rule that accepts/rejects a step and scales the next one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ErrorControl {
    /// torchdiffeq's integral controller (`_optimal_step_size`): accept iff the error ratio
    /// `r <= 1`; next `dt·min(factor_max, max(safety·r^(−1/order), m))` with `m = 1` after an
    /// accepted step (never shrink) and `m = factor_min` after a rejection; `r = 0` grows by
    /// `factor_max`.
    Torchdiffeq,
    /// diffrax's `PIDController`: accept iff `r < 1`; with `δ = 1/r` and `k` the order,
    /// factor `safety·δₙ^((p+i+d)/k)·δₙ₋₁^(−(p+2d)/k)·δₙ₋₂^(d/k)`, clipped to
    /// `[1, factor_max]` after an accepted step and `[factor_min, safety]` after a rejection.
    /// `(p, i, d) = (0, 1, 0)` is an I-controller; diffrax suggests `(0.4, 0.3, 0)` style PI
    /// settings for harder problems.
    Pid {
        /// Proportional coefficient.
        pcoeff: f64,
        /// Integral coefficient.
        icoeff: f64,
        /// Derivative coefficient.
        dcoeff: f64,
    },
}

/// Adaptive step-size control; defaults are torchdiffeq's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveController {
    /// Relative tolerance (torchdiffeq default 1e-7).
    pub rtol: f64,
    /// Absolute tolerance (torchdiffeq default 1e-9).
    pub atol: f64,
    /// First step size; `None` selects it (Hairer–Nørsett–Wanner §II.4, one extra evaluation).
    pub first_step: Option<f64>,
    /// Smallest step (default 0); a step this small is always accepted.
    pub min_step: f64,
    /// Largest step (default ∞); a larger proposed step is clipped.
    pub max_step: f64,
    /// Safety factor (default 0.9).
    pub safety: f64,
    /// Largest growth per step (torchdiffeq `ifactor`, default 10).
    pub factor_max: f64,
    /// Largest shrink per rejection (torchdiffeq `dfactor`, default 0.2).
    pub factor_min: f64,
    /// The accept/scale rule.
    pub control: ErrorControl,
}

impl Default for AdaptiveController {
    fn default() -> Self {
        AdaptiveController::new(1e-7, 1e-9)
    }
}

impl AdaptiveController {
    /// torchdiffeq's controller with the given tolerances.
    pub fn new(rtol: f64, atol: f64) -> Self {
        AdaptiveController {
            rtol,
            atol,
            first_step: None,
            min_step: 0.0,
            max_step: f64::INFINITY,
            safety: 0.9,
            factor_max: 10.0,
            factor_min: 0.2,
            control: ErrorControl::Torchdiffeq,
        }
    }

    /// diffrax's PID controller with the given tolerances and coefficients.
    pub fn pid(rtol: f64, atol: f64, pcoeff: f64, icoeff: f64, dcoeff: f64) -> Self {
        AdaptiveController {
            control: ErrorControl::Pid {
                pcoeff,
                icoeff,
                dcoeff,
            },
            ..AdaptiveController::new(rtol, atol)
        }
    }

    /// Sets the first step size.
    pub fn with_first_step(mut self, dt: f64) -> Self {
        self.first_step = Some(dt);
        self
    }

    /// Sets the step-size bounds.
    pub fn with_step_bounds(mut self, min_step: f64, max_step: f64) -> Self {
        self.min_step = min_step;
        self.max_step = max_step;
        self
    }

    /// Checks every option.
    ///
    /// # Errors
    /// [`SolverError::InvalidTolerance`] for a non-positive or non-finite `rtol`/`atol`,
    /// [`SolverError::InvalidOption`] for the others.
    pub fn validate(&self) -> Result<(), SolverError> {
        for (name, value) in [("rtol", self.rtol), ("atol", self.atol)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(SolverError::InvalidTolerance { name, value });
            }
        }
        let bad = |name, value, reason| {
            Err(SolverError::InvalidOption {
                name,
                value,
                reason,
            })
        };
        if let Some(h) = self.first_step
            && !(h.is_finite() && h > 0.0)
        {
            return bad("first_step", h, "must be positive and finite");
        }
        if !(self.min_step >= 0.0 && self.min_step.is_finite()) {
            return bad("min_step", self.min_step, "must be finite and >= 0");
        }
        if self.max_step.is_nan() || self.max_step <= 0.0 || self.max_step < self.min_step {
            return bad(
                "max_step",
                self.max_step,
                "must be positive and >= min_step",
            );
        }
        if !(self.safety > 0.0 && self.safety <= 1.0) {
            return bad("safety", self.safety, "must be in (0, 1]");
        }
        if !(self.factor_max >= 1.0 && self.factor_max.is_finite()) {
            return bad("factor_max", self.factor_max, "must be finite and >= 1");
        }
        if !(self.factor_min > 0.0 && self.factor_min <= 1.0) {
            return bad("factor_min", self.factor_min, "must be in (0, 1]");
        }
        if let ErrorControl::Pid {
            pcoeff,
            icoeff,
            dcoeff,
        } = self.control
        {
            for (name, v) in [("pcoeff", pcoeff), ("icoeff", icoeff), ("dcoeff", dcoeff)] {
                if !v.is_finite() {
                    return bad(name, v, "must be finite");
                }
            }
        }
        Ok(())
    }
}

/// Per-solve state of the controller (diffrax's PID error history).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ControllerState {
    prev_inv: f64,
    prev_prev_inv: f64,
}

impl ControllerState {
    pub(crate) fn new() -> Self {
        ControllerState {
            prev_inv: 1.0,
            prev_prev_inv: 1.0,
        }
    }
}

impl AdaptiveController {
    /// Whether a step of magnitude `h` with error ratio `ratio` is accepted.
    pub(crate) fn accepts(&self, h: f64, ratio: f64) -> bool {
        if h <= self.min_step {
            return true;
        }
        if h > self.max_step || !ratio.is_finite() {
            return false;
        }
        match self.control {
            ErrorControl::Torchdiffeq => ratio <= 1.0,
            ErrorControl::Pid { .. } => ratio < 1.0,
        }
    }

    /// The next step magnitude after a step of magnitude `h` (clamped to the step bounds).
    /// A non-finite ratio shrinks by `factor_min`.
    pub(crate) fn next_step(
        &self,
        h: f64,
        ratio: f64,
        accepted: bool,
        order: u32,
        state: &mut ControllerState,
    ) -> f64 {
        let k = f64::from(order);
        let factor = if !ratio.is_finite() {
            self.factor_min
        } else {
            match self.control {
                ErrorControl::Torchdiffeq => {
                    if ratio == 0.0 {
                        self.factor_max
                    } else {
                        let m = if ratio < 1.0 { 1.0 } else { self.factor_min };
                        let exponent = 1.0 / k;
                        self.factor_max
                            .min((self.safety / ratio.powf(exponent)).max(m))
                    }
                }
                ErrorControl::Pid {
                    pcoeff,
                    icoeff,
                    dcoeff,
                } => {
                    let inv = 1.0 / ratio;
                    let c1 = (pcoeff + icoeff + dcoeff) / k;
                    let c2 = -(pcoeff + 2.0 * dcoeff) / k;
                    let c3 = dcoeff / k;
                    let pow = |x: f64, c: f64| if c == 0.0 { 1.0 } else { x.powf(c) };
                    let raw = self.safety
                        * pow(inv, c1)
                        * pow(state.prev_inv, c2)
                        * pow(state.prev_prev_inv, c3);
                    let (lo, hi) = if accepted {
                        (1.0, self.factor_max)
                    } else {
                        (self.factor_min, self.safety)
                    };
                    let f = if raw.is_nan() { lo } else { raw.clamp(lo, hi) };
                    if accepted {
                        let inv = if inv == 0.0 || inv.is_infinite() {
                            1.0
                        } else {
                            inv
                        };
                        state.prev_prev_inv = state.prev_inv;
                        state.prev_inv = inv;
                    }
                    f
                }
            }
        };
        (h * factor).clamp(self.min_step, self.max_step)
    }
}
