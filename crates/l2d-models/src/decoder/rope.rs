//! Rotary position embeddings in Hugging Face's `rotate_half` layout.
//!
//! Hugging Face checkpoints of Llama, Qwen2 and Mistral rotate the pair
//! `(x[i], x[i + head_dim/2])`, not adjacent pairs (burn's `RotaryEncoding`), so this module
//! implements transformers' `apply_rotary_pos_emb`: `x * cos + rotate_half(x) * sin` with
//! `rotate_half(x) = cat(-x[d/2..], x[..d/2])` and `cos = cos(cat(f, f))`,
//! `f = position * inv_freq` evaluated in f32.

use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::config::ModelConfig;

/// The inverse frequencies of a model's RoPE (after llama3 / linear rescaling).
#[derive(Debug, Clone, PartialEq)]
pub struct RotaryEmbedding {
    inv_freq: Vec<f32>,
}

impl RotaryEmbedding {
    /// The RoPE of a configuration ([`ModelConfig::rope_inv_freq`]).
    pub fn new(config: &ModelConfig) -> Self {
        Self {
            inv_freq: config.rope_inv_freq(),
        }
    }

    /// From explicit inverse frequencies (`head_dim / 2` values).
    pub fn from_inv_freq(inv_freq: Vec<f32>) -> Self {
        Self { inv_freq }
    }

    /// The inverse frequencies, `[head_dim / 2]`.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// The rotated width (`head_dim`).
    pub fn head_dim(&self) -> usize {
        2 * self.inv_freq.len()
    }

    /// Cosines and sines for explicit positions, cast to `dtype`.
    ///
    /// # Shapes
    /// - `positions`: `[batch, seq]`
    /// - output: cos and sin of `[batch, 1, seq, head_dim]`
    pub fn cos_sin(&self, positions: Tensor<2, Int>, dtype: DType) -> RopeCosSin {
        let device = positions.device();
        let [b, s] = positions.dims();
        let half = self.inv_freq.len();
        let pos = positions.float().cast(DType::F32).reshape([b, s, 1]);
        let inv = Tensor::<1>::from_data(
            TensorData::new(self.inv_freq.clone(), [half]),
            (&device, DType::F32),
        )
        .reshape([1, 1, half]);
        let freqs = pos * inv;
        let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).unsqueeze_dim::<4>(1);
        RopeCosSin {
            cos: emb.clone().cos().cast(dtype),
            sin: emb.sin().cast(dtype),
        }
    }

    /// Cosines and sines for the positions `start .. start + len`, shared by the batch.
    ///
    /// # Shapes
    /// - output: cos and sin of `[1, 1, len, head_dim]`
    pub fn cos_sin_range(
        &self,
        start: usize,
        len: usize,
        device: &Device,
        dtype: DType,
    ) -> RopeCosSin {
        let positions =
            Tensor::<1, Int>::arange(start as i64..(start + len) as i64, device).reshape([1, len]);
        self.cos_sin(positions, dtype)
    }
}

/// Cosine and sine tables for a set of positions; [`RopeCosSin::apply`] rotates queries or
/// keys with them.
#[derive(Debug, Clone)]
pub struct RopeCosSin {
    /// `cos(cat(f, f))`, `[batch or 1, 1, seq, head_dim]`.
    pub cos: Tensor<4>,
    /// `sin(cat(f, f))`, `[batch or 1, 1, seq, head_dim]`.
    pub sin: Tensor<4>,
}

impl RopeCosSin {
    /// `x * cos + rotate_half(x) * sin` (transformers' `apply_rotary_pos_emb`).
    ///
    /// # Shapes
    /// - `x`: `[batch, heads, seq, head_dim]`
    /// - output: same as `x`
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, s, d] = x.dims();
        let cos = self.cos.clone().expand([b, h, s, d]);
        let sin = self.sin.clone().expand([b, h, s, d]);
        x.clone() * cos + rotate_half(x) * sin
    }
}

/// `cat(-x[..., d/2..], x[..., ..d/2])`.
///
/// # Shapes
/// - `x`: `[batch, heads, seq, head_dim]`
/// - output: same as `x`
pub fn rotate_half(x: Tensor<4>) -> Tensor<4> {
    let d = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, d / 2);
    let x2 = x.narrow(3, d / 2, d - d / 2);
    Tensor::cat(vec![x2.neg(), x1], 3)
}
