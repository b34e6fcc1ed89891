//! The flow-to-LM encoder: maps a flow state `x_t` (width `d`) to the diffusion path's input
//! hidden state (width `hidden`), after dividing it by its expected standard deviation at `t`
//! (the reference's `FlowToLMEmbedder`, or a plain `SimpleMLP` when that normalisation is off).

use burn::module::Module;
use burn::tensor::{DType, Tensor};
use l2d_core::InputNormalization;

use super::conditioning::Timesteps;
use super::mlp::SimpleMlp;

/// `MLP(x_t / std(t) · c)`, `std(t)² = (1-t)² σ² + t² var(x1)`.
#[derive(Module, Debug)]
pub struct FlowToLmEncoder {
    /// The MLP (`None`: the identity, flow width = hidden size).
    pub mlp: Option<SimpleMlp>,
    #[module(skip)]
    normalization: Option<InputNormalization>,
    /// Whether the normalisation is computed in f32 whatever the input dtype.
    pub normalize_in_f32: bool,
}

impl FlowToLmEncoder {
    /// Assembles the encoder.
    pub fn new(
        mlp: Option<SimpleMlp>,
        normalization: Option<InputNormalization>,
        normalize_in_f32: bool,
    ) -> Self {
        Self {
            mlp,
            normalization,
            normalize_in_f32,
        }
    }

    /// The input normalisation, if on.
    pub fn normalization(&self) -> Option<&InputNormalization> {
        self.normalization.as_ref()
    }

    /// Encodes flow states; the output has the input's dtype.
    ///
    /// # Shapes
    /// - `x`: `[batch, n, d]`
    /// - `t`: a scalar or per-position times `[batch, n]`
    /// - output: `[batch, n, hidden]`
    pub fn forward(&self, x: Tensor<3>, t: &Timesteps) -> Tensor<3> {
        let dtype = x.dtype();
        let x = match &self.normalization {
            None => x,
            Some(norm) => {
                let x = if self.normalize_in_f32 {
                    x.cast(DType::F32)
                } else {
                    x
                };
                let y = match t {
                    Timesteps::Scalar(t) => norm.apply(x, *t),
                    Timesteps::Tensor(t) => {
                        let [b, n] = t.dims();
                        let t = t.clone().cast(x.dtype()).reshape([b, n, 1]);
                        norm.apply(x, t)
                    }
                };
                y.cast(dtype)
            }
        };
        match &self.mlp {
            Some(mlp) => mlp.forward(x),
            None => x,
        }
    }
}
