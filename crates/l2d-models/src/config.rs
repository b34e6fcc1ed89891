//! The model configuration: every `config.json` field of a Hugging Face Llama, Qwen2 or
//! Mistral checkpoint that changes the math, with transformers' defaults.
//!
//! [`ModelConfig`] is parsed from a file ([`ModelConfig::from_file`]), a string
//! ([`ModelConfig::from_json_str`]) or a `serde_json::Value` ([`ModelConfig::from_value`], used
//! by the GGUF reader). Parsing resolves the architecture-specific defaults of transformers
//! 4.46 (`LlamaConfig`, `Qwen2Config`, `MistralConfig`) and then validates the result: an
//! unknown architecture or RoPE type, an unsupported activation, or inconsistent head counts
//! are [`ConfigError`]s naming the field.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// Errors raised while reading or validating a model configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The JSON is malformed or a field has the wrong type.
    #[error("invalid config{}: {source}", at(.path))]
    Json {
        /// The file, when parsed from one.
        path: Option<PathBuf>,
        /// The underlying error (names the field and line).
        source: serde_json::Error,
    },
    /// Neither `model_type` nor `architectures` names a supported architecture.
    #[error(
        "unsupported architecture: field `{field}` is {found:?}; supported: llama, qwen2, mistral"
    )]
    UnknownArchitecture {
        /// `model_type` or `architectures`.
        field: &'static str,
        /// What the config holds.
        found: String,
    },
    /// `rope_scaling` (or `rope_parameters`) names a RoPE type this crate does not implement.
    #[error("unsupported RoPE type {found:?} in `{field}`; supported: default, linear, llama3")]
    UnknownRopeType {
        /// `rope_scaling` or `rope_parameters`.
        field: &'static str,
        /// The type found.
        found: String,
    },
    /// A field is missing, out of range, or inconsistent with another field.
    #[error("invalid config field `{field}`: {reason}")]
    Invalid {
        /// The offending field (dotted for nested fields, e.g. `rope_scaling.factor`).
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn at(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" `{}`", p.display()))
        .unwrap_or_default()
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The decoder family. The three differ only in config facts, not in code paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// Llama 2 / 3.x, TinyLlama, SmolLM (`LlamaForCausalLM`).
    Llama,
    /// Qwen2 / Qwen2.5 (`Qwen2ForCausalLM`): q/k/v projections always carry a bias.
    Qwen2,
    /// Mistral (`MistralForCausalLM`): optional sliding-window attention on every layer.
    Mistral,
}

impl Architecture {
    /// The Hugging Face `model_type` string.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Mistral => "mistral",
        }
    }

    fn from_model_type(s: &str) -> Option<Self> {
        match s {
            "llama" => Some(Architecture::Llama),
            "qwen2" => Some(Architecture::Qwen2),
            "mistral" => Some(Architecture::Mistral),
            _ => None,
        }
    }

    fn from_class_name(s: &str) -> Option<Self> {
        match s {
            "LlamaForCausalLM" | "LlamaModel" => Some(Architecture::Llama),
            "Qwen2ForCausalLM" | "Qwen2Model" => Some(Architecture::Qwen2),
            "MistralForCausalLM" | "MistralModel" => Some(Architecture::Mistral),
            _ => None,
        }
    }
}

/// How RoPE inverse frequencies are rescaled (transformers' `rope_type`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// No rescaling (`rope_scaling: null` or `rope_type: "default"`).
    Default,
    /// Position interpolation: every inverse frequency divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1 frequency-dependent rescaling (`_compute_llama3_parameters`).
    Llama3 {
        /// Divisor of the low frequencies (8 for Llama 3.1, 32 for 3.2).
        factor: f64,
        /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are divided.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length of pre-training (8192 for Llama 3).
        original_max_position_embeddings: f64,
    },
}

/// A token id field that Hugging Face writes as an int, a list of ints, or null. Absent
/// (`None`) takes the architecture default; explicit null means no id.
fn token_ids(v: Option<Value>, default: Option<u32>, field: &str) -> Result<Vec<u32>, ConfigError> {
    let one = |x: &Value| {
        x.as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| invalid(field, format!("{x} is not a token id")))
    };
    match v {
        None => Ok(default.into_iter().collect()),
        Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(one).collect(),
        Some(x) => Ok(vec![one(&x)?]),
    }
}

/// `config.json` as written, every field optional; defaults are resolved per architecture.
#[derive(Debug, Clone, Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    hidden_act: Option<String>,
    max_position_embeddings: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    partial_rotary_factor: Option<f64>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    // `Some(Value::Null)` (explicit null) differs from absent (architecture default).
    #[serde(default, deserialize_with = "explicit")]
    sliding_window: Option<Value>,
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    layer_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "explicit")]
    bos_token_id: Option<Value>,
    #[serde(default, deserialize_with = "explicit")]
    eos_token_id: Option<Value>,
    #[serde(default, deserialize_with = "explicit")]
    pad_token_id: Option<Value>,
    torch_dtype: Option<String>,
}

fn explicit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The largest value a size field of `config.json` may take, well above every released model
/// (Llama-3.1-405B: 126 layers, hidden 16384, intermediate 53248, 128 heads, vocabulary 128k,
/// context 128k), so that a corrupt or hostile value is refused before anything is allocated
/// from it.
pub const MAX_SIZES: [(&str, usize); 8] = [
    ("vocab_size", 1 << 22),
    ("hidden_size", 1 << 17),
    ("intermediate_size", 1 << 19),
    ("num_hidden_layers", 1 << 12),
    ("num_attention_heads", 1 << 12),
    ("num_key_value_heads", 1 << 12),
    ("head_dim", 1 << 13),
    ("max_position_embeddings", 1 << 24),
];

/// The configuration of a decoder-only Llama / Qwen2 / Mistral model.
///
/// Field names and meanings follow Hugging Face's `config.json`; absent fields take
/// transformers 4.46's defaults for the architecture.
///
/// ```
/// use l2d_models::config::{Architecture, ModelConfig, RopeScaling};
/// let cfg = ModelConfig::from_json_str(r#"{
///     "model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
///     "num_key_value_heads": 2, "num_hidden_layers": 2, "intermediate_size": 96,
///     "vocab_size": 128,
///     "rope_scaling": {"type": "linear", "factor": 2.0}, "eos_token_id": [2, 7]
/// }"#)?;
/// assert_eq!(cfg.architecture, Architecture::Llama);
/// assert_eq!(cfg.head_dim, 16);
/// assert_eq!(cfg.rope_scaling, RopeScaling::Linear { factor: 2.0 });
/// assert_eq!(cfg.eos_token_ids, vec![2, 7]);
/// # Ok::<(), l2d_models::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Which decoder family (from `model_type`, else `architectures[0]`).
    pub architecture: Architecture,
    /// Vocabulary size (rows of `embed_tokens` and `lm_head`).
    pub vocab_size: usize,
    /// Residual stream width.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); divides `num_attention_heads`.
    pub num_key_value_heads: usize,
    /// Per-head width (`head_dim`, else `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// Maximum positions the model was configured for (informational; not enforced).
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE frequency rescaling.
    pub rope_scaling: RopeScaling,
    /// Whether `lm_head` is the input embedding matrix.
    pub tie_word_embeddings: bool,
    /// Whether q/k/v/o projections carry a bias (Llama `attention_bias`).
    /// Qwen2's q/k/v biases are not governed by this flag: see [`ModelConfig::qkv_bias`].
    pub attention_bias: bool,
    /// Whether the MLP projections carry a bias (Llama `mlp_bias`).
    pub mlp_bias: bool,
    /// The attention window of each layer (`None` = full causal attention): a query at
    /// position `i` sees keys `j` with `i - window < j <= i`.
    pub layer_sliding_windows: Vec<Option<usize>>,
    /// `bos_token_id`, if any.
    pub bos_token_id: Option<u32>,
    /// Every id of `eos_token_id` (an int or a list in `config.json`).
    pub eos_token_ids: Vec<u32>,
    /// `pad_token_id`, if any (first id when a list).
    pub pad_token_id: Option<u32>,
    /// `torch_dtype` as written (the checkpoint's storage dtype), if any.
    pub torch_dtype: Option<String>,
    /// The size fields absent from the file, which took the architecture's default (as
    /// transformers does); named when a tensor then has another shape.
    pub defaulted: Vec<&'static str>,
}

struct Defaults {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    max_position_embeddings: usize,
    sliding_window: Option<usize>,
    bos: Option<u32>,
    eos: Option<u32>,
}

impl Architecture {
    /// transformers 4.46 defaults of `LlamaConfig`, `Qwen2Config`, `MistralConfig`.
    fn defaults(self) -> Defaults {
        match self {
            Architecture::Llama => Defaults {
                vocab_size: 32000,
                hidden_size: 4096,
                intermediate_size: 11008,
                num_hidden_layers: 32,
                num_attention_heads: 32,
                num_key_value_heads: None,
                max_position_embeddings: 2048,
                sliding_window: None,
                bos: Some(1),
                eos: Some(2),
            },
            Architecture::Qwen2 => Defaults {
                vocab_size: 151936,
                hidden_size: 4096,
                intermediate_size: 22016,
                num_hidden_layers: 32,
                num_attention_heads: 32,
                num_key_value_heads: Some(32),
                max_position_embeddings: 32768,
                sliding_window: Some(4096),
                bos: None,
                eos: None,
            },
            Architecture::Mistral => Defaults {
                vocab_size: 32000,
                hidden_size: 4096,
                intermediate_size: 14336,
                num_hidden_layers: 32,
                num_attention_heads: 32,
                num_key_value_heads: Some(8),
                max_position_embeddings: 4096 * 32,
                sliding_window: Some(4096),
                bos: Some(1),
                eos: Some(2),
            },
        }
    }
}

impl ModelConfig {
    /// Reads and validates a `config.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|source| ConfigError::Json {
            path: Some(path.to_path_buf()),
            source,
        })?;
        Self::from_value(&value).map_err(|e| match e {
            ConfigError::Json { path: None, source } => ConfigError::Json {
                path: Some(path.to_path_buf()),
                source,
            },
            e => e,
        })
    }

    /// Parses and validates a configuration from JSON text.
    pub fn from_json_str(json: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(json)
            .map_err(|source| ConfigError::Json { path: None, source })?;
        Self::from_value(&value)
    }

    /// Parses and validates a configuration from a JSON value in the `config.json` layout
    /// (as produced by the GGUF reader).
    pub fn from_value(value: &Value) -> Result<Self, ConfigError> {
        let raw = RawConfig::deserialize(value).map_err(|source| {
            // serde's message lacks the field: find it by parsing one field at a time.
            let culprit = value.as_object().and_then(|obj| {
                obj.iter().find_map(|(k, v)| {
                    let one = Value::Object([(k.clone(), v.clone())].into_iter().collect());
                    RawConfig::deserialize(&one).err().map(|e| (k.clone(), e))
                })
            });
            match culprit {
                Some((field, e)) => invalid(field, e.to_string()),
                None if !value.is_object() => invalid("<root>", "expected a JSON object"),
                None => ConfigError::Json { path: None, source },
            }
        })?;
        Self::resolve(raw)
    }

    fn resolve(raw: RawConfig) -> Result<Self, ConfigError> {
        let architecture = match (&raw.model_type, &raw.architectures) {
            (Some(mt), _) => Architecture::from_model_type(mt).ok_or_else(|| {
                ConfigError::UnknownArchitecture {
                    field: "model_type",
                    found: mt.clone(),
                }
            })?,
            (None, Some(archs)) if !archs.is_empty() => Architecture::from_class_name(&archs[0])
                .ok_or_else(|| ConfigError::UnknownArchitecture {
                    field: "architectures",
                    found: archs.join(", "),
                })?,
            _ => {
                return Err(ConfigError::UnknownArchitecture {
                    field: "model_type",
                    found: "<absent, and no `architectures`>".into(),
                });
            }
        };
        let d = architecture.defaults();

        if let Some(act) = &raw.hidden_act
            && act != "silu"
        {
            return Err(invalid(
                "hidden_act",
                format!("{act:?} is not supported (only \"silu\")"),
            ));
        }
        if let Some(f) = raw.partial_rotary_factor
            && f != 1.0
        {
            return Err(invalid(
                "partial_rotary_factor",
                format!("{f} is not supported (only 1)"),
            ));
        }

        // Every size is checked against a documented maximum before anything is allocated
        // from it (a per-layer table, the list of expected tensors): a corrupt or hostile
        // config fails here instead of exhausting memory.
        let positive =
            |v: Option<usize>, default: usize, field: &'static str| match v.unwrap_or(default) {
                0 => Err(invalid(field, "must be positive")),
                n => match MAX_SIZES.iter().find(|(f, _)| *f == field) {
                    Some((_, max)) if n > *max => Err(invalid(
                        field,
                        format!("{n} is above the supported maximum of {max}"),
                    )),
                    _ => Ok(n),
                },
            };
        let defaulted: Vec<&'static str> = [
            ("vocab_size", raw.vocab_size.is_none()),
            ("hidden_size", raw.hidden_size.is_none()),
            ("intermediate_size", raw.intermediate_size.is_none()),
            ("num_hidden_layers", raw.num_hidden_layers.is_none()),
            ("num_attention_heads", raw.num_attention_heads.is_none()),
        ]
        .into_iter()
        .filter_map(|(f, absent)| absent.then_some(f))
        .collect();
        let vocab_size = positive(raw.vocab_size, d.vocab_size, "vocab_size")?;
        let hidden_size = positive(raw.hidden_size, d.hidden_size, "hidden_size")?;
        let intermediate_size = positive(
            raw.intermediate_size,
            d.intermediate_size,
            "intermediate_size",
        )?;
        let num_hidden_layers = positive(
            raw.num_hidden_layers,
            d.num_hidden_layers,
            "num_hidden_layers",
        )?;
        let num_attention_heads = positive(
            raw.num_attention_heads,
            d.num_attention_heads,
            "num_attention_heads",
        )?;
        let num_key_value_heads = positive(
            raw.num_key_value_heads.or(d.num_key_value_heads),
            num_attention_heads,
            "num_key_value_heads",
        )?;
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(invalid(
                "num_key_value_heads",
                format!(
                    "{num_key_value_heads} does not divide num_attention_heads = \
                     {num_attention_heads}"
                ),
            ));
        }
        let derived_head_dim = || {
            if hidden_size % num_attention_heads != 0 {
                Err(invalid(
                    "hidden_size",
                    format!(
                        "{hidden_size} is not a multiple of num_attention_heads = \
                         {num_attention_heads} and `head_dim` is absent"
                    ),
                ))
            } else {
                Ok(hidden_size / num_attention_heads)
            }
        };
        let head_dim = match (architecture, raw.head_dim) {
            // transformers 4.46's Qwen2 ignores `head_dim` and requires hidden = heads * dim.
            (Architecture::Qwen2, hd) => {
                let derived = derived_head_dim()?;
                if let Some(hd) = hd
                    && hd != derived
                {
                    return Err(invalid(
                        "head_dim",
                        format!(
                            "{hd} differs from hidden_size / num_attention_heads = {derived}, \
                             which Qwen2 requires"
                        ),
                    ));
                }
                derived
            }
            (_, Some(hd)) => positive(Some(hd), hd, "head_dim")?,
            (_, None) => derived_head_dim()?,
        };
        if head_dim % 2 != 0 {
            return Err(invalid(
                "head_dim",
                format!("{head_dim} is odd; RoPE needs an even width"),
            ));
        }

        let rms_norm_eps = raw.rms_norm_eps.unwrap_or(1e-6);
        if !rms_norm_eps.is_finite() || rms_norm_eps < 0.0 {
            return Err(invalid(
                "rms_norm_eps",
                format!("{rms_norm_eps} is not a finite non-negative number"),
            ));
        }
        let (mut rope_theta, rope_scaling) = match (&raw.rope_parameters, &raw.rope_scaling) {
            (Some(p), _) if !p.is_null() => {
                let theta = p.get("rope_theta").and_then(Value::as_f64);
                (theta, parse_rope(p, "rope_parameters")?)
            }
            (_, Some(s)) if !s.is_null() => (None, parse_rope(s, "rope_scaling")?),
            _ => (None, RopeScaling::Default),
        };
        rope_theta = rope_theta.or(raw.rope_theta);
        let rope_theta = rope_theta.unwrap_or(10000.0);
        if !rope_theta.is_finite() || rope_theta <= 1.0 {
            return Err(invalid(
                "rope_theta",
                format!("{rope_theta} must be finite and exceed 1"),
            ));
        }

        // Sliding windows. Explicit null disables; absent takes the architecture default.
        let window = match &raw.sliding_window {
            None => d.sliding_window,
            Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(0) | None => {
                    return Err(invalid(
                        "sliding_window",
                        format!("{v} is not a positive int"),
                    ));
                }
                Some(w) => Some(w as usize),
            },
        };
        let layer_sliding_windows = match architecture {
            Architecture::Llama => vec![None; num_hidden_layers],
            Architecture::Mistral => vec![window; num_hidden_layers],
            Architecture::Qwen2 => {
                // Qwen2Config keeps `sliding_window` only when `use_sliding_window`; layers
                // from `max_window_layers` on use it (flash-attention path of transformers
                // 4.46 and `layer_types` of later versions).
                let window = if raw.use_sliding_window.unwrap_or(false) {
                    window
                } else {
                    None
                };
                match &raw.layer_types {
                    Some(types) => {
                        if types.len() != num_hidden_layers {
                            return Err(invalid(
                                "layer_types",
                                format!(
                                    "{} entries for num_hidden_layers = {num_hidden_layers}",
                                    types.len()
                                ),
                            ));
                        }
                        types
                            .iter()
                            .map(|t| match t.as_str() {
                                "full_attention" => Ok(None),
                                "sliding_attention" => Ok(window),
                                other => Err(invalid(
                                    "layer_types",
                                    format!("unknown layer type {other:?}"),
                                )),
                            })
                            .collect::<Result<_, _>>()?
                    }
                    None => {
                        let first = raw.max_window_layers.unwrap_or(28);
                        (0..num_hidden_layers)
                            .map(|i| window.filter(|_| i >= first))
                            .collect()
                    }
                }
            }
        };

        let attention_bias = raw.attention_bias.unwrap_or(false);
        let mlp_bias = raw.mlp_bias.unwrap_or(false);
        if architecture != Architecture::Llama && (attention_bias || mlp_bias) {
            let field = if attention_bias {
                "attention_bias"
            } else {
                "mlp_bias"
            };
            return Err(invalid(
                field,
                format!(
                    "is a Llama option; {} does not read it",
                    architecture.model_type()
                ),
            ));
        }
        Ok(ModelConfig {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: positive(
                raw.max_position_embeddings,
                d.max_position_embeddings,
                "max_position_embeddings",
            )?,
            rms_norm_eps,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias,
            mlp_bias,
            layer_sliding_windows,
            bos_token_id: token_ids(raw.bos_token_id, d.bos, "bos_token_id")?
                .first()
                .copied(),
            eos_token_ids: token_ids(raw.eos_token_id, d.eos, "eos_token_id")?,
            pad_token_id: token_ids(raw.pad_token_id, None, "pad_token_id")?
                .first()
                .copied(),
            torch_dtype: raw.torch_dtype,
            defaulted,
        })
    }

    /// Whether the q/k/v projections carry a bias (always for Qwen2; `attention_bias` else).
    pub fn qkv_bias(&self) -> bool {
        self.architecture == Architecture::Qwen2 || self.attention_bias
    }

    /// Whether `o_proj` carries a bias (`attention_bias`; never for Qwen2).
    pub fn o_bias(&self) -> bool {
        self.attention_bias
    }

    /// Query heads per key/value head (the GQA group size).
    pub fn num_key_value_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// The RoPE inverse frequencies `[head_dim / 2]` after rescaling, as transformers'
    /// `ROPE_INIT_FUNCTIONS[rope_type]` computes them (evaluated in f64, rounded to f32).
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim as f64;
        (0..self.head_dim / 2)
            .map(|i| {
                // transformers rounds the default frequencies to f32 before rescaling.
                let inv = 1.0 / self.rope_theta.powf((2 * i) as f64 / dim);
                let inv = inv as f32 as f64;
                let scaled = match self.rope_scaling {
                    RopeScaling::Default => inv,
                    RopeScaling::Linear { factor } => inv / factor,
                    RopeScaling::Llama3 {
                        factor,
                        low_freq_factor,
                        high_freq_factor,
                        original_max_position_embeddings: old,
                    } => {
                        let low_wavelen = old / low_freq_factor;
                        let high_wavelen = old / high_freq_factor;
                        let wavelen = 2.0 * std::f64::consts::PI / inv;
                        if wavelen < high_wavelen {
                            inv
                        } else if wavelen > low_wavelen {
                            inv / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * inv / factor + smooth * inv
                        }
                    }
                };
                scaled as f32
            })
            .collect()
    }
}

fn parse_rope(v: &Value, field: &'static str) -> Result<RopeScaling, ConfigError> {
    let obj = v
        .as_object()
        .ok_or_else(|| invalid(field, format!("expected an object or null, found {v}")))?;
    // `rope_type` wins over the legacy `type` key, as in transformers.
    let ty = obj.get("rope_type").or_else(|| obj.get("type"));
    let ty = match ty {
        None => "default",
        Some(t) => t
            .as_str()
            .ok_or_else(|| invalid(format!("{field}.rope_type"), "not a string"))?,
    };
    let num = |key: &str| -> Result<f64, ConfigError> {
        let name = format!("{field}.{key}");
        match obj.get(key) {
            None => Err(invalid(name, format!("required for rope_type {ty:?}"))),
            Some(x) => x
                .as_f64()
                .ok_or_else(|| invalid(name, format!("{x} is not a number"))),
        }
    };
    match ty {
        "default" => Ok(RopeScaling::Default),
        "linear" => {
            let factor = num("factor")?;
            if factor.is_nan() || factor < 1.0 {
                return Err(invalid(
                    format!("{field}.factor"),
                    format!("{factor} is below 1"),
                ));
            }
            Ok(RopeScaling::Linear { factor })
        }
        "llama3" => {
            let factor = num("factor")?;
            let low = num("low_freq_factor")?;
            let high = num("high_freq_factor")?;
            let old = num("original_max_position_embeddings")?;
            if factor.is_nan() || factor < 1.0 {
                return Err(invalid(
                    format!("{field}.factor"),
                    format!("{factor} is below 1"),
                ));
            }
            if low.is_nan() || high.is_nan() || high <= low || low <= 0.0 {
                return Err(invalid(
                    format!("{field}.high_freq_factor"),
                    format!("needs 0 < low_freq_factor ({low}) < high_freq_factor ({high})"),
                ));
            }
            if old.is_nan() || old <= 0.0 {
                return Err(invalid(
                    format!("{field}.original_max_position_embeddings"),
                    format!("{old} is not positive"),
                ));
            }
            Ok(RopeScaling::Llama3 {
                factor,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: old,
            })
        }
        other => Err(ConfigError::UnknownRopeType {
            field,
            found: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Result<ModelConfig, ConfigError> {
        ModelConfig::from_json_str(&format!(
            r#"{{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
                 "num_hidden_layers": 3 {extra}}}"#
        ))
    }

    #[test]
    fn llama_defaults_follow_transformers() {
        let c = cfg("").unwrap();
        assert_eq!(c.num_key_value_heads, 4, "kv heads default to heads");
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.vocab_size, 32000);
        assert_eq!(c.intermediate_size, 11008);
        assert_eq!(c.rms_norm_eps, 1e-6);
        assert_eq!(c.rope_theta, 10000.0);
        assert_eq!(c.rope_scaling, RopeScaling::Default);
        assert!(!c.tie_word_embeddings && !c.attention_bias && !c.mlp_bias && !c.qkv_bias());
        assert_eq!(c.layer_sliding_windows, vec![None; 3]);
        assert_eq!(
            (c.bos_token_id, c.eos_token_ids.clone()),
            (Some(1), vec![2])
        );
    }

    #[test]
    fn architecture_from_architectures_when_model_type_absent() {
        let c = ModelConfig::from_json_str(r#"{"architectures": ["MistralForCausalLM"]}"#).unwrap();
        assert_eq!(c.architecture, Architecture::Mistral);
        assert_eq!(c.num_key_value_heads, 8);
        assert_eq!(c.layer_sliding_windows, vec![Some(4096); 32]);
        let e = ModelConfig::from_json_str(r#"{"architectures": ["GPT2LMHeadModel"]}"#);
        assert!(
            matches!(
                e,
                Err(ConfigError::UnknownArchitecture {
                    field: "architectures",
                    ..
                })
            ),
            "{e:?}"
        );
        let e = ModelConfig::from_json_str(r#"{"model_type": "gemma"}"#).unwrap_err();
        assert!(
            e.to_string().contains("model_type") && e.to_string().contains("gemma"),
            "{e}"
        );
    }

    #[test]
    fn head_count_inconsistencies_name_the_field() {
        let e = cfg(r#", "num_key_value_heads": 3"#).unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { field, .. } if field == "num_key_value_heads"));
        let e = ModelConfig::from_json_str(
            r#"{"model_type": "llama", "hidden_size": 66, "num_attention_heads": 4}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, .. } if field == "hidden_size"),
            "{e}"
        );
        // With an explicit head_dim, hidden need not equal heads * head_dim (Mistral Nemo).
        let c = ModelConfig::from_json_str(
            r#"{"model_type": "mistral", "hidden_size": 66, "num_attention_heads": 4,
                "num_key_value_heads": 2, "head_dim": 32}"#,
        )
        .unwrap();
        assert_eq!(c.head_dim, 32);
        let e = ModelConfig::from_json_str(
            r#"{"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4,
                "num_key_value_heads": 4, "head_dim": 32}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, .. } if field == "head_dim"),
            "{e}"
        );
    }

    #[test]
    fn token_ids_int_list_or_null() {
        let c = cfg(r#", "eos_token_id": [128001, 128008, 128009], "bos_token_id": null"#).unwrap();
        assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009]);
        assert_eq!(c.bos_token_id, None);
        let c = ModelConfig::from_json_str(r#"{"model_type": "qwen2"}"#).unwrap();
        assert!(c.eos_token_ids.is_empty() && c.bos_token_id.is_none());
        let e = cfg(r#", "eos_token_id": "two""#).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, .. } if field == "eos_token_id"),
            "{e}"
        );
    }

    #[test]
    fn rope_scaling_variants() {
        let linear = RopeScaling::Linear { factor: 4.0 };
        assert_eq!(
            cfg(r#", "rope_scaling": {"type": "linear", "factor": 4}"#)
                .unwrap()
                .rope_scaling,
            linear
        );
        assert_eq!(
            cfg(r#", "rope_scaling": {"rope_type": "linear", "factor": 4}"#)
                .unwrap()
                .rope_scaling,
            linear
        );
        // rope_type wins over type.
        assert_eq!(
            cfg(r#", "rope_scaling": {"rope_type": "linear", "type": "dynamic", "factor": 4}"#)
                .unwrap()
                .rope_scaling,
            linear
        );
        assert_eq!(
            cfg(r#", "rope_scaling": {"rope_type": "default"}"#)
                .unwrap()
                .rope_scaling,
            RopeScaling::Default
        );
        assert_eq!(
            cfg(r#", "rope_scaling": null"#).unwrap().rope_scaling,
            RopeScaling::Default
        );
        for ty in ["dynamic", "yarn", "longrope", "su"] {
            let e = cfg(&format!(
                r#", "rope_scaling": {{"type": "{ty}", "factor": 2}}"#
            ))
            .unwrap_err();
            assert!(
                matches!(&e, ConfigError::UnknownRopeType { field: "rope_scaling", found } if found == ty),
                "{e}"
            );
        }
        let e = cfg(r#", "rope_scaling": {"rope_type": "llama3", "factor": 8}"#).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, .. } if field == "rope_scaling.low_freq_factor"),
            "{e}"
        );
        let e = cfg(r#", "rope_parameters": {"rope_type": "yarn", "factor": 8}"#).unwrap_err();
        assert!(matches!(
            e,
            ConfigError::UnknownRopeType {
                field: "rope_parameters",
                ..
            }
        ));
        // rope_parameters carries theta.
        let c = cfg(
            r#", "rope_theta": 5, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}"#,
        )
        .unwrap();
        assert_eq!(c.rope_theta, 1e6);
    }

    #[test]
    fn qwen2_sliding_window_rule() {
        let q = |extra: &str| {
            ModelConfig::from_json_str(&format!(
                r#"{{"model_type": "qwen2", "num_hidden_layers": 4, "hidden_size": 64,
                     "num_attention_heads": 4, "num_key_value_heads": 2,
                     "sliding_window": 8 {extra}}}"#
            ))
            .unwrap()
            .layer_sliding_windows
        };
        assert_eq!(q(""), vec![None; 4], "off unless use_sliding_window");
        assert_eq!(
            q(r#", "use_sliding_window": true, "max_window_layers": 2"#),
            vec![None, None, Some(8), Some(8)]
        );
        assert_eq!(
            q(
                r#", "use_sliding_window": true, "layer_types": ["sliding_attention",
                 "full_attention", "full_attention", "sliding_attention"]"#
            ),
            vec![Some(8), None, None, Some(8)]
        );
        let mistral = ModelConfig::from_json_str(
            r#"{"model_type": "mistral", "num_hidden_layers": 2, "sliding_window": null}"#,
        )
        .unwrap();
        assert_eq!(mistral.layer_sliding_windows, vec![None, None]);
    }

    #[test]
    fn bad_types_and_activations_are_errors() {
        let e = cfg(r#", "hidden_act": "gelu""#).unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { field, .. } if field == "hidden_act"));
        let e = cfg(r#", "num_hidden_layers": "two""#).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, reason } if field == "num_hidden_layers"
                && reason.contains("invalid type")),
            "{e}"
        );
        let e = ModelConfig::from_json_str(r#"{"model_type": "qwen2", "attention_bias": true}"#)
            .unwrap_err();
        assert!(matches!(&e, ConfigError::Invalid { field, .. } if field == "attention_bias"));
    }
}
