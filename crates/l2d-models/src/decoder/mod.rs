//! The frozen decoder: one implementation of Llama, Qwen2 and Mistral driven by
//! [`ModelConfig`] facts (biases, tied head, RoPE scaling, sliding windows).
//!
//! It follows transformers 4.46's `modeling_llama.py` / `modeling_qwen2.py` /
//! `modeling_mistral.py` (eager attention) and uses Hugging Face's module names, so a
//! parameter's path is its checkpoint name (`model.layers.3.self_attn.q_proj.weight`).
//!
//! # Pieces the diffusion path reuses
//! - [`CausalLm::frozen_forward`]: full-sequence frozen pass returning the final pre-norm
//!   hidden state, every layer's keys/values (after RoPE, before the grouped-query repeat) and
//!   the [`StepContext`] (RoPE tables and per-layer masks) it used.
//! - [`DecoderLayer`] fields (`input_layernorm`, `self_attn.{q,k,v,o}_proj`,
//!   `post_attention_layernorm`, `mlp.{gate,up,down}_proj`), [`RmsNorm::normalize`],
//!   [`split_heads`] / [`merge_heads`], [`RopeCosSin::apply`] and [`attention()`] (GQA).
//! - [`CausalLm::logits`]: final norm + `lm_head` applied to a hidden state.
//! - [`KvCache`] with per-layer [`LayerKv`].

pub mod attention;
pub mod cache;
pub mod layer;
pub mod linear;
pub mod mlp;
pub mod norm;
pub mod projection;
pub mod rope;

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::{Bool, DType, Device, Distribution, Int, Tensor};

pub use attention::{Attention, attention, causal_mask, merge_heads, split_heads};
pub use cache::{KvCache, LayerKv};
pub use layer::DecoderLayer;
pub use linear::{FUSED_MAX_ROWS, FrozenLinear};
pub use mlp::Mlp;
pub use norm::RmsNorm;
pub use projection::{DecoderDelta, LayerDelta, Projection, UnknownProjection};
pub use rope::{RopeCosSin, RotaryEmbedding, rotate_half};

use crate::config::ModelConfig;
use crate::loading::WeightFormat;
use l2d_quant::{BlockFormat, QuantMatrix};

/// The decoder stack (`model` in Hugging Face checkpoints).
#[derive(Module, Debug)]
pub struct DecoderModel {
    /// Token embeddings, `[vocab, hidden]`.
    pub embed_tokens: Embedding,
    /// The decoder layers.
    pub layers: Vec<DecoderLayer>,
    /// The final norm.
    pub norm: RmsNorm,
}

/// A decoder-only causal language model (`LlamaForCausalLM`, `Qwen2ForCausalLM`,
/// `MistralForCausalLM`).
///
/// Build it with [`CausalLm::load`] (any [`WeightSource`](crate::weights::WeightSource)),
/// [`CausalLm::from_pretrained`] (a Hugging Face folder or cache entry) or
/// [`CausalLm::random`].
///
/// ```
/// use burn::tensor::{DType, Device, Int, Tensor};
/// use l2d_models::{config::ModelConfig, decoder::{CausalLm, KvCache}};
///
/// let config = ModelConfig::from_json_str(r#"{"model_type": "llama", "hidden_size": 32,
///     "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
///     "num_key_value_heads": 2, "vocab_size": 50}"#)?;
/// let device = Device::flex();
/// let model = CausalLm::random(&config, &device, DType::F32, 0);
/// let ids = Tensor::<2, Int>::from_ints([[1, 5, 7, 9]], &device);
/// let full = model.forward(ids.clone(), None); // [1, 4, 50]
///
/// let mut cache = KvCache::new();
/// let _ = model.forward(ids.clone().narrow(1, 0, 3), Some(&mut cache));
/// let last = model.forward(ids.narrow(1, 3, 1), Some(&mut cache)); // [1, 1, 50]
/// let diff = (full.narrow(1, 3, 1) - last).abs().max().into_scalar::<f32>();
/// assert!(diff < 1e-4);
/// # Ok::<(), l2d_models::config::ConfigError>(())
/// ```
#[derive(Module, Debug)]
pub struct CausalLm {
    /// The decoder stack.
    pub model: DecoderModel,
    /// The output projection `hidden -> vocab`; `None` when tied to `model.embed_tokens`.
    pub lm_head: Option<FrozenLinear>,
    /// Blocks of the embedding matrix the tied head multiplies, when quantized.
    #[module(skip)]
    tied_head_blocks: Option<std::sync::Arc<l2d_quant::QuantMatrix>>,
    #[module(skip)]
    config: ModelConfig,
    #[module(skip)]
    rope: RotaryEmbedding,
}

/// Optional inputs of a forward pass, in Hugging Face's conventions.
#[derive(Debug, Clone, Default)]
pub struct ForwardOptions {
    /// `[batch, past + seq]`, 1 for a token and 0 for padding (keys at 0 are never attended).
    /// With a cache it must cover the cached positions too, as in transformers.
    pub attention_mask: Option<Tensor<2, Int>>,
    /// `[batch, seq]` RoPE positions; default `past .. past + seq` (transformers'
    /// `cache_position`). For left-padded batches use
    /// [`positions_from_attention_mask`].
    pub position_ids: Option<Tensor<2, Int>>,
}

/// What a forward over `seq` new positions used: RoPE tables and each layer's mask.
/// The diffusion path attends with these to the frozen keys/values.
#[derive(Debug, Clone)]
pub struct StepContext {
    /// RoPE tables of the new positions, `[batch or 1, 1, seq, head_dim]`.
    pub rope: RopeCosSin,
    /// Positions cached before this step.
    pub past_len: usize,
    /// New positions in this step.
    pub seq_len: usize,
    masks: Vec<Option<Tensor<4, Bool>>>,
}

impl StepContext {
    /// Layer `i`'s attention mask (`true` = masked), `[batch or 1, 1, seq, past + seq]`;
    /// `None` when nothing is masked.
    pub fn mask(&self, layer: usize) -> Option<Tensor<4, Bool>> {
        self.masks.get(layer).cloned().flatten()
    }
}

/// The result of [`CausalLm::frozen_forward`].
#[derive(Debug, Clone)]
pub struct FrozenOutput {
    /// The last layer's output before the final norm, `[batch, seq, hidden]`.
    pub hidden: Tensor<3>,
    /// Every layer's keys (after RoPE) and values, `[batch, kv_heads, seq, head_dim]`.
    pub cache: KvCache,
    /// RoPE tables and masks of the pass.
    pub context: StepContext,
}

/// transformers' `generate` positions for left-padded batches:
/// `cumsum(mask) - 1`, with 1 at padding positions.
///
/// # Shapes
/// - `attention_mask`: `[batch, len]` (1 = token, 0 = padding)
/// - output: `[batch, len]`
pub fn positions_from_attention_mask(attention_mask: Tensor<2, Int>) -> Tensor<2, Int> {
    let pad = attention_mask.clone().equal_elem(0);
    attention_mask.cumsum(1).sub_scalar(1).mask_fill(pad, 1)
}

pub(crate) fn linear(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Linear {
    Linear {
        weight: Param::from_tensor(weight),
        bias: bias.map(Param::from_tensor),
    }
}

impl CausalLm {
    /// Assembles a model from its parts (used by the loaders).
    pub fn from_parts(
        model: DecoderModel,
        lm_head: Option<FrozenLinear>,
        config: ModelConfig,
    ) -> Self {
        let rope = RotaryEmbedding::new(&config);
        Self {
            model,
            lm_head,
            tied_head_blocks: None,
            config,
            rope,
        }
    }

    /// The blocks a tied head multiplies, when the model is quantized.
    pub fn tied_head_blocks(&self) -> Option<&QuantMatrix> {
        self.tied_head_blocks.as_deref()
    }

    /// Bytes a decode step reads from the weights: every projection, the head (the
    /// embedding matrix when tied and float), the norms; of the embedding only one row.
    pub fn weight_bytes_per_token(&self) -> usize {
        let size = self.dtype().size();
        let projections: usize = self.frozen_linears().map(FrozenLinear::weight_bytes).sum();
        let [vocab, hidden] = self.model.embed_tokens.weight.dims();
        let tied_head = match (&self.lm_head, &self.tied_head_blocks) {
            (Some(_), _) => 0, // counted with the projections
            (None, Some(blocks)) => blocks.size_bytes(),
            (None, None) => vocab * hidden * size,
        };
        let norms = (2 * self.model.layers.len() + 1) * hidden * size;
        projections + tied_head + norms + hidden * size
    }

    /// Makes a tied head multiply `blocks` (`[vocab, hidden]`, the embedding matrix
    /// quantized) instead of the float embedding; the embedding itself is unchanged.
    ///
    /// # Panics
    /// If the head is not tied, or the blocks' shape is not the embedding's.
    pub fn set_tied_head_blocks(&mut self, blocks: l2d_quant::QuantMatrix) {
        assert!(self.lm_head.is_none(), "the head is not tied");
        let [v, h] = self.model.embed_tokens.weight.dims();
        assert_eq!(
            [blocks.rows(), blocks.cols()],
            [v, h],
            "tied head blocks' shape"
        );
        self.tied_head_blocks = Some(std::sync::Arc::new(blocks));
    }

    /// A model with random weights (normal, std 0.02; norms 1; biases 0.02-normal) of the
    /// given dtype, for benchmarks and tests. `seed` seeds `device`'s generator, which is held
    /// for the whole draw: models built at once in several threads each get the weights of
    /// their own seed (other draws from that generator outside this function are not held).
    pub fn random(config: &ModelConfig, device: &Device, dtype: DType, seed: u64) -> Self {
        Self::random_as(config, device, WeightFormat::Float(dtype), seed)
    }

    /// [`CausalLm::random`] in any [`WeightFormat`]. With a block format the projections
    /// (and the head, tied or not) are random blocks of about the same spread, drawn without
    /// ever holding f32 projections, so models too large for memory in f32 can be built
    /// (the embedding, norms and biases are f32).
    pub fn random_as(
        config: &ModelConfig,
        device: &Device,
        format: WeightFormat,
        seed: u64,
    ) -> Self {
        static DEVICE_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _held = DEVICE_RNG.lock().unwrap_or_else(|e| e.into_inner());
        device.seed(seed);
        let dtype = format.dtype();
        let n = |shape: [usize; 2]| {
            Tensor::<2>::random(shape, Distribution::Normal(0.0, 0.02), (device, dtype))
        };
        let b = |len: usize, on: bool| {
            on.then(|| Tensor::<1>::random([len], Distribution::Normal(0.0, 0.02), (device, dtype)))
        };
        let drawn = std::cell::Cell::new(0u64);
        let blocks = |rows: usize, cols: usize| {
            let f = format.block_format().expect("a block format");
            // Quants spread like the float draw: std of q (Q8_0: uniform i8, ~74; the
            // 4-bit formats: uniform on 16 levels, ~4.6) times the scale = 0.02.
            let spread = if f == BlockFormat::Q8_0 { 73.9 } else { 4.61 };
            drawn.set(drawn.get() + 1);
            QuantMatrix::random(f, rows, cols, seed ^ (drawn.get() << 32), 0.02 / spread)
        };
        // `[d_in, d_out]`, with a bias of `d_out` when `on` (drawn after the weights).
        let proj = |shape: [usize; 2], on: bool| match format {
            WeightFormat::Float(_) => FrozenLinear::new(n(shape), b(shape[1], on)),
            WeightFormat::Quantized(_) => {
                FrozenLinear::from_quantized(blocks(shape[1], shape[0]), b(shape[1], on))
            }
        };
        let ones =
            |len: usize| RmsNorm::new(Tensor::ones([len], (device, dtype)), config.rms_norm_eps);
        let (h, i, hd) = (
            config.hidden_size,
            config.intermediate_size,
            config.head_dim,
        );
        let (q_out, kv_out) = (
            config.num_attention_heads * hd,
            config.num_key_value_heads * hd,
        );
        let layers = (0..config.num_hidden_layers)
            .map(|l| DecoderLayer {
                self_attn: Attention {
                    q_proj: proj([h, q_out], config.qkv_bias()),
                    k_proj: proj([h, kv_out], config.qkv_bias()),
                    v_proj: proj([h, kv_out], config.qkv_bias()),
                    o_proj: proj([q_out, h], config.o_bias()),
                    num_heads: config.num_attention_heads,
                    num_kv_heads: config.num_key_value_heads,
                    head_dim: hd,
                },
                mlp: Mlp {
                    gate_proj: proj([h, i], config.mlp_bias),
                    up_proj: proj([h, i], config.mlp_bias),
                    down_proj: proj([i, h], config.mlp_bias),
                },
                input_layernorm: ones(h),
                post_attention_layernorm: ones(h),
                sliding_window: config.layer_sliding_windows[l],
            })
            .collect();
        let model = DecoderModel {
            embed_tokens: Embedding {
                weight: Param::from_tensor(n([config.vocab_size, h])),
            },
            layers,
            norm: ones(h),
        };
        let lm_head = (!config.tie_word_embeddings).then(|| proj([h, config.vocab_size], false));
        let mut lm = Self::from_parts(model, lm_head, config.clone());
        if format.block_format().is_some() && config.tie_word_embeddings {
            lm.tied_head_blocks = Some(std::sync::Arc::new(blocks(config.vocab_size, h)));
        }
        lm
    }

    /// The model with its projections (and head, tied or not) in `format`'s blocks: float
    /// projections are quantized, projections already in blocks are kept.
    ///
    /// # Errors
    /// A projection whose input width is not a multiple of 32, or non-finite weights.
    pub fn quantize(mut self, format: BlockFormat) -> Result<Self, l2d_quant::QuantError> {
        let q = |l: FrozenLinear| l.quantize(format);
        for layer in &mut self.model.layers {
            let a = &mut layer.self_attn;
            let m = &mut layer.mlp;
            for p in [
                &mut a.q_proj,
                &mut a.k_proj,
                &mut a.v_proj,
                &mut a.o_proj,
                &mut m.gate_proj,
                &mut m.up_proj,
                &mut m.down_proj,
            ] {
                let float = std::mem::replace(p, FrozenLinear::empty());
                *p = q(float)?;
            }
        }
        if let Some(head) = self.lm_head.take() {
            self.lm_head = Some(q(head)?);
        } else if self.tied_head_blocks.is_none() {
            let tied = FrozenLinear::new(self.model.embed_tokens.weight.val().transpose(), None);
            let blocks = q(tied)?.quantized.expect("quantized");
            self.tied_head_blocks = Some(blocks);
        }
        Ok(self)
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The model's RoPE.
    pub fn rotary_embedding(&self) -> &RotaryEmbedding {
        &self.rope
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.model.embed_tokens.weight.val().dtype()
    }

    /// The device of the weights.
    pub fn device(&self) -> Device {
        self.model.embed_tokens.weight.val().device()
    }

    /// Every float parameter's module path (its Hugging Face name, e.g.
    /// `model.layers.0.self_attn.q_proj.weight`) and dtype.
    pub fn parameter_dtypes(&self) -> Vec<(String, DType)> {
        struct Paths {
            stack: Vec<String>,
            out: Vec<(String, DType)>,
        }
        impl burn::module::ModuleVisitor for Paths {
            fn enter_module(&mut self, name: &str, _container: &str) {
                self.stack.push(name.to_string());
            }
            fn exit_module(&mut self, _name: &str, _container: &str) {
                self.stack.pop();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.out.push((self.stack.join("."), param.val().dtype()));
            }
        }
        let mut v = Paths {
            stack: Vec::new(),
            out: Vec::new(),
        };
        self.visit(&mut v);
        v.out
    }

    /// Bytes held by the weights (a tied head counted once).
    pub fn weight_bytes(&self) -> usize {
        // Float parameters (quantized projections have none but their biases) plus every
        // quantized matrix's blocks.
        let quantized: usize = self
            .frozen_linears()
            .filter_map(|l| l.quantized.as_ref().map(|q| q.size_bytes()))
            .chain(self.tied_head_blocks.as_ref().map(|q| q.size_bytes()))
            .sum();
        self.num_params() * self.dtype().size() + quantized
    }

    /// Every frozen projection: each layer's q/k/v/o and gate/up/down, then an untied head.
    pub fn frozen_linears(&self) -> impl Iterator<Item = &FrozenLinear> {
        self.model
            .layers
            .iter()
            .flat_map(|l| Projection::ALL.map(|p| l.projection(p)))
            .chain(self.lm_head.as_ref())
    }

    /// Next-token logits. With a cache, `input_ids` are the new tokens after the cached ones
    /// and the cache is extended; without, the whole sequence is processed.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]`
    /// - output: `[batch, seq, vocab]`, in the weights' dtype
    pub fn forward(&self, input_ids: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        self.forward_with(input_ids, cache, &ForwardOptions::default())
    }

    /// [`CausalLm::forward`] with a padding mask and/or explicit positions.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]`
    /// - `options.attention_mask`: `[batch, past + seq]`; `options.position_ids`: `[batch, seq]`
    /// - output: `[batch, seq, vocab]`
    pub fn forward_with(
        &self,
        input_ids: Tensor<2, Int>,
        cache: Option<&mut KvCache>,
        options: &ForwardOptions,
    ) -> Tensor<3> {
        let (hidden, _) = self.forward_hidden(input_ids, cache, options);
        self.logits(hidden)
    }

    /// The RoPE tables and per-layer masks of a forward over `seq_len` new positions after
    /// `past_len` cached ones.
    ///
    /// # Shapes
    /// - `options.attention_mask`: `[batch, past_len + seq_len]`;
    ///   `options.position_ids`: `[batch, seq_len]`
    pub fn step_context(
        &self,
        seq_len: usize,
        past_len: usize,
        options: &ForwardOptions,
        device: &Device,
    ) -> StepContext {
        let dtype = self.dtype();
        let rope = match &options.position_ids {
            Some(p) => self.rope.cos_sin(p.clone(), dtype),
            None => self.rope.cos_sin_range(past_len, seq_len, device, dtype),
        };
        let mut built: Vec<(Option<usize>, Option<Tensor<4, Bool>>)> = Vec::new();
        let masks = self
            .model
            .layers
            .iter()
            .map(|layer| {
                let w = layer.sliding_window;
                if let Some((_, m)) = built.iter().find(|(bw, _)| *bw == w) {
                    return m.clone();
                }
                let m = causal_mask(
                    seq_len,
                    past_len,
                    w,
                    options.attention_mask.as_ref(),
                    device,
                );
                built.push((w, m.clone()));
                m
            })
            .collect();
        StepContext {
            rope,
            past_len,
            seq_len,
            masks,
        }
    }

    /// Runs the decoder stack and returns the last layer's output **before** the final norm,
    /// with the step context it used. With a cache, appends the new positions' keys/values.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward_hidden(
        &self,
        input_ids: Tensor<2, Int>,
        cache: Option<&mut KvCache>,
        options: &ForwardOptions,
    ) -> (Tensor<3>, StepContext) {
        self.forward_hidden_adapted(input_ids, cache, options, None)
    }

    /// [`CausalLm::forward_hidden`] with `delta`'s updates added to the layers' projections
    /// (a LoRA adapter; `None` is the frozen model).
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward_hidden_adapted(
        &self,
        input_ids: Tensor<2, Int>,
        cache: Option<&mut KvCache>,
        options: &ForwardOptions,
        delta: Option<&dyn DecoderDelta>,
    ) -> (Tensor<3>, StepContext) {
        let device = input_ids.device();
        let [_, seq] = input_ids.dims();
        let past = cache.as_ref().map_or(0, |c| c.seq_len());
        let context = self.step_context(seq, past, options, &device);
        let mut h = self.model.embed_tokens.forward(input_ids);
        match cache {
            Some(cache) => {
                for (i, layer) in self.model.layers.iter().enumerate() {
                    let d = delta.and_then(|d| d.layer(i));
                    let (out, kv) =
                        layer.forward(h, &context.rope, context.mask(i), cache.layer(i), d);
                    cache.set(i, kv);
                    h = out;
                }
            }
            None => {
                for (i, layer) in self.model.layers.iter().enumerate() {
                    let d = delta.and_then(|d| d.layer(i));
                    h = layer.forward(h, &context.rope, context.mask(i), None, d).0;
                }
            }
        }
        (h, context)
    }

    /// The full-sequence frozen pass the diffusion path builds on: final pre-norm hidden
    /// state, every layer's keys/values and the step context (positions `0..seq`).
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]`
    /// - output: `hidden` `[batch, seq, hidden]`; per layer `k`, `v`
    ///   `[batch, kv_heads, seq, head_dim]`
    pub fn frozen_forward(
        &self,
        input_ids: Tensor<2, Int>,
        options: &ForwardOptions,
    ) -> FrozenOutput {
        let mut cache = KvCache::new();
        let (hidden, context) = self.forward_hidden(input_ids, Some(&mut cache), options);
        FrozenOutput {
            hidden,
            cache,
            context,
        }
    }

    /// Final norm then `lm_head` (the embedding matrix when tied).
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]` (pre-norm)
    /// - output: `[batch, seq, vocab]`
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.lm_head_forward(self.model.norm.forward(hidden))
    }

    /// `lm_head` alone, on an already normalised hidden state.
    ///
    /// # Shapes
    /// - `normed`: `[batch, seq, hidden]`
    /// - output: `[batch, seq, vocab]`
    pub fn lm_head_forward(&self, normed: Tensor<3>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => head.forward(normed),
            None if self.tied_head_blocks.is_some() => {
                let blocks = self.tied_head_blocks.as_ref().expect("checked");
                linear::quantized_product(blocks, normed)
            }
            None => {
                let [b, s, h] = normed.dims();
                let w = self.model.embed_tokens.weight.val(); // [vocab, hidden]
                let v = w.dims()[0];
                normed
                    .reshape([b * s, h])
                    .matmul(w.transpose())
                    .reshape([b, s, v])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradients_flow_through_the_decoder_on_an_autodiff_device() {
        let config = ModelConfig::from_json_str(
            r#"{"model_type": "mistral", "hidden_size": 16, "intermediate_size": 24,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "vocab_size": 11, "sliding_window": 2}"#,
        )
        .unwrap();
        let device = Device::flex().autodiff();
        let model = CausalLm::random(&config, &device, DType::F32, 1);
        let ids = Tensor::<2, Int>::from_ints([[1, 2, 3, 4], [5, 6, 7, 8]], &device);
        let am = Tensor::<2, Int>::from_ints([[0, 1, 1, 1], [1, 1, 1, 1]], &device);
        let opts = ForwardOptions {
            attention_mask: Some(am),
            position_ids: None,
        };
        let logits = model.forward_with(ids, None, &opts);
        let grads = logits.powf_scalar(2.0).sum().backward();
        for w in [
            model.model.layers[0]
                .self_attn
                .q_proj
                .weight
                .as_ref()
                .unwrap(),
            model.model.layers[1].mlp.down_proj.weight.as_ref().unwrap(),
            &model.model.embed_tokens.weight,
        ] {
            let g = w.val().grad(&grads).expect("a gradient");
            let n = g.abs().sum().into_scalar::<f32>();
            assert!(n.is_finite() && n > 0.0, "gradient norm {n}");
        }
    }
}
