//! The SwiGLU feed-forward block (`LlamaMLP`).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use super::linear::FrozenLinear;
use super::projection::{LayerDelta, Projection, project};

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
    /// The feed-forward block, with `delta`'s updates of its projections.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>, delta: Option<&dyn LayerDelta>) -> Tensor<3> {
        let gate = silu(project(&self.gate_proj, Projection::Gate, x.clone(), delta));
        let up = project(&self.up_proj, Projection::Up, x, delta);
        project(&self.down_proj, Projection::Down, gate * up, delta)
    }
}
