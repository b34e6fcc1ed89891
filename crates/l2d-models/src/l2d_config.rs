//! The L2D hyper-parameters, under the reference implementation's own names.
//!
//! [`L2dConfig`] reads the `l2d_config.json` of the reference fixtures, any JSON object with
//! the keys of the reference's `FlowLlamaForCausalLM` / `FlowQwen2ForCausalLM` constructor, and
//! the `[LAD]` section of its `cfgs/model/*.cfg` files ([`L2dConfig::from_reference_cfg`]).
//! Missing keys take the values of the released configurations (mapping space of 256
//! dimensions, LoRA rank 32 with alpha 32, noise scale 64, full DiT modulation, behaviour
//! preserved at `t = 0`, timestep conditioning of width 256), not the reference's argparse
//! defaults, which no released model uses.
//!
//! ```
//! use l2d_models::l2d_config::L2dConfig;
//!
//! let config = L2dConfig::from_json_str(r#"{"flow_lora_rank": 8, "noise_rescaling": 32.0}"#)?;
//! assert_eq!(config.flow_lora_rank, 8);
//! assert_eq!(config.lora_scale(), 32.0 / 8.0); // alpha stays at the shipped 32
//! assert_eq!(config.flow_representation_dim, Some(256));
//!
//! // A typo is an error naming the key.
//! let err = L2dConfig::from_json_str(r#"{"flow_lora_rnak": 8}"#).unwrap_err();
//! assert!(err.to_string().contains("flow_lora_rnak"));
//! # Ok::<(), l2d_models::l2d_config::L2dConfigError>(())
//! ```

use std::path::{Path, PathBuf};

use l2d_core::{
    NoiseSchedule, Rescaling, TemperatureSchedule, VelocitySchedule, X1Estimation, X1Estimator,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::ModelConfig;

/// Errors of [`L2dConfig`]: each names the key (field) at fault.
#[derive(Debug, thiserror::Error)]
pub enum L2dConfigError {
    /// The file could not be read.
    #[error("cannot read L2D config `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not a JSON object (or not a `.cfg` file with a `[LAD]` section).
    #[error("cannot parse L2D config{}: {reason}", in_file(.path))]
    Parse {
        /// The file, if the text came from one.
        path: Option<PathBuf>,
        /// What is wrong.
        reason: String,
    },
    /// A key that is not an L2D hyper-parameter (most often a typo).
    #[error("unknown L2D config key `{field}`")]
    UnknownField {
        /// The key.
        field: String,
    },
    /// A key whose value has the wrong type or cannot be parsed.
    #[error("invalid value for L2D config key `{field}`: {reason}")]
    InvalidType {
        /// The key.
        field: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A value outside its valid range, or values that contradict each other.
    #[error("invalid L2D config `{field}` = {value}: {reason}")]
    Invalid {
        /// The key at fault.
        field: &'static str,
        /// The value given.
        value: String,
        /// What it must satisfy.
        reason: String,
    },
    /// An option of the reference that this implementation does not provide.
    #[error("unsupported L2D config `{field}` = {value}: {reason}")]
    Unsupported {
        /// The key.
        field: &'static str,
        /// The value given.
        value: String,
        /// Why it is not supported.
        reason: &'static str,
    },
}

fn in_file(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" `{}`", p.display()))
        .unwrap_or_default()
}

/// Where the flow representation of a token comes from (`flow_representation_space`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FlowSpace {
    /// A learned map (an MLP of `flow_representation_num_layers` layers) of the frozen input
    /// embedding: the released configurations.
    #[default]
    #[serde(rename = "mapping", alias = "Mapping", alias = "MAPPING")]
    Mapping,
    /// The frozen input embedding itself (`flow_representation_dim` = hidden size).
    #[serde(rename = "embedding", alias = "Embedding", alias = "EMBEDDING")]
    Embedding,
    /// A learned table with one row per token.
    #[serde(rename = "one-hot", alias = "One-Hot", alias = "ONE-HOT")]
    OneHot,
}

/// How training labels line up with the inputs (`shifted_labels` of the reference's forward).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LabelAlignment {
    /// `labels[i]` is token `i` (Hugging Face convention): the target of position `i` is
    /// `labels[i + 1]`, the last position gets a zero flow state and is not scored.
    #[default]
    Unshifted,
    /// `labels[i]` is already the target of position `i` (the reference's training data).
    Shifted,
}

/// The L2D hyper-parameters, named as in the reference implementation (SakanaAI/L2D).
///
/// Build it with [`L2dConfig::default`] (the released configuration),
/// [`L2dConfig::from_json_str`] / [`L2dConfig::from_file`], or
/// [`L2dConfig::from_reference_cfg`]. [`L2dConfig::validate`] checks it (alone, or against a
/// base model with [`L2dConfig::resolve`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct L2dConfig {
    /// The base model family the configuration was made for (`llama`, `qwen2`, `mistral`);
    /// checked against the base model when present.
    pub arch: Option<String>,
    /// Which base parameters are frozen; only `all` is supported.
    pub base_params_to_freeze: String,
    /// The warp applied to uniform training timesteps.
    pub noise_schedule: NoiseSchedule,
    /// Training timesteps are drawn in `[0, 1 - minimum_training_noise]`.
    pub minimum_training_noise: f64,
    /// The unit of `minimum_training_noise`; only `time`.
    pub minimum_training_noise_units: String,
    /// `constant` (`(x̂ - x)/(1 - t)`) or `edm` (`÷ (1 - t)²`).
    pub velocity_schedule: VelocitySchedule,
    /// Where token representations come from.
    pub flow_representation_space: FlowSpace,
    /// Width of the flow space (`None`: the base hidden size).
    pub flow_representation_dim: Option<usize>,
    /// Layers of the `mapping` MLP (at least 1); `None` or 0 for `embedding`.
    pub flow_representation_num_layers: Option<usize>,
    /// Whether representations are L2-normalised.
    pub flow_representation_normalize: bool,
    /// What normalised representations are multiplied by (`None` behaves as `none`).
    pub flow_representation_rescaling: Option<Rescaling>,
    /// The noise scale σ: `x_0 ~ N(0, σ²)`.
    pub noise_rescaling: f64,
    /// Flow tokens attending to each other: not implemented by the reference either.
    pub self_attention_on_flow_sequence: bool,
    /// Layers of the flow-to-LM MLP (0: identity, needs the flow width = hidden size).
    pub flow_to_lm_translation_depth: usize,
    /// Hidden width of the flow-to-LM MLP (`None`: the base hidden size).
    pub flow_to_lm_hidden_size: Option<usize>,
    /// `c` of the input normalisation `x / std(t) · c`; `None` or 0 disables it.
    pub flow_to_lm_timestep_rescaling: Option<f64>,
    /// Whether the input normalisation runs in f32 whatever the model dtype.
    pub flow_to_lm_rescale_in_float32: bool,
    /// Output gate `head(t) - head(0)`, so `t = 0` gives exactly the base model.
    pub preserve_behavior_at_flow_start: bool,
    /// Modulating the frozen path too; not supported (it would make the frozen keys/values
    /// depend on `t`).
    pub modulate_hidden_states: bool,
    /// Six modulations per layer (norm-weight offset, shift, gate, twice) instead of two
    /// (norm-weight offsets only).
    pub full_dit_modulation: bool,
    /// Layers of the timestep MLP (at least 1).
    pub timestep_modulation_num_layers: usize,
    /// Size of the sinusoidal timestep features (`None`: the base hidden size).
    pub timestep_modulation_freq_embedding_size: Option<usize>,
    /// Width of the conditioning vector (`None`: the base hidden size).
    pub timestep_modulation_hidden_size: Option<usize>,
    /// Number of guidance classes (`None` or 0: no class conditioning). The null class is
    /// index `num_classes`.
    pub guidance_modulation_num_classes: Option<usize>,
    /// Probability that training replaces a position's class by the null class.
    pub guidance_modulation_training_dropout: f64,
    /// Every per-layer modulation offset by its value at `t = 0` (DiT's `1 + scale` form).
    pub freeze_modulation_at_flow_start: bool,
    /// Whether the diffusion path has its own q/o/gate/up/down projections (`false`: it
    /// uses the frozen ones).
    pub separate_flow_params: bool,
    /// Own projections as LoRA deltas on the frozen ones (`false`: full trainable copies).
    pub separate_flow_params_with_lora: bool,
    /// LoRA rank.
    pub flow_lora_rank: usize,
    /// LoRA alpha (`None` or -1: `2 · rank`); the delta is scaled by `alpha / rank`.
    pub flow_lora_alpha: Option<f64>,
    /// The time the ODE integrates to.
    pub nstep_final_timestep: f64,
    /// `average` or `sample` (the released configurations).
    pub nstep_x1_estimation: String,
    /// Renormalise x1 estimates to the representations' norm.
    pub nstep_normalize_x1_predictions: bool,
    /// Snap averaged estimates to the nearest representation.
    pub nstep_clamp_predictions: bool,
    /// Temperature of the x1 estimate as a function of `t` (0: argmax).
    pub nstep_temperature_schedule: TemperatureSchedule,
    /// Classifier-free guidance weight `w` (`None`: 1, no guidance).
    pub nstep_guidance_parameter: Option<f64>,
    /// Ignored (training-pipeline switch of the reference's `.cfg` files).
    #[serde(skip_serializing)]
    pub lad: Option<Value>,
    /// Ignored (analysis switch of the reference's `.cfg` files).
    #[serde(skip_serializing)]
    pub compute_diff_at_training: Option<Value>,
    /// Ignored (analysis switch of the reference's `.cfg` files).
    #[serde(skip_serializing)]
    pub compute_nstep_loss: Option<Value>,
    /// Ignored (generation default of the reference's Hugging Face `generate`).
    #[serde(skip_serializing)]
    pub default_generation_nstep: Option<Value>,
    /// Ignored (the reference's switch to re-initialise full copies).
    #[serde(skip_serializing)]
    pub reinit_flow_params: Option<Value>,
}

impl Default for L2dConfig {
    /// The released configuration (`cfgs/model/*_lad_lora.cfg` of the reference).
    fn default() -> Self {
        Self {
            arch: None,
            base_params_to_freeze: "all".into(),
            noise_schedule: NoiseSchedule::Identity,
            minimum_training_noise: 0.0,
            minimum_training_noise_units: "time".into(),
            velocity_schedule: VelocitySchedule::Constant,
            flow_representation_space: FlowSpace::Mapping,
            flow_representation_dim: Some(256),
            flow_representation_num_layers: Some(1),
            flow_representation_normalize: true,
            flow_representation_rescaling: Some(Rescaling::Mult),
            noise_rescaling: 64.0,
            self_attention_on_flow_sequence: false,
            flow_to_lm_translation_depth: 2,
            flow_to_lm_hidden_size: Some(256),
            flow_to_lm_timestep_rescaling: Some(1.0),
            flow_to_lm_rescale_in_float32: true,
            preserve_behavior_at_flow_start: true,
            modulate_hidden_states: false,
            full_dit_modulation: true,
            timestep_modulation_num_layers: 2,
            timestep_modulation_freq_embedding_size: Some(256),
            timestep_modulation_hidden_size: Some(256),
            guidance_modulation_num_classes: None,
            guidance_modulation_training_dropout: 0.2,
            freeze_modulation_at_flow_start: false,
            separate_flow_params: true,
            separate_flow_params_with_lora: true,
            flow_lora_rank: 32,
            flow_lora_alpha: Some(32.0),
            nstep_final_timestep: 1.0,
            nstep_x1_estimation: "sample".into(),
            nstep_normalize_x1_predictions: false,
            nstep_clamp_predictions: false,
            nstep_temperature_schedule: TemperatureSchedule::Constant(0.0),
            nstep_guidance_parameter: None,
            lad: None,
            compute_diff_at_training: None,
            compute_nstep_loss: None,
            default_generation_nstep: None,
            reinit_flow_params: None,
        }
    }
}

/// The sizes of a diffusion path once the configuration's `None`s are resolved against a
/// base model ([`L2dConfig::resolve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedDims {
    /// Base residual width.
    pub hidden: usize,
    /// Base MLP inner width.
    pub intermediate: usize,
    /// Base query heads × head width (the q output / o input width).
    pub attn_width: usize,
    /// Base decoder layers.
    pub layers: usize,
    /// Base vocabulary size.
    pub vocab: usize,
    /// Flow-space width `d`.
    pub flow_dim: usize,
    /// Layers of the token map (0 for `embedding`; the table for `one-hot`).
    pub flow_map_layers: usize,
    /// Flow-to-LM MLP layers as built (0 = identity).
    pub encoder_layers: usize,
    /// Flow-to-LM hidden width.
    pub encoder_hidden: usize,
    /// Sinusoid size of the timestep embedding.
    pub freq_dim: usize,
    /// Conditioning width.
    pub cond_dim: usize,
    /// Layers of the timestep MLP.
    pub timestep_layers: usize,
    /// Modulation chunks per layer (6 or 2).
    pub modulation_chunks: usize,
    /// Guidance classes (0 = none).
    pub num_classes: usize,
}

/// The deepest MLP a diffusion-path configuration may ask for (mapping, flow-to-LM encoder,
/// timestep embedding): the released configurations use 1 or 2 layers.
pub const MAX_DEPTH: usize = 64;

impl L2dConfig {
    /// Parses a JSON object of reference hyper-parameters; absent keys keep the released
    /// values. The result is validated ([`L2dConfig::validate`]).
    ///
    /// # Errors
    /// [`L2dConfigError::Parse`] for malformed JSON, [`L2dConfigError::UnknownField`],
    /// [`L2dConfigError::InvalidType`] naming the key, or a validation error.
    pub fn from_json_str(json: &str) -> Result<Self, L2dConfigError> {
        let value: Value = serde_json::from_str(json).map_err(|e| L2dConfigError::Parse {
            path: None,
            reason: e.to_string(),
        })?;
        Self::from_value(value)
    }

    /// Reads a JSON file ([`L2dConfig::from_json_str`]); a `.cfg` file goes to
    /// [`L2dConfig::from_reference_cfg`].
    ///
    /// # Errors
    /// As [`L2dConfig::from_json_str`], plus [`L2dConfigError::Io`]; parse errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, L2dConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| L2dConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let with_path = |e: L2dConfigError| match e {
            L2dConfigError::Parse { reason, .. } => L2dConfigError::Parse {
                path: Some(path.to_path_buf()),
                reason,
            },
            other => other,
        };
        if path.extension().is_some_and(|e| e == "cfg") {
            Self::from_reference_cfg(&text).map_err(with_path)
        } else {
            Self::from_json_str(&text).map_err(with_path)
        }
    }

    /// Reads the `[LAD]` section of one of the reference's `cfgs/model/*.cfg` files (Python
    /// literals: `True`, `False`, `None`, numbers, bare strings). The other sections
    /// (distributed training, model paths, logging) are not L2D hyper-parameters and are
    /// skipped.
    ///
    /// ```
    /// use l2d_models::l2d_config::L2dConfig;
    /// let cfg = "[MODEL]\npretrained_model_dir = x\n[LAD]\nlad = True\nflow_lora_rank = 16\n\
    ///            nstep_temperature_schedule = polynomial_1_1.0\n";
    /// let config = L2dConfig::from_reference_cfg(cfg)?;
    /// assert_eq!(config.flow_lora_rank, 16);
    /// // The released Qwen-1.5B file's typo is caught and named:
    /// let err = L2dConfig::from_reference_cfg("[LAD]\nnoise_rescaling = 64com.0\n").unwrap_err();
    /// assert!(err.to_string().contains("noise_rescaling"));
    /// # Ok::<(), l2d_models::l2d_config::L2dConfigError>(())
    /// ```
    ///
    /// # Errors
    /// [`L2dConfigError::Parse`] if there is no `[LAD]` section or a line is not `key = value`;
    /// otherwise as [`L2dConfig::from_json_str`].
    pub fn from_reference_cfg(text: &str) -> Result<Self, L2dConfigError> {
        let mut map = Map::new();
        let mut section = String::new();
        let mut found = false;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_ascii_uppercase();
                found |= section == "LAD";
                continue;
            }
            if section != "LAD" {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(L2dConfigError::Parse {
                    path: None,
                    reason: format!("line {}: expected `key = value`, found `{line}`", n + 1),
                });
            };
            map.insert(key.trim().to_string(), python_literal(value.trim()));
        }
        if !found {
            return Err(L2dConfigError::Parse {
                path: None,
                reason: "no `[LAD]` section".into(),
            });
        }
        Self::from_value(Value::Object(map))
    }

    /// Builds the configuration from a JSON value (an object).
    ///
    /// # Errors
    /// As [`L2dConfig::from_json_str`].
    pub fn from_value(value: Value) -> Result<Self, L2dConfigError> {
        let Value::Object(map) = value else {
            return Err(L2dConfigError::Parse {
                path: None,
                reason: "expected a JSON object".into(),
            });
        };
        // Key by key first, so an error names its key (serde's own message does not).
        for (key, v) in &map {
            let mut one = Map::new();
            one.insert(key.clone(), v.clone());
            if let Err(e) = serde_json::from_value::<L2dConfig>(Value::Object(one)) {
                let msg = e.to_string();
                return Err(if msg.starts_with("unknown field") {
                    L2dConfigError::UnknownField { field: key.clone() }
                } else {
                    L2dConfigError::InvalidType {
                        field: key.clone(),
                        reason: msg,
                    }
                });
            }
        }
        let config: L2dConfig =
            serde_json::from_value(Value::Object(map)).map_err(|e| L2dConfigError::Parse {
                path: None,
                reason: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as JSON (reference key names; ignored keys left out).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("an L2dConfig always serialises")
    }

    /// LoRA alpha after the reference's defaulting (`None` or -1 → `2 · rank`).
    pub fn lora_alpha(&self) -> f64 {
        match self.flow_lora_alpha {
            None => 2.0 * self.flow_lora_rank as f64,
            Some(-1.0) => 2.0 * self.flow_lora_rank as f64,
            Some(a) => a,
        }
    }

    /// The scale of the LoRA delta, `alpha / rank`.
    pub fn lora_scale(&self) -> f64 {
        self.lora_alpha() / self.flow_lora_rank as f64
    }

    /// The flow representation rescaling (`None` behaves as `none`).
    pub fn rescaling(&self) -> Rescaling {
        self.flow_representation_rescaling
            .unwrap_or(Rescaling::None)
    }

    /// Whether the flow-to-LM encoder normalises its input by the std at `t`.
    pub fn rescales_encoder_input(&self) -> bool {
        self.flow_to_lm_timestep_rescaling.is_some_and(|c| c > 0.0)
    }

    /// The number of guidance classes (0 when class conditioning is off).
    pub fn num_classes(&self) -> usize {
        self.guidance_modulation_num_classes.unwrap_or(0)
    }

    /// The null class index (`num_classes`), when class conditioning is on.
    pub fn null_class(&self) -> Option<usize> {
        (self.num_classes() > 0).then(|| self.num_classes())
    }

    /// The largest training timestep, `1 - minimum_training_noise`.
    pub fn maximum_timestep(&self) -> f64 {
        1.0 - self.minimum_training_noise
    }

    /// The x1 estimation rule of the configuration (`nstep_x1_estimation`,
    /// `nstep_clamp_predictions`, `nstep_normalize_x1_predictions`).
    ///
    /// # Errors
    /// [`L2dConfigError::Invalid`] for an unknown estimator name.
    pub fn x1_estimation(&self) -> Result<X1Estimation, L2dConfigError> {
        let estimator =
            X1Estimator::from_reference(&self.nstep_x1_estimation, self.nstep_clamp_predictions)
                .map_err(|e| L2dConfigError::Invalid {
                    field: "nstep_x1_estimation",
                    value: self.nstep_x1_estimation.clone(),
                    reason: e.to_string(),
                })?;
        let mut rule = X1Estimation::new(estimator);
        if self.nstep_normalize_x1_predictions && estimator != X1Estimator::Clamp {
            rule = rule.with_renormalize(self.rescaling());
        }
        Ok(rule)
    }

    /// Checks the values on their own (everything that does not need the base model).
    ///
    /// # Errors
    /// [`L2dConfigError::Unsupported`] for options this implementation does not provide
    /// (`self_attention_on_flow_sequence`, `modulate_hidden_states`, base parameters not
    /// frozen, negative `flow_to_lm_timestep_rescaling`, noise units other than `time`);
    /// [`L2dConfigError::Invalid`] for out-of-range or contradictory values.
    pub fn validate(&self) -> Result<(), L2dConfigError> {
        fn invalid(
            field: &'static str,
            value: impl std::fmt::Display,
            reason: &str,
        ) -> Result<(), L2dConfigError> {
            Err(L2dConfigError::Invalid {
                field,
                value: value.to_string(),
                reason: reason.to_string(),
            })
        }
        fn unsupported(
            field: &'static str,
            value: impl std::fmt::Display,
            reason: &'static str,
        ) -> Result<(), L2dConfigError> {
            Err(L2dConfigError::Unsupported {
                field,
                value: value.to_string(),
                reason,
            })
        }
        // Sizes are bounded before anything is built from them (an adapter's metadata may be
        // corrupt): far above the released configurations (256-wide spaces, rank 32, depth 2).
        for (field, value, max) in [
            (
                "flow_representation_dim",
                self.flow_representation_dim,
                1 << 17,
            ),
            (
                "flow_representation_num_layers",
                self.flow_representation_num_layers,
                MAX_DEPTH,
            ),
            (
                "flow_to_lm_translation_depth",
                Some(self.flow_to_lm_translation_depth),
                MAX_DEPTH,
            ),
            (
                "flow_to_lm_hidden_size",
                self.flow_to_lm_hidden_size,
                1 << 17,
            ),
            (
                "timestep_modulation_num_layers",
                Some(self.timestep_modulation_num_layers),
                MAX_DEPTH,
            ),
            (
                "timestep_modulation_freq_embedding_size",
                self.timestep_modulation_freq_embedding_size,
                1 << 17,
            ),
            (
                "timestep_modulation_hidden_size",
                self.timestep_modulation_hidden_size,
                1 << 17,
            ),
            ("flow_lora_rank", Some(self.flow_lora_rank), 1 << 16),
            (
                "guidance_modulation_num_classes",
                self.guidance_modulation_num_classes,
                1 << 20,
            ),
        ] {
            if let Some(v) = value.filter(|&v| v > max) {
                return invalid(
                    field,
                    v,
                    &format!("is above the supported maximum of {max}"),
                );
            }
        }
        if self.self_attention_on_flow_sequence {
            return unsupported(
                "self_attention_on_flow_sequence",
                true,
                "flow tokens attend only to the frozen keys/values (the reference raises \
                 NotImplementedError too)",
            );
        }
        if self.modulate_hidden_states {
            return unsupported(
                "modulate_hidden_states",
                true,
                "modulating the frozen path makes its keys/values depend on t, which defeats \
                 the cached frozen pass; no released configuration uses it",
            );
        }
        if !self.base_params_to_freeze.eq_ignore_ascii_case("all") {
            return unsupported(
                "base_params_to_freeze",
                &self.base_params_to_freeze,
                "only `all` is supported: the base model stays frozen",
            );
        }
        if !self
            .minimum_training_noise_units
            .eq_ignore_ascii_case("time")
        {
            return unsupported(
                "minimum_training_noise_units",
                &self.minimum_training_noise_units,
                "only `time` (the reference asserts the same)",
            );
        }
        if !(0.0..1.0).contains(&self.minimum_training_noise) {
            return invalid(
                "minimum_training_noise",
                self.minimum_training_noise,
                "must lie in [0, 1)",
            );
        }
        if !(self.noise_rescaling.is_finite() && self.noise_rescaling > 0.0) {
            return invalid(
                "noise_rescaling",
                self.noise_rescaling,
                "must be finite and positive",
            );
        }
        if self.flow_representation_dim == Some(0) {
            return invalid("flow_representation_dim", 0, "must be positive");
        }
        match self.flow_representation_space {
            FlowSpace::Mapping => {
                if self.flow_representation_num_layers.unwrap_or(0) == 0 {
                    return invalid(
                        "flow_representation_num_layers",
                        format!("{:?}", self.flow_representation_num_layers),
                        "the `mapping` space needs at least one layer",
                    );
                }
            }
            FlowSpace::Embedding => {
                if self.flow_representation_num_layers.unwrap_or(0) != 0 {
                    return invalid(
                        "flow_representation_num_layers",
                        format!("{:?}", self.flow_representation_num_layers),
                        "the `embedding` space has no layers (use null or 0)",
                    );
                }
            }
            FlowSpace::OneHot => {}
        }
        if let Some(c) = self.flow_to_lm_timestep_rescaling {
            if !c.is_finite() || c < 0.0 {
                return unsupported(
                    "flow_to_lm_timestep_rescaling",
                    c,
                    "must be null, 0 (off) or positive (the reference raises \
                     NotImplementedError for negative values)",
                );
            }
            if c > 0.0 && !self.flow_representation_normalize {
                return invalid(
                    "flow_to_lm_timestep_rescaling",
                    c,
                    "the input normalisation needs normalised flow representations \
                     (flow_representation_normalize = true)",
                );
            }
        }
        if self.flow_to_lm_hidden_size == Some(0) {
            return invalid("flow_to_lm_hidden_size", 0, "must be positive");
        }
        if self.freeze_modulation_at_flow_start && !self.preserve_behavior_at_flow_start {
            return invalid(
                "freeze_modulation_at_flow_start",
                true,
                "requires preserve_behavior_at_flow_start = true (as in the reference)",
            );
        }
        if self.timestep_modulation_num_layers == 0 {
            return invalid("timestep_modulation_num_layers", 0, "must be at least 1");
        }
        if let Some(f) = self.timestep_modulation_freq_embedding_size
            && (f == 0 || f % 2 == 1)
        {
            return invalid(
                "timestep_modulation_freq_embedding_size",
                f,
                "must be even and positive (half cosines, half sines)",
            );
        }
        if self.timestep_modulation_hidden_size == Some(0) {
            return invalid("timestep_modulation_hidden_size", 0, "must be positive");
        }
        if self.num_classes() > 0
            && !(self.guidance_modulation_training_dropout > 0.0
                && self.guidance_modulation_training_dropout < 1.0)
        {
            return invalid(
                "guidance_modulation_training_dropout",
                self.guidance_modulation_training_dropout,
                "class conditioning needs a label dropout in (0, 1) to learn the null class",
            );
        }
        if self.separate_flow_params_with_lora && !self.separate_flow_params {
            return invalid(
                "separate_flow_params_with_lora",
                true,
                "requires separate_flow_params = true",
            );
        }
        if self.separate_flow_params_with_lora {
            if self.flow_lora_rank == 0 {
                return invalid("flow_lora_rank", 0, "must be positive");
            }
            if !(self.lora_alpha().is_finite() && self.lora_alpha() > 0.0) {
                return invalid(
                    "flow_lora_alpha",
                    self.lora_alpha(),
                    "must be positive (or null / -1 for 2·rank)",
                );
            }
        }
        if !(0.0..=1.0).contains(&self.nstep_final_timestep) {
            return invalid(
                "nstep_final_timestep",
                self.nstep_final_timestep,
                "must lie in [0, 1]",
            );
        }
        if let Some(w) = self.nstep_guidance_parameter
            && !(w.is_finite() && w >= 0.0)
        {
            return invalid(
                "nstep_guidance_parameter",
                w,
                "must be finite and non-negative",
            );
        }
        self.nstep_temperature_schedule
            .validate()
            .map_err(|e| L2dConfigError::Invalid {
                field: "nstep_temperature_schedule",
                value: self.nstep_temperature_schedule.to_string(),
                reason: e.to_string(),
            })?;
        self.x1_estimation()?;
        Ok(())
    }

    /// Validates the configuration against a base model and resolves every size.
    ///
    /// # Errors
    /// As [`L2dConfig::validate`], plus [`L2dConfigError::Invalid`] when `arch` names another
    /// family, or a size must equal the base hidden size and does not.
    pub fn resolve(&self, base: &ModelConfig) -> Result<ResolvedDims, L2dConfigError> {
        self.validate()?;
        let hidden = base.hidden_size;
        if let Some(arch) = &self.arch
            && !arch.eq_ignore_ascii_case(base.architecture.model_type())
        {
            return Err(L2dConfigError::Invalid {
                field: "arch",
                value: arch.clone(),
                reason: format!("the base model is `{}`", base.architecture.model_type()),
            });
        }
        let flow_dim = self.flow_representation_dim.unwrap_or(hidden);
        if self.flow_representation_space == FlowSpace::Embedding && flow_dim != hidden {
            return Err(L2dConfigError::Invalid {
                field: "flow_representation_dim",
                value: flow_dim.to_string(),
                reason: format!("the `embedding` space has the base hidden size {hidden}"),
            });
        }
        // The reference builds an identity encoder at depth 0 with the input normalisation,
        // and a single linear layer at depth 0 without it (its SimpleMLP quirk).
        let encoder_layers = match (
            self.flow_to_lm_translation_depth,
            self.rescales_encoder_input(),
        ) {
            (0, true) => 0,
            (0, false) => 1,
            (d, _) => d,
        };
        if self.flow_to_lm_translation_depth == 0 && flow_dim != hidden {
            return Err(L2dConfigError::Invalid {
                field: "flow_to_lm_translation_depth",
                value: "0".into(),
                reason: format!(
                    "depth 0 needs flow_representation_dim ({flow_dim}) = hidden size ({hidden})"
                ),
            });
        }
        Ok(ResolvedDims {
            hidden,
            intermediate: base.intermediate_size,
            attn_width: base.num_attention_heads * base.head_dim,
            layers: base.num_hidden_layers,
            vocab: base.vocab_size,
            flow_dim,
            flow_map_layers: match self.flow_representation_space {
                FlowSpace::Mapping => self.flow_representation_num_layers.unwrap_or(1),
                FlowSpace::Embedding | FlowSpace::OneHot => 0,
            },
            encoder_layers,
            encoder_hidden: self.flow_to_lm_hidden_size.unwrap_or(hidden),
            freq_dim: self
                .timestep_modulation_freq_embedding_size
                .unwrap_or(hidden),
            cond_dim: self.timestep_modulation_hidden_size.unwrap_or(hidden),
            timestep_layers: self.timestep_modulation_num_layers,
            modulation_chunks: if self.full_dit_modulation { 6 } else { 2 },
            num_classes: self.num_classes(),
        })
    }
}

/// A Python literal of a `.cfg` value as JSON: `True`/`False`/`None`, integers, floats,
/// quoted or bare strings.
fn python_literal(v: &str) -> Value {
    match v {
        "True" | "true" => Value::Bool(true),
        "False" | "false" => Value::Bool(false),
        "None" | "null" => Value::Null,
        _ => {
            if let Ok(i) = v.parse::<i64>() {
                return Value::from(i);
            }
            if let Ok(f) = v.parse::<f64>()
                && f.is_finite()
            {
                return Value::from(f);
            }
            let unquoted = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
                .unwrap_or(v);
            Value::String(unquoted.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_accepted_for_float_keys() {
        let c = L2dConfig::from_json_str(r#"{"noise_rescaling": 64, "flow_lora_alpha": null}"#)
            .unwrap();
        assert_eq!(c.noise_rescaling, 64.0);
        assert_eq!(c.lora_alpha(), 64.0);
    }

    #[test]
    fn unsupported_options_are_typed_errors() {
        for (json, field) in [
            (
                r#"{"self_attention_on_flow_sequence": true}"#,
                "self_attention_on_flow_sequence",
            ),
            (
                r#"{"modulate_hidden_states": true}"#,
                "modulate_hidden_states",
            ),
            (
                r#"{"base_params_to_freeze": "none"}"#,
                "base_params_to_freeze",
            ),
            (
                r#"{"flow_to_lm_timestep_rescaling": -1}"#,
                "flow_to_lm_timestep_rescaling",
            ),
        ] {
            match L2dConfig::from_json_str(json) {
                Err(L2dConfigError::Unsupported { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{json}: {other:?}"),
            }
        }
        match L2dConfig::from_json_str(r#"{"noise_rescaling": "64com.0"}"#) {
            Err(L2dConfigError::InvalidType { field, .. }) => assert_eq!(field, "noise_rescaling"),
            other => panic!("{other:?}"),
        }
        match L2dConfig::from_json_str(
            r#"{"freeze_modulation_at_flow_start": true,
            "preserve_behavior_at_flow_start": false}"#,
        ) {
            Err(L2dConfigError::Invalid { field, .. }) => {
                assert_eq!(field, "freeze_modulation_at_flow_start")
            }
            other => panic!("{other:?}"),
        }
    }

    /// The `[LAD]` section of the reference's `cfgs/model/llama_3.2_1b_instruct_lad_lora.cfg`
    /// (values as released) is exactly the default configuration.
    #[test]
    fn released_cfg_is_the_default() {
        let cfg = "[DISTRIBUTED]\ndeepspeed = True\n[MODEL]\npretrained_model_dir = x\n[LAD]
lad = True
base_params_to_freeze = all
noise_schedule = identity
flow_representation_space = mapping
flow_representation_dim = 256
flow_representation_num_layers = 1
flow_representation_normalize = True
flow_representation_rescaling = mult
flow_to_lm_translation_depth = 2
flow_to_lm_hidden_size = 256
flow_to_lm_timestep_rescaling = 1.0
flow_to_lm_rescale_in_float32 = True
preserve_behavior_at_flow_start = True
modulate_hidden_states = False
full_dit_modulation = True
timestep_modulation_num_layers = 2
timestep_modulation_freq_embedding_size = 256
timestep_modulation_hidden_size = 256
freeze_modulation_at_flow_start = False
separate_flow_params = True
separate_flow_params_with_lora = True
flow_lora_rank = 32
flow_lora_alpha = 32.0
nstep_final_timestep = 1.0
nstep_x1_estimation = sample
nstep_normalize_x1_predictions = False
nstep_temperature_schedule = 0.0
# no analysis for faster training
compute_diff_at_training = False
compute_nstep_loss = -1
minimum_training_noise = 0.0
minimum_training_noise_units = time
noise_rescaling = 64.0
[TRAINING]
micro_batch_size = 4
";
        let mut parsed = L2dConfig::from_reference_cfg(cfg).unwrap();
        parsed.lad = None;
        parsed.compute_diff_at_training = None;
        parsed.compute_nstep_loss = None;
        assert_eq!(parsed, L2dConfig::default());
        assert_eq!(parsed.lora_scale(), 1.0);
    }

    #[test]
    fn json_round_trip() {
        let c = L2dConfig {
            nstep_temperature_schedule: "polynomial_1_1.0".parse().unwrap(),
            guidance_modulation_num_classes: Some(3),
            ..L2dConfig::default()
        };
        let back = L2dConfig::from_value(c.to_json()).unwrap();
        assert_eq!(back, c);
    }
}
