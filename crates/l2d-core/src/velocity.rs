//! Velocity schedules: the velocity field of the inference ODE built from an estimate `x1_hat`
//! of the data point and the current state `x_t`.
//!
//! For the interpolant `x_t = (1 - t) x0 + t x1`, the velocity `x1 - x0` equals
//! `(x1 - x_t) / (1 - t)`, so plugging in the model's estimate `x1_hat` gives the `constant`
//! schedule the reference uses. Both schedules are singular at `t = 1`; the solvers' end-point
//! policy (zero velocity at `t >= 1`, as the reference) deals with that.

use std::{fmt, str::FromStr};

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    time::Time,
};

/// How the difference `x1_hat - x_t` is turned into a velocity.
///
/// Parse the reference's `velocity_schedule` names with [`str::parse`]: `"constant"`, `"edm"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum VelocitySchedule {
    /// `(x1_hat - x_t) / (1 - t)`: the rectified-flow velocity (the reference's default).
    #[default]
    Constant,
    /// `(x1_hat - x_t) / (1 - t)²` (the reference's `edm` option).
    Edm,
}

impl VelocitySchedule {
    /// The divisor applied to `x1_hat - x_t` at time `t`: `1 - t` or `(1 - t)²`.
    pub fn divisor(&self, t: f64) -> f64 {
        match self {
            VelocitySchedule::Constant => 1.0 - t,
            VelocitySchedule::Edm => (1.0 - t) * (1.0 - t),
        }
    }

    /// The velocity `(x1_hat - x_t) / divisor(t)`, on the tensors' device and in their dtype.
    ///
    /// At `t = 1` the result is not finite; evaluate it only for `t < 1`.
    ///
    /// # Shapes
    /// - `x1_hat`, `x_t`: `[..., d]` (equal shapes)
    /// - `t`: scalar, or a tensor broadcastable to `x_t` (e.g. `[b, s, 1]` for `[b, s, d]`)
    /// - output: the shape of `x_t`
    ///
    /// # Panics
    /// If the shapes do not agree (burn's broadcasting rules).
    ///
    /// # Example
    /// ```
    /// use burn::tensor::{Device, Tensor};
    /// use l2d_core::velocity::VelocitySchedule;
    ///
    /// let device = Device::flex();
    /// let x1_hat = Tensor::<1>::from_floats([3.0, -1.0], &device);
    /// let x_t = Tensor::<1>::from_floats([1.0, 1.0], &device);
    /// let v = VelocitySchedule::Constant.velocity(x1_hat, x_t, 0.5);
    /// assert_eq!(v.into_data().to_vec::<f32>().unwrap(), vec![4.0, -4.0]);
    /// ```
    pub fn velocity<const D: usize>(
        &self,
        x1_hat: Tensor<D>,
        x_t: Tensor<D>,
        t: impl Into<Time<D>>,
    ) -> Tensor<D> {
        let difference = x1_hat.sub(x_t);
        match t.into() {
            Time::Scalar(t) => difference.div_scalar(self.divisor(t)),
            Time::Tensor(t) => {
                let one_minus_t = t.neg().add_scalar(1.0);
                let divisor = match self {
                    VelocitySchedule::Constant => one_minus_t,
                    VelocitySchedule::Edm => one_minus_t.square(),
                };
                difference.div(divisor)
            }
        }
    }
}

impl FromStr for VelocitySchedule {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "constant" => Ok(VelocitySchedule::Constant),
            "edm" => Ok(VelocitySchedule::Edm),
            _ => Err(Error::UnknownName {
                field: "velocity_schedule",
                name: s.to_string(),
                expected: "constant, edm",
            }),
        }
    }
}

impl fmt::Display for VelocitySchedule {
    /// The reference's name, which [`str::parse`] accepts back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VelocitySchedule::Constant => "constant",
            VelocitySchedule::Edm => "edm",
        })
    }
}

impl TryFrom<String> for VelocitySchedule {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<VelocitySchedule> for String {
    fn from(s: VelocitySchedule) -> String {
        s.to_string()
    }
}
