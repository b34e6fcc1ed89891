//! The SwiGLU feed-forward block (`LlamaMLP`).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use super::linear::FrozenLinear;

/// `down_proj(silu(gate_proj(x)) * up_proj(x))`; biases only with Llama `mlp_bias`.
#[derive(Module, Debug)]
pub struct Mlp {
    /// `hidden -> intermediate`.
    pub gate_proj: FrozenLinear,
    /// `hidden -> intermediate`.
    pub up_proj: FrozenLinear,
    /// `intermediate -> hidden`.
    pub down_proj: FrozenLinear,
}

impl Mlp {
    /// The feed-forward block.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}
