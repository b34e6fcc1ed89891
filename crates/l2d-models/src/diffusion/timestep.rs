//! The timestep embedder: sinusoidal features of the raw `t ∈ [0, 1]` (cosines first, maximum
//! period 10000, not multiplied by 1000 as in DiT) followed by an MLP (the reference's
//! `FrequencyEmbedder`, `model.timestep_embedder.mlp.*`).

use burn::module::Module;
use burn::tensor::{DType, Tensor, TensorData};
use l2d_core::timestep::timestep_frequencies;

use super::mlp::SimpleMlp;

/// `MLP([cos(t f), sin(t f)])` with `f_i = exp(-ln(10000) i / (F/2))`.
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
        let half = self.frequency_size / 2;
        // timestep_frequencies only fails for odd or zero sizes, which validation rejects.
        let freqs: Vec<f32> = timestep_frequencies(self.frequency_size, 10_000.0)
            .unwrap_or_default()
            .into_iter()
            .map(|f| f as f32)
            .collect();
        let freqs =
            Tensor::<2>::from_data(TensorData::new(freqs, [1, half]), (&device, DType::F32));
        let args = t.cast(DType::F32).reshape([n, 1]) * freqs;
        let features = Tensor::cat(vec![args.clone().cos(), args.sin()], 1);
        let dtype = self.mlp.layers[0].weight.val().dtype();
        self.mlp.forward(features.cast(dtype))
    }
}
