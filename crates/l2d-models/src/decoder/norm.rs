//! RMSNorm as Hugging Face computes it.

use burn::module::{Module, Param};
use burn::tensor::{DType, Tensor};

/// Root-mean-square layer normalisation (`LlamaRMSNorm`):
/// `weight * (x_f32 * rsqrt(mean(x_f32²) + eps)).to(dtype)`.
///
/// The statistics are always computed in f32 and the result is cast back to the input's
/// dtype before the weight is applied, exactly as transformers does.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// The per-channel gain, `[hidden]`.
    pub weight: Param<Tensor<1>>,
    /// The epsilon added to the mean square.
    pub eps: f64,
}

impl RmsNorm {
    /// A norm with the given gain.
    pub fn new(weight: Tensor<1>, eps: f64) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            eps,
        }
    }

    /// The normalised input without the gain, cast back to the input dtype:
    /// `(x_f32 * rsqrt(mean(x_f32²) + eps)).to(dtype)`. The diffusion path multiplies this by
    /// its own (modulated) gain.
    ///
    /// # Shapes
    /// - `x`: `[..., hidden]`
    /// - output: same as `x`
    pub fn normalize<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        let x = x.cast(DType::F32);
        let mean_sq = x.clone().square().mean_dim(D - 1);
        let inv_rms = mean_sq.add_scalar(self.eps).sqrt().recip();
        (x * inv_rms).cast(dtype)
    }

    /// `weight * normalize(x)`.
    ///
    /// # Shapes
    /// - `x`: `[..., hidden]`
    /// - output: same as `x`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.normalize(x) * self.weight.val().unsqueeze::<D>()
    }
}
