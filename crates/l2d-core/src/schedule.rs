//! Noise schedules: warps of uniform time `u ∈ [0, 1]` used when drawing training timesteps
//! (and, for the shifted schedule, when spacing an inference grid).
//!
//! Time runs from pure noise (`t = 0`) to data (`t = 1`), as in the reference. Every schedule
//! maps `[0, 1]` onto `[0, 1]`, increasing, with `0 ↦ 0` and `1 ↦ 1`.

use std::{fmt, str::FromStr};

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A monotone warp of time on `[0, 1]`.
///
/// Parse the reference's `noise_schedule` names with [`str::parse`]: `"identity"`, `"cosmap"`,
/// and `"shifted_<s>"` for [`NoiseSchedule::Shifted`] (not in the reference).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum NoiseSchedule {
    /// `t ↦ t`: uniform timesteps (every released L2D configuration).
    Identity,
    /// The reference's `cosmap`: `t ↦ 1 - 1 / (tan(π t / 2) + 1)`, computed here in the
    /// equivalent form `sin(π t/2) / (sin(π t/2) + cos(π t/2))`, which stays finite at `t = 1`.
    Cosmap,
    /// The time shift of SD3 / flow-matching practice, `t ↦ t / (s - (s - 1) t)`.
    ///
    /// `s > 1` moves mass towards `t = 0` (noise), `s < 1` towards `t = 1`; `s = 1` is the
    /// identity. Build it with [`NoiseSchedule::shifted`], which checks that `s` is finite and
    /// positive; a value built directly with a bad `shift` gives meaningless results.
    Shifted {
        /// The shift `s > 0`.
        shift: f64,
    },
}

const NAMES: &str = "identity, cosmap, shifted_<s>";

impl NoiseSchedule {
    /// A shifted schedule, checking that `shift` is finite and positive.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a non-finite or non-positive `shift`.
    pub fn shifted(shift: f64) -> Result<Self> {
        let schedule = NoiseSchedule::Shifted { shift };
        schedule.validate()?;
        Ok(schedule)
    }

    /// Checks the schedule's parameters.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a [`NoiseSchedule::Shifted`] whose shift is not finite and
    /// positive.
    pub fn validate(&self) -> Result<()> {
        match *self {
            NoiseSchedule::Shifted { shift } if !(shift.is_finite() && shift > 0.0) => Err(
                Error::invalid("shift", shift, "the time shift must be finite and positive"),
            ),
            _ => Ok(()),
        }
    }

    /// Applies the schedule to one time.
    pub fn apply(&self, t: f64) -> f64 {
        match *self {
            NoiseSchedule::Identity => t,
            NoiseSchedule::Cosmap => {
                let (s, c) = (std::f64::consts::FRAC_PI_2 * t).sin_cos();
                s / (s + c)
            }
            NoiseSchedule::Shifted { shift } => t / (shift - (shift - 1.0) * t),
        }
    }

    /// Applies the schedule element-wise, on the tensor's device and in its dtype.
    ///
    /// # Shapes
    /// - `t`: any shape; the output has the same shape.
    pub fn apply_tensor<const D: usize>(&self, t: Tensor<D>) -> Tensor<D> {
        match *self {
            NoiseSchedule::Identity => t,
            NoiseSchedule::Cosmap => {
                let angle = t.mul_scalar(std::f64::consts::FRAC_PI_2);
                let s = angle.clone().sin();
                s.clone().div(s.add(angle.cos()))
            }
            NoiseSchedule::Shifted { shift } => {
                let denominator = t.clone().mul_scalar(1.0 - shift).add_scalar(shift);
                t.div(denominator)
            }
        }
    }
}

impl FromStr for NoiseSchedule {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let name = s.trim().to_ascii_lowercase();
        match name.as_str() {
            "identity" => Ok(NoiseSchedule::Identity),
            "cosmap" => Ok(NoiseSchedule::Cosmap),
            _ => match name.strip_prefix("shifted_") {
                Some(value) => {
                    let shift = value.parse::<f64>().map_err(|e| Error::Parse {
                        field: "noise_schedule",
                        input: s.to_string(),
                        reason: format!("the shift is not a number ({e})"),
                    })?;
                    NoiseSchedule::shifted(shift)
                }
                None => Err(Error::UnknownName {
                    field: "noise_schedule",
                    name: s.to_string(),
                    expected: NAMES,
                }),
            },
        }
    }
}

impl fmt::Display for NoiseSchedule {
    /// The name [`str::parse`] accepts back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoiseSchedule::Identity => f.write_str("identity"),
            NoiseSchedule::Cosmap => f.write_str("cosmap"),
            NoiseSchedule::Shifted { shift } => write!(f, "shifted_{shift:?}"),
        }
    }
}

impl TryFrom<String> for NoiseSchedule {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<NoiseSchedule> for String {
    fn from(s: NoiseSchedule) -> String {
        s.to_string()
    }
}
