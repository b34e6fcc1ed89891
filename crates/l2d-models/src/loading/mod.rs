//! Building a [`CausalLm`] from a [`WeightSource`], with the checkpoint checked against the
//! configuration before any tensor is read.
//!
//! The checks, in order: every expected tensor is present ([`LoadError::MissingTensor`]) with
//! the expected shape ([`LoadError::ShapeMismatch`]; a wrong `num_key_value_heads` shows up
//! here on `k_proj`), and no tensor is left over ([`LoadError::UnexpectedTensors`]). Then
//! tensors are read, cast to the requested dtype and checked to have it.
//!
//! Tied heads follow transformers: with `tie_word_embeddings` the head **is** the embedding
//! matrix, and an `lm_head.weight` in the file is ignored; without it, `lm_head.weight` is
//! required.

mod export;
pub mod hub;
mod weight_format;

use std::collections::BTreeSet;
use std::path::Path;

use burn::module::Param;
use burn::nn::Embedding;
use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::config::{ConfigError, ModelConfig};
use crate::decoder::{Attention, CausalLm, DecoderLayer, DecoderModel, FrozenLinear, Mlp, RmsNorm};
use crate::weights::{SafetensorsSource, WeightError, WeightSource};

pub use hub::{ResolveError, default_cache_roots, resolve_model_dir, resolve_model_dir_in};
pub use weight_format::{UnknownWeightFormat, WeightFormat};

/// Errors raised while loading a model. Each names the tensor and/or file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The model folder could not be found.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// A file could not be read or a tensor decoded.
    #[error(transparent)]
    Weight(#[from] WeightError),
    /// An expected tensor is absent.
    #[error("tensor `{name}` is missing from {location}")]
    MissingTensor {
        /// Hugging Face name.
        name: String,
        /// Where it was looked for.
        location: String,
    },
    /// A tensor's shape differs from what the configuration implies.
    #[error("tensor `{name}` in {location} has shape {found:?}, expected {expected:?} ({why})")]
    ShapeMismatch {
        /// Hugging Face name.
        name: String,
        /// Its file.
        location: String,
        /// The shape the configuration implies (PyTorch order).
        expected: Vec<usize>,
        /// The shape stored.
        found: Vec<usize>,
        /// Which configuration fields determine the expected shape (and which of the sizes
        /// the config lacks and took defaults for: the likely cause).
        why: String,
    },
    /// The checkpoint holds tensors the model does not use.
    #[error("unexpected tensors in {location}: {}", names.join(", "))]
    UnexpectedTensors {
        /// Their names.
        names: Vec<String>,
        /// The file of the first one.
        location: String,
    },
    /// A projection could not be held in the requested block format (its input width is
    /// not a multiple of 32, or a value or scale is not finite).
    #[error("cannot quantize `{name}` from {location}: {source}")]
    Quantize {
        /// Hugging Face name.
        name: String,
        /// Its file.
        location: String,
        /// Why.
        source: l2d_quant::QuantError,
    },
    /// The requested dtype is not a float type the model can run in.
    #[error("cannot load weights as {0:?}: use F32, F16 or BF16")]
    UnsupportedDType(DType),
    /// A parameter does not have the requested dtype after loading.
    #[error("tensor `{name}` has dtype {found:?} after loading, expected {expected:?}")]
    DTypeAfterLoad {
        /// Hugging Face name.
        name: String,
        /// The requested dtype.
        expected: DType,
        /// The dtype obtained.
        found: DType,
    },
}

/// What a tensor is, which decides its layout conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    /// A projection weight, stored `[out, in]`, used transposed by burn's `Linear`.
    LinearWeight,
    /// A 1-D bias or norm weight.
    Vector,
    /// The embedding matrix `[vocab, hidden]`.
    Embedding,
}

/// One tensor a configuration expects in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Hugging Face name.
    pub name: String,
    /// Shape in the checkpoint (PyTorch order).
    pub shape: Vec<usize>,
    /// How it is used.
    pub role: TensorRole,
    /// Which configuration fields determine the shape (for error messages).
    pub why: &'static str,
}

/// Every tensor a checkpoint of `config` must hold, in Hugging Face naming and layout.
pub fn expected_tensors(config: &ModelConfig) -> Vec<TensorSpec> {
    let (h, i, hd) = (
        config.hidden_size,
        config.intermediate_size,
        config.head_dim,
    );
    let q = config.num_attention_heads * hd;
    let kv = config.num_key_value_heads * hd;
    let mut specs = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, role, why| {
        specs.push(TensorSpec {
            name,
            shape,
            role,
            why,
        })
    };
    use TensorRole::*;
    push(
        "model.embed_tokens.weight".into(),
        vec![config.vocab_size, h],
        Embedding,
        "vocab_size, hidden_size",
    );
    for l in 0..config.num_hidden_layers {
        let p = format!("model.layers.{l}");
        let attn_why = "num_attention_heads * head_dim, hidden_size";
        let kv_why = "num_key_value_heads * head_dim, hidden_size";
        push(
            format!("{p}.self_attn.q_proj.weight"),
            vec![q, h],
            LinearWeight,
            attn_why,
        );
        push(
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv, h],
            LinearWeight,
            kv_why,
        );
        push(
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv, h],
            LinearWeight,
            kv_why,
        );
        push(
            format!("{p}.self_attn.o_proj.weight"),
            vec![h, q],
            LinearWeight,
            attn_why,
        );
        if config.qkv_bias() {
            push(
                format!("{p}.self_attn.q_proj.bias"),
                vec![q],
                Vector,
                attn_why,
            );
            push(
                format!("{p}.self_attn.k_proj.bias"),
                vec![kv],
                Vector,
                kv_why,
            );
            push(
                format!("{p}.self_attn.v_proj.bias"),
                vec![kv],
                Vector,
                kv_why,
            );
        }
        if config.o_bias() {
            push(
                format!("{p}.self_attn.o_proj.bias"),
                vec![h],
                Vector,
                "hidden_size",
            );
        }
        let mlp_why = "intermediate_size, hidden_size";
        push(
            format!("{p}.mlp.gate_proj.weight"),
            vec![i, h],
            LinearWeight,
            mlp_why,
        );
        push(
            format!("{p}.mlp.up_proj.weight"),
            vec![i, h],
            LinearWeight,
            mlp_why,
        );
        push(
            format!("{p}.mlp.down_proj.weight"),
            vec![h, i],
            LinearWeight,
            mlp_why,
        );
        if config.mlp_bias {
            push(
                format!("{p}.mlp.gate_proj.bias"),
                vec![i],
                Vector,
                "intermediate_size",
            );
            push(
                format!("{p}.mlp.up_proj.bias"),
                vec![i],
                Vector,
                "intermediate_size",
            );
            push(
                format!("{p}.mlp.down_proj.bias"),
                vec![h],
                Vector,
                "hidden_size",
            );
        }
        push(
            format!("{p}.input_layernorm.weight"),
            vec![h],
            Vector,
            "hidden_size",
        );
        push(
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            Vector,
            "hidden_size",
        );
    }
    push("model.norm.weight".into(), vec![h], Vector, "hidden_size");
    if !config.tie_word_embeddings {
        push(
            "lm_head.weight".into(),
            vec![config.vocab_size, h],
            LinearWeight,
            "vocab_size, hidden_size (untied)",
        );
    }
    specs
}

/// Tensors a checkpoint may hold that the model does not read.
fn ignorable(name: &str, config: &ModelConfig) -> bool {
    (config.tie_word_embeddings && name == "lm_head.weight")
        // Older Llama checkpoints store the RoPE buffer; it is recomputed from the config.
        || name.ends_with(".self_attn.rotary_emb.inv_freq")
}

/// Checks a source against a configuration without reading tensor data: presence, shapes,
/// and no leftover tensors.
pub fn validate<S: WeightSource + ?Sized>(
    source: &S,
    config: &ModelConfig,
) -> Result<(), LoadError> {
    let specs = expected_tensors(config);
    for spec in &specs {
        match source.shape(&spec.name) {
            None => {
                return Err(LoadError::MissingTensor {
                    name: spec.name.clone(),
                    location: source.location(&spec.name),
                });
            }
            Some(found) if found != spec.shape => {
                return Err(LoadError::ShapeMismatch {
                    name: spec.name.clone(),
                    location: source.location(&spec.name),
                    expected: spec.shape.clone(),
                    found,
                    why: if config.defaulted.is_empty() {
                        spec.why.to_string()
                    } else {
                        format!(
                            "{}; the config has no {}, so the architecture's default was used",
                            spec.why,
                            config
                                .defaulted
                                .iter()
                                .map(|f| format!("`{f}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                });
            }
            Some(_) => {}
        }
    }
    let expected: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let mut extra: Vec<String> = source
        .names()
        .into_iter()
        .filter(|n| !expected.contains(n.as_str()) && !ignorable(n, config))
        .collect();
    if !extra.is_empty() {
        extra.sort();
        return Err(LoadError::UnexpectedTensors {
            location: source.location(&extra[0]),
            names: extra,
        });
    }
    Ok(())
}

/// Transposes a 2-D tensor's bytes (`[r, c]` -> `[c, r]`), whatever the element width.
fn transpose_2d(data: TensorData) -> TensorData {
    let dtype = data.dtype();
    let (r, c) = (data.shape()[0], data.shape()[1]);
    let e = dtype.size();
    let src = data.as_bytes();
    let mut out = vec![0u8; src.len()];
    for i in 0..r {
        for j in 0..c {
            let from = (i * c + j) * e;
            let to = (j * r + i) * e;
            out[to..to + e].copy_from_slice(&src[from..from + e]);
        }
    }
    TensorData::from_bytes_vec(out, [c, r], dtype)
}

struct Reader<'a, S: WeightSource + ?Sized> {
    source: &'a S,
    device: &'a Device,
    dtype: DType,
    /// Projections in blocks of this format (or their own blocks).
    quantize: Option<l2d_quant::BlockFormat>,
}

impl<S: WeightSource + ?Sized> Reader<'_, S> {
    fn data(&self, name: &str) -> Result<TensorData, LoadError> {
        let data = self.source.tensor_data(name)?;
        data.try_cast(self.dtype).map_err(|e| {
            LoadError::Weight(WeightError::File {
                path: self.source.location(name).into(),
                reason: format!("cannot convert `{name}` to {:?}: {e}", self.dtype),
            })
        })
    }

    fn check<const D: usize>(&self, name: &str, t: Tensor<D>) -> Result<Tensor<D>, LoadError> {
        if t.dtype() != self.dtype {
            return Err(LoadError::DTypeAfterLoad {
                name: name.into(),
                expected: self.dtype,
                found: t.dtype(),
            });
        }
        Ok(t)
    }

    /// A projection weight in burn's `[in, out]` layout.
    fn linear_weight(&self, name: &str) -> Result<Tensor<2>, LoadError> {
        let data = transpose_2d(self.data(name)?);
        self.check(name, Tensor::from_data(data, (self.device, self.dtype)))
    }

    fn matrix(&self, name: &str) -> Result<Tensor<2>, LoadError> {
        self.check(
            name,
            Tensor::from_data(self.data(name)?, (self.device, self.dtype)),
        )
    }

    fn vector(&self, name: &str) -> Result<Tensor<1>, LoadError> {
        self.check(
            name,
            Tensor::from_data(self.data(name)?, (self.device, self.dtype)),
        )
    }

    /// `name` (`[out, in]` in the checkpoint) as blocks: the source's own if it stores
    /// blocks, else its values quantized to `format`.
    fn blocks(
        &self,
        name: &str,
        format: l2d_quant::BlockFormat,
    ) -> Result<l2d_quant::QuantMatrix, LoadError> {
        if let Some(q) = self.source.quantized(name)? {
            return Ok(q);
        }
        let data = self.source.tensor_data(name)?;
        let (rows, cols) = (data.shape()[0], data.shape()[1]);
        let values = data
            .try_cast(DType::F32)
            .ok()
            .and_then(|d| d.try_to_vec::<f32>().ok())
            .ok_or_else(|| {
                LoadError::Weight(WeightError::File {
                    path: self.source.location(name).into(),
                    reason: format!("cannot convert `{name}` to f32"),
                })
            })?;
        let quantize_error = |source| LoadError::Quantize {
            name: name.into(),
            location: self.source.location(name),
            source,
        };
        l2d_quant::QuantMatrix::quantize(format, &values, rows, cols).map_err(quantize_error)
    }

    fn linear(&self, prefix: &str, bias: bool) -> Result<FrozenLinear, LoadError> {
        let name = format!("{prefix}.weight");
        let b = if bias {
            Some(self.vector(&format!("{prefix}.bias"))?)
        } else {
            None
        };
        if let Some(format) = self.quantize {
            return Ok(FrozenLinear::from_quantized(self.blocks(&name, format)?, b));
        }
        Ok(FrozenLinear::new(self.linear_weight(&name)?, b))
    }
}

impl CausalLm {
    /// Loads a model from any weight source (safetensors, GGUF) in Hugging Face naming and
    /// layout, casting every tensor to `dtype` (F32, F16 or BF16).
    ///
    /// The source is validated against the configuration first (see the
    /// [module docs](crate::loading)), so a bad checkpoint fails before any compute.
    pub fn load<S: WeightSource + ?Sized>(
        source: &S,
        config: &ModelConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, LoadError> {
        Self::load_as(source, config, device, WeightFormat::Float(dtype))
    }

    /// [`CausalLm::load`] in any [`WeightFormat`]: with a block format, every projection
    /// (and the head, tied or not) is held in blocks on the CPU, the source's own blocks
    /// where it stores them; the rest is f32.
    pub fn load_as<S: WeightSource + ?Sized>(
        source: &S,
        config: &ModelConfig,
        device: &Device,
        format: WeightFormat,
    ) -> Result<Self, LoadError> {
        let dtype = format.dtype();
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(LoadError::UnsupportedDType(dtype));
        }
        validate(source, config)?;
        let r = Reader {
            source,
            device,
            dtype,
            quantize: format.block_format(),
        };
        let eps = config.rms_norm_eps;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("model.layers.{l}");
            layers.push(DecoderLayer {
                self_attn: Attention {
                    q_proj: r.linear(&format!("{p}.self_attn.q_proj"), config.qkv_bias())?,
                    k_proj: r.linear(&format!("{p}.self_attn.k_proj"), config.qkv_bias())?,
                    v_proj: r.linear(&format!("{p}.self_attn.v_proj"), config.qkv_bias())?,
                    o_proj: r.linear(&format!("{p}.self_attn.o_proj"), config.o_bias())?,
                    num_heads: config.num_attention_heads,
                    num_kv_heads: config.num_key_value_heads,
                    head_dim: config.head_dim,
                },
                mlp: Mlp {
                    gate_proj: r.linear(&format!("{p}.mlp.gate_proj"), config.mlp_bias)?,
                    up_proj: r.linear(&format!("{p}.mlp.up_proj"), config.mlp_bias)?,
                    down_proj: r.linear(&format!("{p}.mlp.down_proj"), config.mlp_bias)?,
                },
                input_layernorm: RmsNorm::new(
                    r.vector(&format!("{p}.input_layernorm.weight"))?,
                    eps,
                ),
                post_attention_layernorm: RmsNorm::new(
                    r.vector(&format!("{p}.post_attention_layernorm.weight"))?,
                    eps,
                ),
                sliding_window: config.layer_sliding_windows[l],
            });
        }
        let model = DecoderModel {
            embed_tokens: Embedding {
                weight: Param::from_tensor(r.matrix("model.embed_tokens.weight")?),
            },
            layers,
            norm: RmsNorm::new(r.vector("model.norm.weight")?, eps),
        };
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(r.linear("lm_head", false)?)
        };
        let mut lm = CausalLm::from_parts(model, lm_head, config.clone());
        if let (Some(format), true) = (r.quantize, config.tie_word_embeddings) {
            // The embedding stays f32 (rows are looked up, and the diffusion path maps the
            // whole matrix); the tied head multiplies blocks of it.
            lm.set_tied_head_blocks(r.blocks("model.embed_tokens.weight", format)?);
        }
        Ok(lm)
    }

    /// Loads a Hugging Face model folder: `name_or_path` is a folder, or an `org/name` found in
    /// the local Hugging Face cache ([`resolve_model_dir`]); its `config.json` and safetensors
    /// weights (single or sharded) are read. Never touches the network.
    pub fn from_pretrained(
        name_or_path: &str,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, LoadError> {
        let dir = resolve_model_dir(name_or_path)?;
        Self::from_dir(&dir, device, dtype)
    }

    /// Loads `dir/config.json` and `dir`'s safetensors weights.
    pub fn from_dir(dir: &Path, device: &Device, dtype: DType) -> Result<Self, LoadError> {
        let config = ModelConfig::from_file(dir.join("config.json"))?;
        let source = SafetensorsSource::open(dir)?;
        Self::load(&source, &config, device, dtype)
    }
}
