//! The diffusion path's own q/o/gate/up/down projections: a LoRA delta on the frozen weight
//! (`y = W x + b + (x A B)·alpha/rank`, the frozen `W` shared, never copied), a full trainable
//! copy, or the frozen projection itself (`separate_flow_params = false`).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::Tensor;

use super::mlp::linear_in_dtype;
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

impl FlowProjection {
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
