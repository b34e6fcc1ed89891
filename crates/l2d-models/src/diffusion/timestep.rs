//! The timestep embedder: sinusoidal features of the raw `t ∈ [0, 1]`
//! ([`l2d_core::timestep::timestep_embedding`]: cosines first, maximum period
//! [`DEFAULT_MAX_PERIOD`](l2d_core::timestep::DEFAULT_MAX_PERIOD), not multiplied by 1000 as in DiT) followed by an MLP (the
//! reference's `FrequencyEmbedder`, `model.timestep_embedder.mlp.*`).

use burn::module::Module;
use burn::tensor::{DType, Tensor};
use l2d_core::timestep::timestep_embedding;

use super::mlp::SimpleMlp;

/// `MLP([cos(t f), sin(t f)])` with `f_i = exp(-ln(P) i / (F/2))`, `P` =
/// [`DEFAULT_MAX_PERIOD`](l2d_core::timestep::DEFAULT_MAX_PERIOD).
#[derive(Module, Debug)]
pub struct TimestepEmbedder {
    /// `F → C → ... → C` with SiLU between layers.
    pub mlp: SimpleMlp,
    /// The sinusoid size `F`.
    pub frequency_size: usize,
}

impl TimestepEmbedder {
    /// The conditioning vectors of the times `t`, in the MLP's dtype. The sinusoid is
    /// evaluated in f32 as the reference does.
    ///
    /// # Shapes
    /// - `t`: `[n]`; output: `[n, C]`
    pub fn forward(&self, t: Tensor<1>) -> Tensor<2> {
        let [n] = t.dims();
        let device = t.device();
        // The embedding only fails for odd or zero sizes, which validation rejects before a
        // path is built; zeros keep the shapes if that ever changes.
        let features = timestep_embedding(t.cast(DType::F32), self.frequency_size)
            .unwrap_or_else(|_| Tensor::zeros([n, self.frequency_size], (&device, DType::F32)));
        let dtype = self.mlp.layers[0].weight.val().dtype();
        self.mlp.forward(features.cast(dtype))
    }
}
