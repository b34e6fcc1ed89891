//! Temperature schedules for the x1 estimate inside the ODE (the reference's
//! `nstep_temperature_schedule`).
//!
//! The reference accepts a number (a fixed temperature; `0.0`, the released default for
//! non-code tasks, means argmax) or the string `polynomial_<p>_<end>`:
//! `T(t) = (1 - t/end)^p` for `t < end` and 0 from `end` on. Its code-task scripts use
//! `polynomial_1_1.0`, i.e. `T(t) = 1 - t`. The reference evaluates the schedule at the end of
//! the current solver sub-step; choosing that time is the caller's business.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A temperature as a function of flow time `t ∈ [0, 1]`. A temperature `<= 0` means argmax.
///
/// Parse with [`str::parse`] from `"0.0"`, `"1"`, `"polynomial_1_1.0"`, or
/// `"one_minus_t"` / `"1-t"`; build from a number with [`TemperatureSchedule::constant`]. With
/// serde it reads a JSON number or one of those strings, as in the reference's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Repr", into = "Repr")]
pub enum TemperatureSchedule {
    /// The same temperature at every `t`.
    Constant(f64),
    /// The reference's `polynomial_<power>_<end>`: `(1 - t/end)^power` for `t < end`, else 0.
    Polynomial {
        /// The exponent `p` (finite).
        power: f64,
        /// The time `end > 0` from which the temperature is 0.
        end: f64,
    },
    /// `T(t) = 1 - t` (equal to `polynomial_1_1.0`, kept as its own name for readability).
    OneMinusT,
}

impl Default for TemperatureSchedule {
    /// The reference's default, `0.0` (argmax).
    fn default() -> Self {
        TemperatureSchedule::Constant(0.0)
    }
}

impl TemperatureSchedule {
    /// A fixed temperature.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] if `temperature` is not finite.
    pub fn constant(temperature: f64) -> Result<Self> {
        let schedule = TemperatureSchedule::Constant(temperature);
        schedule.validate()?;
        Ok(schedule)
    }

    /// The reference's `polynomial_<power>_<end>` schedule.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] if `power` is not finite or `end` is not finite and positive.
    pub fn polynomial(power: f64, end: f64) -> Result<Self> {
        let schedule = TemperatureSchedule::Polynomial { power, end };
        schedule.validate()?;
        Ok(schedule)
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a non-finite temperature or power, or an `end` that is not
    /// finite and positive.
    pub fn validate(&self) -> Result<()> {
        match *self {
            TemperatureSchedule::Constant(t) if !t.is_finite() => Err(Error::invalid(
                "temperature",
                t,
                "the temperature must be finite",
            )),
            TemperatureSchedule::Constant(t) if t < 0.0 => Err(Error::invalid(
                "temperature",
                t,
                "the temperature must not be negative (0 means the argmax)",
            )),
            TemperatureSchedule::Polynomial { power, .. } if !power.is_finite() => Err(
                Error::invalid("power", power, "the polynomial power must be finite"),
            ),
            TemperatureSchedule::Polynomial { end, .. } if !(end.is_finite() && end > 0.0) => {
                Err(Error::invalid(
                    "end",
                    end,
                    "the polynomial end time must be finite and positive",
                ))
            }
            _ => Ok(()),
        }
    }

    /// The temperature at time `t`.
    pub fn at(&self, t: f64) -> f64 {
        match *self {
            TemperatureSchedule::Constant(temperature) => temperature,
            TemperatureSchedule::Polynomial { power, end } => {
                if t >= end {
                    0.0
                } else {
                    // The reference's order of operations: x = 1 - (1/end)·t, then x^p.
                    (1.0 - (1.0 / end) * t).powf(power)
                }
            }
            TemperatureSchedule::OneMinusT => 1.0 - t,
        }
    }

    /// Whether the temperature does not depend on `t` (the reference's `fixed_temperature`).
    pub fn is_constant(&self) -> bool {
        matches!(self, TemperatureSchedule::Constant(_))
    }
}

impl FromStr for TemperatureSchedule {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let text = s.trim().to_ascii_lowercase();
        let parse_error = |reason: String| Error::Parse {
            field: "temperature_schedule",
            input: s.to_string(),
            reason,
        };
        if let Ok(temperature) = text.parse::<f64>() {
            return TemperatureSchedule::constant(temperature);
        }
        if text == "one_minus_t" || text == "1-t" {
            return Ok(TemperatureSchedule::OneMinusT);
        }
        if let Some(rest) = text.strip_prefix("polynomial_") {
            let parts: Vec<&str> = rest.split('_').collect();
            let [power, end] = parts.as_slice() else {
                return Err(parse_error(format!(
                    "expected `polynomial_<power>_<end>`, found {} field(s) after `polynomial_`",
                    parts.len()
                )));
            };
            let number = |name: &str, value: &str| {
                value
                    .parse::<f64>()
                    .map_err(|e| parse_error(format!("{name} `{value}` is not a number ({e})")))
            };
            return TemperatureSchedule::polynomial(number("power", power)?, number("end", end)?);
        }
        Err(parse_error(
            "expected a number, `polynomial_<power>_<end>`, `one_minus_t` or `1-t`".to_string(),
        ))
    }
}

impl TryFrom<f64> for TemperatureSchedule {
    type Error = Error;

    fn try_from(temperature: f64) -> Result<Self> {
        TemperatureSchedule::constant(temperature)
    }
}

impl fmt::Display for TemperatureSchedule {
    /// A text that [`str::parse`] accepts back (`"0.0"`, `"polynomial_1.0_1.0"`, `"one_minus_t"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemperatureSchedule::Constant(t) => write!(f, "{t:?}"),
            TemperatureSchedule::Polynomial { power, end } => {
                write!(f, "polynomial_{power:?}_{end:?}")
            }
            TemperatureSchedule::OneMinusT => f.write_str("one_minus_t"),
        }
    }
}

/// The serialised form: a number for a constant, the name otherwise.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    Number(f64),
    Name(String),
}

impl TryFrom<Repr> for TemperatureSchedule {
    type Error = Error;

    fn try_from(repr: Repr) -> Result<Self> {
        match repr {
            Repr::Number(t) => TemperatureSchedule::constant(t),
            Repr::Name(s) => s.parse(),
        }
    }
}

impl From<TemperatureSchedule> for Repr {
    fn from(schedule: TemperatureSchedule) -> Repr {
        match schedule {
            TemperatureSchedule::Constant(t) => Repr::Number(t),
            other => Repr::Name(other.to_string()),
        }
    }
}
