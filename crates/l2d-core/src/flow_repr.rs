//! Flow representations: the vectors `V_y` of the diffusion space, one per token.
//!
//! The reference maps each frozen input embedding to `d̄` dimensions (a learned linear layer in
//! the models crate), then L2-normalises the result along its last dimension, as PyTorch's
//! `F.normalize` does (`x / max(‖x‖, 1e-12)`), and multiplies it by a constant set by the
//! `flow_representation_rescaling` mode (see [`Rescaling`]). With the released `mult` mode every
//! `V_y` has norm `sqrt(d̄)`, i.e. about unit variance per component.

use std::{fmt, str::FromStr};

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The `eps` of PyTorch's `F.normalize`, which the reference uses: norms below it are clamped.
pub const NORMALIZE_EPS: f64 = 1e-12;

/// What the L2-normalised representation is multiplied by (the reference's
/// `flow_representation_rescaling`).
///
/// The reference's `null` (no mode given) behaves exactly as [`Rescaling::None`]; parse
/// `"div"`, `"mult"`, `"none"` (any case) with [`str::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Rescaling {
    /// `÷ sqrt(d)`: norm `1/sqrt(d)`, per-component variance `1/d²`.
    Div,
    /// `× sqrt(d)`: norm `sqrt(d)`, per-component variance 1 (the released configurations).
    Mult,
    /// No rescaling: unit norm, per-component variance `1/d`.
    #[default]
    None,
}

impl Rescaling {
    /// The factor applied after normalisation, for representation size `dim`:
    /// `1/sqrt(dim)`, `sqrt(dim)` or 1. This is also the norm of every representation.
    pub fn factor(&self, dim: usize) -> f64 {
        let d = dim as f64;
        match self {
            Rescaling::Div => 1.0 / d.sqrt(),
            Rescaling::Mult => d.sqrt(),
            Rescaling::None => 1.0,
        }
    }

    /// The per-component variance the reference assumes for the data distribution `x1`
    /// (`var_x1` in its `FlowToLMEmbedder`): `1/dim²`, 1, or `1/dim`, i.e. `factor(dim)² / dim`.
    pub fn x1_variance(&self, dim: usize) -> f64 {
        let d = dim as f64;
        match self {
            Rescaling::Div => 1.0 / (d * d),
            Rescaling::Mult => 1.0,
            Rescaling::None => 1.0 / d,
        }
    }
}

impl FromStr for Rescaling {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "div" => Ok(Rescaling::Div),
            "mult" => Ok(Rescaling::Mult),
            "none" => Ok(Rescaling::None),
            _ => Err(Error::UnknownName {
                field: "flow_representation_rescaling",
                name: s.to_string(),
                expected: "div, mult, none",
            }),
        }
    }
}

impl fmt::Display for Rescaling {
    /// The reference's name, which [`str::parse`] accepts back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rescaling::Div => "div",
            Rescaling::Mult => "mult",
            Rescaling::None => "none",
        })
    }
}

impl TryFrom<String> for Rescaling {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Rescaling> for String {
    fn from(r: Rescaling) -> String {
        r.to_string()
    }
}

/// L2-normalises `x` along its last dimension (`x / max(‖x‖, 1e-12)`, as `F.normalize`) and
/// multiplies it by `rescaling.factor(d)`.
///
/// # Shapes
/// - `x`: `[..., d]`; output: the same shape, every row of norm `rescaling.factor(d)`
///   (rows that are exactly zero stay zero)
///
/// # Example
/// ```
/// use burn::tensor::{Device, Tensor};
/// use l2d_core::flow_repr::{normalize_flow_representation, Rescaling};
///
/// let device = Device::flex();
/// let x = Tensor::<2>::from_floats([[3.0, 0.0, 0.0, 4.0]], &device);
/// let v = normalize_flow_representation(x, Rescaling::Mult); // norm sqrt(4) = 2
/// assert_eq!(v.into_data().to_vec::<f32>().unwrap(), vec![1.2, 0.0, 0.0, 1.6]);
/// ```
pub fn normalize_flow_representation<const D: usize>(
    x: Tensor<D>,
    rescaling: Rescaling,
) -> Tensor<D> {
    let dim = x.dims()[D - 1];
    let norm = x
        .clone()
        .square()
        .sum_dim(D - 1)
        .sqrt()
        .clamp_min(NORMALIZE_EPS);
    x.div(norm).mul_scalar(rescaling.factor(dim))
}
