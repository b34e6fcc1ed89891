//! The SwiGLU feed-forward block (`LlamaMLP`).

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

/// `down_proj(silu(gate_proj(x)) * up_proj(x))`; biases only with Llama `mlp_bias`.
#[derive(Module, Debug)]
pub struct Mlp {
    /// `hidden -> intermediate`.
    pub gate_proj: Linear,
    /// `hidden -> intermediate`.
    pub up_proj: Linear,
    /// `intermediate -> hidden`.
    pub down_proj: Linear,
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
