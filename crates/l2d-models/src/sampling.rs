//! Choosing the next token from the final logits: greedy, or sampled after Hugging Face's
//! logits warpers.
//!
//! transformers applies its warpers in this order (`GenerationMixin._get_logits_processor`):
//! temperature (`logits / T`), top-k (drop every logit below the k-th largest; ties with it
//! stay), top-p (sort ascending, drop tokens whose cumulative probability is ≤ `1 − p`, the
//! most likely token always stays), min-p (drop tokens whose probability is below
//! `min_p × max probability`). [`Sampler`] does the same on the device, then draws one token
//! per row by inverse-CDF sampling with uniforms from a seeded host ChaCha8 RNG, so the same
//! seed gives the same tokens on every backend; the chosen ids are fetched with one host
//! sync. Temperature 0 is greedy (argmax).
//!
//! ```
//! use burn::tensor::{Device, Tensor, TensorData};
//! use l2d_models::sampling::{Sampler, SamplingConfig};
//!
//! let device = Device::flex();
//! let logits = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 3.0, 1.0, -2.0], [1, 4]), &device);
//! let mut greedy = Sampler::new(SamplingConfig::greedy())?;
//! assert_eq!(greedy.sample(logits.clone())?, vec![1]);
//! let mut top1 = Sampler::new(SamplingConfig { top_k: Some(1), seed: 7, ..Default::default() })?;
//! assert_eq!(top1.sample(logits)?, vec![1]);
//! # Ok::<(), l2d_models::sampling::SamplingError>(())
//! ```

use burn::tensor::activation::softmax;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Errors of the sampler.
#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    /// A parameter is out of its range.
    #[error("sampling parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: String,
        /// The valid range.
        reason: &'static str,
    },
    /// The logits have no rows or an empty vocabulary.
    #[error("logits of shape {shape:?}: need at least one row and one token")]
    EmptyLogits {
        /// The shape found.
        shape: [usize; 2],
    },
    /// The logits hold NaN or +infinity: the model's weights (or an adapter's) are corrupt or
    /// overflow in this dtype. Sampling from them would give arbitrary tokens.
    #[error(
        "the model produced non-finite logits (NaN or +infinity): its weights or the \
         adapter's are corrupt, or overflow in this dtype"
    )]
    NonFiniteLogits,
}

/// Sampling parameters (Hugging Face names and meanings).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// Logits are divided by it; 0 means greedy decoding.
    pub temperature: f32,
    /// Keep the `k` most likely tokens (and ties with the k-th).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p`.
    pub top_p: Option<f32>,
    /// Drop tokens less likely than `min_p` × the most likely one.
    pub min_p: Option<f32>,
    /// Seed of the host RNG.
    pub seed: u64,
}

impl Default for SamplingConfig {
    /// Plain sampling at temperature 1, no filters, seed 0.
    fn default() -> Self {
        SamplingConfig {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            min_p: None,
            seed: 0,
        }
    }
}

impl SamplingConfig {
    /// Greedy decoding (temperature 0).
    pub fn greedy() -> Self {
        SamplingConfig {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Checks the ranges: temperature finite and ≥ 0, `top_k` ≥ 1, `top_p` in (0, 1],
    /// `min_p` in [0, 1].
    ///
    /// # Errors
    /// [`SamplingError::InvalidParameter`].
    pub fn validate(&self) -> Result<(), SamplingError> {
        let bad = |name, value: String, reason| {
            Err(SamplingError::InvalidParameter {
                name,
                value,
                reason,
            })
        };
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(
                "temperature",
                self.temperature.to_string(),
                "must be finite and ≥ 0",
            );
        }
        if self.top_k == Some(0) {
            return bad("top_k", "0".into(), "must be ≥ 1");
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad("top_p", p.to_string(), "must be in (0, 1]");
        }
        if let Some(p) = self.min_p
            && !(0.0..=1.0).contains(&p)
        {
            return bad("min_p", p.to_string(), "must be in [0, 1]");
        }
        Ok(())
    }
}

/// A seeded sampler; keep one per generated batch so the RNG stream continues.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplingConfig,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler with its RNG seeded from `config.seed`.
    ///
    /// # Errors
    /// [`SamplingError::InvalidParameter`].
    pub fn new(config: SamplingConfig) -> Result<Self, SamplingError> {
        config.validate()?;
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Ok(Sampler { config, rng })
    }

    /// The parameters.
    pub fn config(&self) -> &SamplingConfig {
        &self.config
    }

    /// One token id per row.
    ///
    /// # Shapes
    /// `logits`: `[batch, vocab]` (any float dtype; computed in f32) → `batch` ids.
    ///
    /// # Errors
    /// [`SamplingError::EmptyLogits`].
    pub fn sample(&mut self, logits: Tensor<2>) -> Result<Vec<u32>, SamplingError> {
        let [batch, vocab] = logits.dims();
        if batch == 0 || vocab == 0 {
            return Err(SamplingError::EmptyLogits {
                shape: [batch, vocab],
            });
        }
        let logits = if logits.dtype() == DType::F32 {
            logits
        } else {
            logits.cast(FloatDType::F32)
        };
        let bad = logits
            .clone()
            .is_nan()
            .bool_or(logits.clone().equal_elem(f32::INFINITY))
            .any()
            .into_scalar::<bool>();
        if bad {
            return Err(SamplingError::NonFiniteLogits);
        }
        let ids = if self.config.temperature == 0.0 {
            logits.argmax(1)
        } else {
            self.sample_tokens(logits, batch, vocab)
        };
        Ok(ids.into_data().iter::<i64>().map(|id| id as u32).collect())
    }

    fn sample_tokens(
        &mut self,
        logits: Tensor<2>,
        batch: usize,
        vocab: usize,
    ) -> Tensor<2, burn::tensor::Int> {
        let device = logits.device();
        let c = &self.config;
        let scaled = logits.div_scalar(c.temperature);
        let filtered = c.top_k.is_some_and(|k| k < vocab)
            || c.top_p.is_some_and(|p| p < 1.0)
            || c.min_p.is_some_and(|p| p > 0.0);

        let (probs, order) = if filtered {
            let (mut sorted, order) = scaled.sort_descending_with_indices(1);
            if let Some(k) = c.top_k.filter(|&k| k < vocab) {
                let kth = sorted
                    .clone()
                    .slice([0..batch, k - 1..k])
                    .expand([batch, vocab]);
                let below = sorted.clone().lower(kth);
                sorted = sorted.mask_fill(below, f32::NEG_INFINITY);
            }
            let mut probs = softmax(sorted, 1);
            if let Some(p) = c.top_p.filter(|&p| p < 1.0) {
                // In descending order a token survives if the mass before it is below p.
                let before = probs.clone().cumsum(1) - probs.clone();
                probs = probs.mask_fill(before.greater_equal_elem(p), 0.0);
            }
            if let Some(m) = c.min_p.filter(|&m| m > 0.0) {
                let threshold = probs
                    .clone()
                    .slice([0..batch, 0..1])
                    .mul_scalar(m)
                    .expand([batch, vocab]);
                probs = probs.clone().mask_fill(probs.lower(threshold), 0.0);
            }
            (probs, Some(order))
        } else {
            (softmax(scaled, 1), None)
        };

        let cdf = probs.cumsum(1);
        let total = cdf.clone().slice([0..batch, vocab - 1..vocab]);
        let uniforms: Vec<f32> = (0..batch).map(|_| self.rng.random::<f32>()).collect();
        let u = Tensor::<2>::from_data(TensorData::new(uniforms, [batch, 1]), &device);
        let threshold = (u * total).expand([batch, vocab]);
        // Inverse CDF: the first position whose cumulative mass exceeds u · total.
        let position = cdf
            .lower_equal(threshold)
            .int()
            .sum_dim(1)
            .clamp_max(vocab as i64 - 1);
        match order {
            Some(order) => order.gather(1, position),
            None => position,
        }
    }
}
