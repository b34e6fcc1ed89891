//! [`DiffusionPath`]: the L2D parameters and the forwards that run them against a borrowed
//! frozen [`CausalLm`].

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use l2d_core::{HostRng, InputNormalization};

use super::class_embedder::ClassEmbedder;
use super::conditioning::{ClassLabels, Timesteps};
use super::context::FlowContext;
use super::encoder::FlowToLmEncoder;
use super::error::DiffusionError;
use super::keys::{KeyBuilder, ParamKeys};
use super::layer::FlowLayer;
use super::mlp::SimpleMlp;
use super::modulation::{ConditioningHead, LayerModulation};
use super::projection::ProjectionKind;
use super::source::{InitSource, LinearInit, MatrixInit, ParamSource};
use super::timestep::TimestepEmbedder;
use super::token_embedder::FlowTokenEmbedder;
use crate::config::ModelConfig;
use crate::decoder::{CausalLm, ForwardOptions, FrozenOutput};
use crate::l2d_config::{FlowSpace, L2dConfig, ResolvedDims};

/// The path's conditioning at one time and set of class labels: each layer's modulation and
/// the final gate, in the base dtype (see [`DiffusionPath::time_conditioning`]).
#[derive(Debug, Clone)]
pub struct TimeConditioning {
    /// One entry per decoder layer.
    pub layers: Vec<LayerModulation>,
    /// The final gate `head(c_t) [- head(c_0)]`, `[B, N, hidden]`.
    pub gate: Tensor<3>,
}

/// Per-position timesteps must be `[batch, n]`.
fn check_timesteps(t: &Timesteps, b: usize, n: usize) -> Result<(), DiffusionError> {
    if let Timesteps::Tensor(tt) = t
        && tt.dims() != [b, n]
    {
        return Err(DiffusionError::Shape {
            tensor: "timesteps",
            expected: format!("[{b}, {n}]"),
            got: tt.dims().to_vec(),
        });
    }
    Ok(())
}

/// The sizes of the base model a diffusion path was built for; checked before every forward.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BaseSummary {
    /// `model_type` (`llama`, `qwen2`, `mistral`).
    pub model_type: String,
    /// Residual width.
    pub hidden_size: usize,
    /// MLP inner width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Whether the LM head is tied to the embedding.
    pub tie_word_embeddings: bool,
}

impl BaseSummary {
    /// The summary of a base configuration.
    pub fn of(config: &ModelConfig) -> Self {
        Self {
            model_type: config.architecture.model_type().to_string(),
            hidden_size: config.hidden_size,
            intermediate_size: config.intermediate_size,
            num_hidden_layers: config.num_hidden_layers,
            num_attention_heads: config.num_attention_heads,
            num_key_value_heads: config.num_key_value_heads,
            head_dim: config.head_dim,
            vocab_size: config.vocab_size,
            tie_word_embeddings: config.tie_word_embeddings,
        }
    }

    /// The first size that differs from `other`'s.
    ///
    /// # Errors
    /// [`DiffusionError::BaseMismatch`] naming the field.
    pub fn check(&self, other: &BaseSummary) -> Result<(), DiffusionError> {
        // Each field under its own name, so the message names exactly what differs.
        macro_rules! fields {
            ($($f:ident),*) => {
                [$((stringify!($f), self.$f.to_string(), other.$f.to_string())),*]
            };
        }
        let pairs = fields!(
            model_type,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size
        );
        for (field, path, base) in pairs {
            if path != base {
                return Err(DiffusionError::BaseMismatch { field, path, base });
            }
        }
        Ok(())
    }
}

/// The L2D diffusion path: every trainable parameter of L2D and nothing of the base model.
///
/// It runs against a borrowed frozen [`CausalLm`] whose weights are shared, never copied (the
/// LoRA deltas add to the frozen projections on the fly, the frozen path keeps its plain
/// weights). Being its own [`Module`], it is trivially separable for training: put it on an
/// autodiff device, freeze the base, and an optimizer over this module sees only diffusion
/// parameters.
///
/// With `preserve_behavior_at_flow_start` the final gate is `head(c_t) - head(c_0)`, in which
/// the output bias of `modulation_head` cancels: that one tensor
/// (`model.modulation_head.mlp.2.bias`) is detached from the graph there, so it receives no
/// gradient; the reference's is exactly zero.
///
/// Three forwards:
/// - frozen only: [`DiffusionPath::frozen_logits`] (the base model's logits);
/// - joint (training): [`DiffusionPath::forward`] runs the frozen pass and the diffusion path
///   over the whole sequence, with per-position timesteps;
/// - diffusion only: [`DiffusionPath::forward_cached`] for positions whose frozen keys/values
///   and final hidden states are cached ([`FlowContext`]), as inference does at every solver
///   stage.
///
/// ```
/// use burn::tensor::{DType, Device, Int, Tensor};
/// use l2d_models::{config::ModelConfig, decoder::{CausalLm, ForwardOptions}};
/// use l2d_models::diffusion::{DiffusionPath, Timesteps};
/// use l2d_models::l2d_config::L2dConfig;
///
/// let base_config = ModelConfig::from_json_str(r#"{"model_type": "llama", "hidden_size": 32,
///     "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
///     "num_key_value_heads": 2, "vocab_size": 50}"#)?;
/// let device = Device::flex();
/// let base = CausalLm::random(&base_config, &device, DType::F32, 0);
/// let config = L2dConfig { flow_representation_dim: Some(8), flow_lora_rank: 4,
///     timestep_modulation_hidden_size: Some(16), flow_to_lm_hidden_size: Some(16),
///     timestep_modulation_freq_embedding_size: Some(16), ..L2dConfig::default() };
/// let path = DiffusionPath::init(&config, &base, 7)?;
///
/// let ids = Tensor::<2, Int>::from_ints([[1, 5, 7, 9]], &device);
/// let x_t = Tensor::<3>::zeros([1, 4, 8], &device);
/// let t = Timesteps::Tensor(Tensor::<2>::full([1, 4], 0.5, &device));
/// let logits = path.forward(&base, ids.clone(), &ForwardOptions::default(), x_t, &t, None)?;
/// // A fresh path is gated to zero: the base model's logits at every t.
/// let frozen = path.frozen_logits(&base, ids, &ForwardOptions::default());
/// let diff = (logits - frozen).abs().max().into_scalar::<f32>();
/// assert!(diff < 1e-6);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Module, Debug)]
pub struct DiffusionPath {
    /// Token → flow representation (`model.flow_token_embedder`).
    pub flow_token_embedder: FlowTokenEmbedder,
    /// Flow state → diffusion-path input (`model.flow_to_lm_encoder`).
    pub flow_to_lm_encoder: FlowToLmEncoder,
    /// Timestep → conditioning (`model.timestep_embedder`).
    pub timestep_embedder: TimestepEmbedder,
    /// Guidance class → conditioning offset (`model.data_label_embedder`).
    pub class_embedder: Option<ClassEmbedder>,
    /// One entry per decoder layer (`model.layers.N.*`).
    pub layers: Vec<FlowLayer>,
    /// The final gate `head(c_t) [- head(c_0)]` (`model.modulation_head`).
    pub modulation_head: ConditioningHead,
    #[module(skip)]
    config: L2dConfig,
    #[module(skip)]
    dims: ResolvedDims,
    #[module(skip)]
    base: BaseSummary,
    #[module(skip)]
    keys: ParamKeys,
}

impl DiffusionPath {
    /// The checkpoint key of every parameter, recorded when the path was built.
    pub(crate) fn keys(&self) -> &ParamKeys {
        &self.keys
    }

    /// A freshly initialised path for `base`, as the reference initialises it: Xavier-uniform
    /// MLPs with zero biases, the timestep MLP's first and last weights `N(0, 0.02²)`, the last
    /// layer of every modulation head zero (so a fresh path leaves the base model unchanged at
    /// every `t`), LoRA `A ~ N(0, 1/rank²)` and `B = 0`, full copies equal to the base
    /// projections, class embeddings `N(0, 0.02²)`. Parameters are f32 on the base's device,
    /// drawn from a host generator seeded by `seed`.
    ///
    /// # Errors
    /// [`DiffusionError::Config`] if the configuration is invalid for this base.
    pub fn init(config: &L2dConfig, base: &CausalLm, seed: u64) -> Result<Self, DiffusionError> {
        let mut source = InitSource {
            rng: HostRng::new(seed),
            device: base.device(),
            dtype: DType::F32,
        };
        Self::build(config, base.config(), Some(base), &mut source)
    }

    /// [`DiffusionPath::init`] from the base's configuration only (no base weights needed):
    /// for LoRA or shared projections, e.g. to count parameters at full-model sizes.
    ///
    /// # Errors
    /// [`DiffusionError::FullCopyNeedsBase`] for full copies; configuration errors.
    pub fn init_without_base(
        config: &L2dConfig,
        base_config: &ModelConfig,
        device: &Device,
        seed: u64,
    ) -> Result<Self, DiffusionError> {
        let mut source = InitSource {
            rng: HostRng::new(seed),
            device: device.clone(),
            dtype: DType::F32,
        };
        Self::build(config, base_config, None, &mut source)
    }

    /// Assembles the path, asking `source` for every tensor under its reference key.
    pub(crate) fn build(
        config: &L2dConfig,
        base_config: &ModelConfig,
        base: Option<&CausalLm>,
        source: &mut dyn ParamSource,
    ) -> Result<Self, DiffusionError> {
        let dims = config.resolve(base_config)?;
        let h = dims.hidden;
        let mut builder = KeyBuilder::new(source);
        let mut root = builder.root();
        let mut vb = root.pp("model");
        let xavier = |_: usize, _: usize| LinearInit::Xavier;

        let d = dims.flow_dim;
        let (mapping, table) = match config.flow_representation_space {
            FlowSpace::Mapping => {
                let mut sizes = vec![h];
                sizes.extend(std::iter::repeat_n(d, dims.flow_map_layers));
                let mut at = vb.pp("flow_token_embedder.embedder.layers_module");
                (Some(SimpleMlp::build(&mut at, &sizes, &xavier)?), None)
            }
            FlowSpace::Embedding => (None, None),
            FlowSpace::OneHot => {
                let mut at = vb.pp("flow_token_embedder.embedding_table.weight");
                let t = at.matrix([dims.vocab, d], MatrixInit::Normal(0.02))?;
                (None, Some(t))
            }
        };
        let flow_token_embedder = FlowTokenEmbedder::new(
            config.flow_representation_space,
            mapping,
            table,
            config.flow_representation_normalize,
            config.rescaling(),
        );

        let normalization = if config.rescales_encoder_input() {
            Some(InputNormalization::new(
                config.noise_rescaling,
                config.rescaling(),
                d,
                config.flow_to_lm_timestep_rescaling.unwrap_or(1.0),
            )?)
        } else {
            None
        };
        let encoder_mlp = if dims.encoder_layers == 0 {
            None
        } else {
            let mut sizes = vec![d];
            sizes.extend(std::iter::repeat_n(
                dims.encoder_hidden,
                dims.encoder_layers - 1,
            ));
            sizes.push(h);
            // With an input normalisation the reference wraps the MLP in an `embedder`.
            let mut at = if normalization.is_some() {
                vb.pp("flow_to_lm_encoder.embedder.layers_module")
            } else {
                vb.pp("flow_to_lm_encoder.layers_module")
            };
            Some(SimpleMlp::build(&mut at, &sizes, &xavier)?)
        };
        let flow_to_lm_encoder = FlowToLmEncoder::new(
            encoder_mlp,
            normalization,
            config.flow_to_lm_rescale_in_float32,
        );

        let c = dims.cond_dim;
        let mut sizes = vec![dims.freq_dim];
        sizes.extend(std::iter::repeat_n(c, dims.timestep_layers));
        let timestep_init = |i: usize, n: usize| {
            if i == 0 || i + 1 == n {
                LinearInit::Normal(0.02)
            } else {
                LinearInit::Xavier
            }
        };
        let timestep_embedder = TimestepEmbedder {
            mlp: SimpleMlp::build(&mut vb.pp("timestep_embedder.mlp"), &sizes, &timestep_init)?,
            frequency_size: dims.freq_dim,
        };

        let class_embedder = if dims.num_classes > 0 {
            Some(ClassEmbedder {
                weight: vb
                    .pp("data_label_embedder.weight")
                    .matrix([dims.num_classes + 1, c], MatrixInit::Normal(0.02))?,
            })
        } else {
            None
        };

        let kind = if !config.separate_flow_params {
            ProjectionKind::Shared
        } else if config.separate_flow_params_with_lora {
            ProjectionKind::Lora {
                rank: config.flow_lora_rank,
                scale: config.lora_scale(),
            }
        } else {
            ProjectionKind::Full
        };
        let layers = (0..dims.layers)
            .map(|l| {
                let base_layer = base.map(|b| &b.model.layers[l]);
                FlowLayer::build(&mut vb.pp("layers").pp(l), &dims, kind, base_layer)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let modulation_head = ConditioningHead::build(&mut vb.pp("modulation_head"), c, h)?;
        let keys = builder.finish();
        Ok(Self {
            flow_token_embedder,
            flow_to_lm_encoder,
            timestep_embedder,
            class_embedder,
            layers,
            modulation_head,
            config: config.clone(),
            dims,
            base: BaseSummary::of(base_config),
            keys,
        })
    }

    /// The L2D configuration.
    pub fn config(&self) -> &L2dConfig {
        &self.config
    }

    /// The resolved sizes.
    pub fn dims(&self) -> &ResolvedDims {
        &self.dims
    }

    /// The base model sizes the path was built for.
    pub fn base_summary(&self) -> &BaseSummary {
        &self.base
    }

    /// The flow-space width `d`.
    pub fn flow_dim(&self) -> usize {
        self.dims.flow_dim
    }

    /// The null class index, when the path has guidance classes.
    pub fn null_class(&self) -> Option<usize> {
        self.class_embedder.as_ref().map(ClassEmbedder::num_classes)
    }

    /// Checks class labels against the path's classes: labels need guidance classes and must
    /// lie in `0..=num_classes` (`num_classes` is the null class). Reads two scalars back from
    /// the device. [`DiffusionPath::forward`] and [`DiffusionPath::loss`] call it;
    /// [`DiffusionPath::forward_cached`] does not (validate once, e.g. as
    /// [`FlowVelocityField::with_guidance`](super::FlowVelocityField::with_guidance) does).
    ///
    /// # Errors
    /// [`DiffusionError::ClassLabels`].
    pub fn validate_class_labels(&self, labels: &ClassLabels) -> Result<(), DiffusionError> {
        let null = self.null_class().ok_or_else(|| {
            DiffusionError::ClassLabels(
                "this diffusion path has no guidance classes \
                 (guidance_modulation_num_classes is unset)"
                    .into(),
            )
        })?;
        let flat = match labels {
            ClassLabels::PerSequence(l) => l.clone(),
            ClassLabels::PerPosition(l) => {
                let [b, n] = l.dims();
                l.clone().reshape([b * n])
            }
        };
        if flat.dims()[0] == 0 {
            return Ok(());
        }
        let min = flat.clone().min().into_scalar::<i64>();
        let max = flat.max().into_scalar::<i64>();
        if min < 0 || max > null as i64 {
            return Err(DiffusionError::ClassLabels(format!(
                "labels must lie in 0..={null} ({null} = null class), found {min}..={max}"
            )));
        }
        Ok(())
    }

    /// Checks that `base` is the kind of model the path was built for.
    ///
    /// # Errors
    /// [`DiffusionError::BaseMismatch`] naming the first size that differs.
    pub fn check_base(&self, base: &CausalLm) -> Result<(), DiffusionError> {
        self.base.check(&BaseSummary::of(base.config()))
    }

    /// Every parameter replaced by `N(0, std²)` draws from a host generator seeded by `seed`
    /// (for tests: a path whose every part changes the output).
    pub fn with_random_parameters(self, seed: u64, std: f64) -> Self {
        struct Randomize {
            rng: HostRng,
            std: f64,
        }
        impl ModuleMapper for Randomize {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let (rng, std) = (&mut self.rng, self.std);
                param.map(|t| {
                    let require_grad = t.is_require_grad();
                    let shape = t.shape();
                    let values: Vec<f64> = rng
                        .normal_vec(shape.num_elements())
                        .into_iter()
                        .map(|z| z * std)
                        .collect();
                    Tensor::from_data(TensorData::new(values, shape), (&t.device(), t.dtype()))
                        .set_require_grad(require_grad)
                })
            }
        }
        self.map(&mut Randomize {
            rng: HostRng::new(seed),
            std,
        })
    }

    /// Every parameter cast to `dtype` (e.g. the base's bf16 for inference, as the reference
    /// casts its whole model): the forwards then read the parameters as stored instead of
    /// casting them at every evaluation. Training keeps f32 parameters.
    pub fn cast(self, dtype: DType) -> Self {
        struct Cast(DType);
        impl ModuleMapper for Cast {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let dtype = self.0;
                param.map(|t| if t.dtype() == dtype { t } else { t.cast(dtype) })
            }
        }
        self.map(&mut Cast(dtype))
    }

    /// The flow representations of tokens (the training targets `x1`), in the base dtype.
    ///
    /// # Shapes
    /// - `ids`: `[batch, seq]`; output: `[batch, seq, d]`
    pub fn token_representations(&self, base: &CausalLm, ids: Tensor<2, Int>) -> Tensor<3> {
        self.flow_token_embedder.tokens(base, ids)
    }

    /// The flow representation of every token, f32. It depends only on the weights: compute
    /// it once and pass it to every velocity evaluation.
    ///
    /// # Shapes
    /// - output: `[vocab, d]`
    pub fn vocabulary_table(&self, base: &CausalLm) -> Tensor<2> {
        self.flow_token_embedder.vocabulary(base)
    }

    /// The frozen model's logits (no diffusion path): `base.forward_with(ids, None, options)`.
    ///
    /// # Shapes
    /// - `ids`: `[batch, seq]`; output: `[batch, seq, vocab]`
    pub fn frozen_logits(
        &self,
        base: &CausalLm,
        ids: Tensor<2, Int>,
        options: &ForwardOptions,
    ) -> Tensor<3> {
        base.forward_with(ids, None, options)
    }

    /// The joint forward (training): the frozen pass over `ids`, then the diffusion path at
    /// every position, each with its own flow state and time; returns f32 logits. Position `i`
    /// attends to the frozen keys/values of positions `<= i` (same causal, window and padding
    /// masks as the frozen pass).
    ///
    /// # Shapes
    /// - `ids`: `[batch, seq]`
    /// - `flow_state`: `[batch, seq, d]`
    /// - `t`: scalar or `[batch, seq]`; `classes`: `[batch]` or `[batch, seq]`
    /// - output: `[batch, seq, vocab]`
    ///
    /// # Errors
    /// Shape mismatches, class labels without guidance classes, a base of other sizes.
    pub fn forward(
        &self,
        base: &CausalLm,
        ids: Tensor<2, Int>,
        options: &ForwardOptions,
        flow_state: Tensor<3>,
        t: &Timesteps,
        classes: Option<&ClassLabels>,
    ) -> Result<Tensor<3>, DiffusionError> {
        self.check_base(base)?;
        if let Some(labels) = classes {
            self.validate_class_labels(labels)?;
        }
        let frozen: FrozenOutput = base.frozen_forward(ids, options);
        self.forward_cached(
            base,
            &FlowContext::from_frozen(&frozen),
            flow_state,
            t,
            classes,
        )
    }

    /// The diffusion-only forward (inference): the diffusion path for the query positions of
    /// `context` (whose frozen keys/values and final hidden states are cached), then
    /// `LM_head(norm(h_frozen + gate(t) ⊙ h_flow))`; returns f32 logits. Nothing of the frozen
    /// path is recomputed (no k/v projections, no frozen MLP).
    ///
    /// With `preserve_behavior_at_flow_start` the gate is `head(c_t) - head(c_0)`, so at
    /// `t = 0` the logits are exactly the frozen model's.
    ///
    /// # Shapes
    /// - `flow_state`: `[batch, n, d]` with `batch`, `n` those of `context`
    /// - `t`: scalar or `[batch, n]`; `classes`: `[batch]` or `[batch, n]`
    /// - output: `[batch, n, vocab]`
    ///
    /// # Errors
    /// Shape mismatches, class labels without guidance classes, a base of other sizes.
    pub fn forward_cached(
        &self,
        base: &CausalLm,
        context: &FlowContext,
        flow_state: Tensor<3>,
        t: &Timesteps,
        classes: Option<&ClassLabels>,
    ) -> Result<Tensor<3>, DiffusionError> {
        let hidden = self.hidden_cached(base, context, flow_state, t, classes)?;
        Ok(base.logits(hidden).cast(DType::F32))
    }

    /// [`DiffusionPath::forward_cached`] before the final norm and LM head: the combined
    /// hidden state `h_frozen + gate(t) ⊙ h_flow`, in the base dtype.
    ///
    /// # Shapes
    /// - as [`DiffusionPath::forward_cached`]; output: `[batch, n, hidden]`
    ///
    /// # Errors
    /// As [`DiffusionPath::forward_cached`].
    pub fn hidden_cached(
        &self,
        base: &CausalLm,
        context: &FlowContext,
        flow_state: Tensor<3>,
        t: &Timesteps,
        classes: Option<&ClassLabels>,
    ) -> Result<Tensor<3>, DiffusionError> {
        self.check_inputs(base, context, &flow_state, t)?;
        let (b, n) = (context.batch(), context.queries());
        let conditioning = self.time_conditioning(base, t, classes, b, n, &flow_state.device())?;
        self.hidden_conditioned(base, context, flow_state, t, &conditioning)
    }

    /// The base, flow state and timesteps against the context.
    fn check_inputs(
        &self,
        base: &CausalLm,
        context: &FlowContext,
        flow_state: &Tensor<3>,
        t: &Timesteps,
    ) -> Result<(), DiffusionError> {
        self.check_base(base)?;
        let (b, n) = (context.batch(), context.queries());
        let d = self.dims.flow_dim;
        if flow_state.dims() != [b, n, d] {
            return Err(DiffusionError::Shape {
                tensor: "flow state",
                expected: format!("[{b}, {n}, {d}] (batch, query positions, flow dim)"),
                got: flow_state.dims().to_vec(),
            });
        }
        check_timesteps(t, b, n)
    }

    /// Everything of the path that depends only on the time, the class labels and the
    /// parameters: every layer's modulation and the final gate (`head(c_t) - head(c_0)` with
    /// `preserve_behavior_at_flow_start`), in the base dtype. Generation on a fixed grid
    /// evaluates the same times for every token, so it computes this once per time
    /// ([`TimeConditioningCache`](super::TimeConditioningCache)) instead of once per
    /// evaluation; the numbers are the same.
    ///
    /// # Shapes
    /// - `t`: scalar or `[batch, n]`; `classes`: `[batch]` or `[batch, n]`
    /// - output chunks: `[B, N, hidden]` with `B` ∈ {1, batch}, `N` ∈ {1, n}
    ///
    /// # Errors
    /// Class labels without guidance classes, or of another batch; a base of other sizes.
    pub fn time_conditioning(
        &self,
        base: &CausalLm,
        t: &Timesteps,
        classes: Option<&ClassLabels>,
        batch: usize,
        n: usize,
        device: &Device,
    ) -> Result<TimeConditioning, DiffusionError> {
        self.check_base(base)?;
        check_timesteps(t, batch, n)?;
        let dtype = base.dtype();
        let (c_t, c_0) = self.conditioning(t, classes, batch, n, device)?;
        let frozen_c0 = self
            .config
            .freeze_modulation_at_flow_start
            .then(|| c_0.clone());
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                layer.modulation(
                    c_t.clone(),
                    frozen_c0.clone(),
                    self.dims.modulation_chunks,
                    dtype,
                )
            })
            .collect();
        let gate = if self.config.preserve_behavior_at_flow_start {
            self.modulation_head.difference(c_t, c_0)
        } else {
            self.modulation_head.forward(c_t)
        };
        Ok(TimeConditioning {
            layers,
            gate: gate.cast(dtype),
        })
    }

    /// [`DiffusionPath::hidden_cached`] with the time conditioning given (computed by
    /// [`DiffusionPath::time_conditioning`] for the same `t` and class labels).
    ///
    /// # Shapes
    /// - as [`DiffusionPath::forward_cached`]; output: `[batch, n, hidden]`
    ///
    /// # Errors
    /// Shape mismatches; a base of other sizes.
    pub fn hidden_conditioned(
        &self,
        base: &CausalLm,
        context: &FlowContext,
        flow_state: Tensor<3>,
        t: &Timesteps,
        conditioning: &TimeConditioning,
    ) -> Result<Tensor<3>, DiffusionError> {
        self.check_inputs(base, context, &flow_state, t)?;
        if conditioning.layers.len() != self.layers.len() {
            return Err(DiffusionError::Shape {
                tensor: "time conditioning",
                expected: format!("{} layers", self.layers.len()),
                got: vec![conditioning.layers.len()],
            });
        }
        if context.kv.len() != self.layers.len() {
            return Err(DiffusionError::Shape {
                tensor: "frozen key/value cache",
                expected: format!("{} layers", self.layers.len()),
                got: vec![context.kv.len()],
            });
        }
        let dtype = base.dtype();
        let mut f = self
            .flow_to_lm_encoder
            .forward(flow_state.cast(dtype), t)
            .cast(dtype);
        for (i, ((layer, base_layer), modulation)) in self
            .layers
            .iter()
            .zip(&base.model.layers)
            .zip(&conditioning.layers)
            .enumerate()
        {
            f = layer.forward(
                base_layer,
                f,
                modulation,
                &context.kv[i],
                &context.rope,
                context.masks[i].clone(),
            );
        }
        Ok(context.hidden.clone() + f * conditioning.gate.clone())
    }

    /// [`DiffusionPath::forward_cached`] with the time conditioning given (see
    /// [`DiffusionPath::time_conditioning`]); returns f32 logits.
    ///
    /// # Shapes
    /// - as [`DiffusionPath::forward_cached`]; output: `[batch, n, vocab]`
    ///
    /// # Errors
    /// As [`DiffusionPath::hidden_conditioned`].
    pub fn forward_conditioned(
        &self,
        base: &CausalLm,
        context: &FlowContext,
        flow_state: Tensor<3>,
        t: &Timesteps,
        conditioning: &TimeConditioning,
    ) -> Result<Tensor<3>, DiffusionError> {
        let hidden = self.hidden_conditioned(base, context, flow_state, t, conditioning)?;
        Ok(base.logits(hidden).cast(DType::F32))
    }

    /// The conditioning vectors at `t` and at `0`, `[B, N, C]` (`B` ∈ {1, batch},
    /// `N` ∈ {1, n}), in the path's parameter dtype.
    fn conditioning(
        &self,
        t: &Timesteps,
        classes: Option<&ClassLabels>,
        b: usize,
        n: usize,
        device: &Device,
    ) -> Result<(Tensor<3>, Tensor<3>), DiffusionError> {
        let c = self.dims.cond_dim;
        let embed = |t: &Timesteps| -> Tensor<3> {
            match t {
                Timesteps::Scalar(t) => self
                    .timestep_embedder
                    .forward(Tensor::<1>::from_data(
                        TensorData::new(vec![*t as f32], [1]),
                        (device, DType::F32),
                    ))
                    .reshape([1, 1, c]),
                Timesteps::Tensor(tt) => self
                    .timestep_embedder
                    .forward(tt.clone().reshape([b * n]))
                    .reshape([b, n, c]),
            }
        };
        let class = match (&self.class_embedder, classes) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(DiffusionError::ClassLabels(
                    "this diffusion path has no guidance classes \
                     (guidance_modulation_num_classes is unset)"
                        .into(),
                ));
            }
            (Some(e), None) => Some(e.null().reshape([1, 1, c])),
            (Some(e), Some(labels)) => {
                if labels.batch() != b {
                    return Err(DiffusionError::ClassLabels(format!(
                        "{} labels for a batch of {b}",
                        labels.batch()
                    )));
                }
                Some(match labels {
                    ClassLabels::PerSequence(l) => e.forward(l.clone()).reshape([b, 1, c]),
                    ClassLabels::PerPosition(l) => {
                        if l.dims() != [b, n] {
                            return Err(DiffusionError::ClassLabels(format!(
                                "per-position labels of shape {:?}, expected [{b}, {n}]",
                                l.dims()
                            )));
                        }
                        e.forward(l.clone().reshape([b * n])).reshape([b, n, c])
                    }
                })
            }
        };
        let with_class = |x: Tensor<3>| match &class {
            Some(e) => x + e.clone(),
            None => x,
        };
        let c_t = with_class(embed(t));
        // Row-wise MLPs: the embedding of t = 0 is the same for every position.
        let c_0 = with_class(embed(&Timesteps::Scalar(0.0)));
        Ok((c_t, c_0))
    }
}
