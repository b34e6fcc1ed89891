//! The diffusion path's own q/o/gate/up/down projections: a LoRA delta on the frozen weight
//! (`y = W x + b + (x A B)·alpha/rank`, the frozen `W` shared, never copied), a full trainable
//! copy, or the frozen projection itself (`separate_flow_params = false`).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::Tensor;

use super::error::DiffusionError;
use super::keys::Keyed;
use super::mlp::linear_in_dtype;
use super::source::MatrixInit;
use crate::decoder::FrozenLinear;
pub use crate::lora::LoraDelta;

/// One projection of the diffusion path.
#[derive(Module, Debug)]
pub struct FlowProjection {
    /// The LoRA delta added to the frozen projection.
    pub lora: Option<LoraDelta>,
    /// A full trainable copy replacing the frozen projection.
    pub full: Option<Linear>,
}

/// Which kind of projection the path's configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ProjectionKind {
    /// The frozen projection itself.
    Shared,
    /// A LoRA delta of this rank and scale.
    Lora { rank: usize, scale: f64 },
    /// A full trainable copy.
    Full,
}

impl FlowProjection {
    /// The projection `d_in → d_out` at `vb` (LoRA factors at `vb.A` `[d_in, rank]`,
    /// `N(0, 1/rank²)`, and `vb.B` `[rank, d_out]`, zero; a full copy at `vb.weight`,
    /// `vb.bias`, initialised from `frozen`).
    pub(crate) fn build(
        vb: &mut Keyed<'_, '_>,
        kind: ProjectionKind,
        d_in: usize,
        d_out: usize,
        frozen: Option<&FrozenLinear>,
    ) -> Result<Self, DiffusionError> {
        Ok(match kind {
            ProjectionKind::Shared => Self::shared(),
            ProjectionKind::Lora { rank, scale } => {
                let a = vb
                    .pp("A")
                    .matrix([d_in, rank], MatrixInit::Normal(1.0 / rank as f64))?;
                let b = vb.pp("B").matrix([rank, d_out], MatrixInit::Zero)?;
                Self {
                    lora: Some(LoraDelta { a, b, scale }),
                    full: None,
                }
            }
            ProjectionKind::Full => Self::full(vb.full_copy(frozen)?),
        })
    }

    /// A LoRA projection.
    pub fn lora(a: Tensor<2>, b: Tensor<2>, scale: f64) -> Self {
        Self {
            lora: Some(LoraDelta {
                a: Param::from_tensor(a),
                b: Param::from_tensor(b),
                scale,
            }),
            full: None,
        }
    }

    /// A full copy.
    pub fn full(linear: Linear) -> Self {
        Self {
            lora: None,
            full: Some(linear),
        }
    }

    /// The frozen projection itself.
    pub fn shared() -> Self {
        Self {
            lora: None,
            full: None,
        }
    }

    /// The projection of `x` given the frozen layer `base`, in `x`'s dtype.
    ///
    /// # Shapes
    /// - `x`: `[batch, n, d_in]`; output: `[batch, n, d_out]`
    pub fn forward(&self, base: &FrozenLinear, x: Tensor<3>) -> Tensor<3> {
        if let Some(full) = &self.full {
            return linear_in_dtype(full, x);
        }
        let y = base.forward(x.clone());
        match &self.lora {
            Some(delta) => y + delta.forward(x),
            None => y,
        }
    }
}
