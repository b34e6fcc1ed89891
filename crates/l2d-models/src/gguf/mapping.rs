//! llama.cpp → Hugging Face: the config, the tensor names, and the q/k row order.
//!
//! llama.cpp's converter (`convert_hf_to_gguf.py`, `LlamaModel.permute`) reorders the rows of
//! every llama `q_proj` / `k_proj` weight (and bias) from Hugging Face's rotate-half RoPE
//! layout (per head: the first halves of all rotation pairs, then the second halves) to the
//! interleaved layout (pairs adjacent). [`unpermute_rows`] undoes it the way transformers'
//! `reverse_permute_weights` does: per head of `d` rows, GGUF row `2i + s` becomes Hugging
//! Face row `s·d/2 + i`. `k_proj` uses the key/value head count. Qwen2 GGUFs are not
//! permuted (NEOX RoPE), so their rows are kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::tensor::TensorData;
use l2d_quant::{BlockFormat, QuantMatrix};
use serde_json::{Value, json};

use super::{GgufError, GgufFile};
use crate::weights::{WeightError, WeightSource};

/// What differs between the supported architectures.
struct Arch {
    model_type: &'static str,
    class: &'static str,
    /// Whether llama.cpp permuted the q/k rows to the interleaved RoPE layout.
    permuted_qk: bool,
}

fn arch(file: &GgufFile) -> Result<(&str, Arch), GgufError> {
    let name = file
        .get_str("general.architecture")?
        .ok_or_else(|| GgufError::MissingKey {
            path: file.path().to_path_buf(),
            key: "general.architecture".into(),
        })?;
    let arch = match name {
        "llama" => Arch {
            model_type: "llama",
            class: "LlamaForCausalLM",
            permuted_qk: true,
        },
        "qwen2" => Arch {
            model_type: "qwen2",
            class: "Qwen2ForCausalLM",
            permuted_qk: false,
        },
        other => {
            return Err(GgufError::Unsupported {
                path: file.path().to_path_buf(),
                what: format!("architecture `{other}` (llama and qwen2 are)"),
            });
        }
    };
    Ok((name, arch))
}

impl GgufFile {
    /// `general.architecture` (`"llama"`, `"qwen2"`, ...).
    ///
    /// # Errors
    /// [`GgufError::MissingKey`] / [`GgufError::WrongType`].
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")?
            .ok_or_else(|| GgufError::MissingKey {
                path: self.path().to_path_buf(),
                key: "general.architecture".into(),
            })
    }

    fn required_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get_u64(key)?.ok_or_else(|| GgufError::MissingKey {
            path: self.path().to_path_buf(),
            key: key.to_string(),
        })
    }

    /// The model's Hugging Face `config.json`, from the architecture's metadata, with the
    /// keys transformers' GGUF loader maps (`hidden_size` ← `llama.embedding_length`,
    /// `rope_theta` ← `llama.rope.freq_base`, `rms_norm_eps` ←
    /// `llama.attention.layer_norm_rms_epsilon` (its f32 value widened, as transformers
    /// does), `head_dim` ← `llama.rope.dimension_count`, ...) plus what it leaves implicit:
    /// `tie_word_embeddings` (true when there is no `output.weight`), `hidden_act`,
    /// `attention_bias`, `rope_scaling`, `architectures`.
    ///
    /// # Errors
    /// Missing or mistyped keys; [`GgufError::Unsupported`] for other architectures and for
    /// RoPE scaling other than `linear`.
    pub fn config_json(&self) -> Result<Value, GgufError> {
        let (name, arch) = arch(self)?;
        let key = |k: &str| format!("{name}.{k}");
        let hidden = self.required_u64(&key("embedding_length"))?;
        let heads = self.required_u64(&key("attention.head_count"))?;
        if heads == 0 || hidden % heads != 0 {
            return Err(GgufError::InvalidValue {
                path: self.path().to_path_buf(),
                key: key("attention.head_count"),
                reason: format!("{heads} heads do not divide the embedding length {hidden}"),
            });
        }
        let kv_heads = self
            .get_u64(&key("attention.head_count_kv"))?
            .unwrap_or(heads);
        let eps = self
            .get_f64(&key("attention.layer_norm_rms_epsilon"))?
            .ok_or_else(|| GgufError::MissingKey {
                path: self.path().to_path_buf(),
                key: key("attention.layer_norm_rms_epsilon"),
            })?;
        let vocab_size = match self.get_u64(&key("vocab_size"))? {
            Some(v) => v,
            None => match self.get_array("tokenizer.ggml.tokens")? {
                Some(tokens) => tokens.len() as u64,
                None => match self.tensor_info("token_embd.weight") {
                    Some(info) if info.dims.len() == 2 => info.dims[1],
                    _ => {
                        return Err(GgufError::MissingKey {
                            path: self.path().to_path_buf(),
                            key: key("vocab_size"),
                        });
                    }
                },
            },
        };
        // JSON has no NaN or infinity: such a value would silently become a default.
        let finite = |k: String, v: f64| {
            if v.is_finite() {
                Ok(v)
            } else {
                Err(GgufError::InvalidValue {
                    path: self.path().to_path_buf(),
                    key: k,
                    reason: format!("{v} is not a finite number"),
                })
            }
        };
        let eps = finite(key("attention.layer_norm_rms_epsilon"), eps)?;
        let rope_theta = match self.get_f64(&key("rope.freq_base"))? {
            Some(v) => finite(key("rope.freq_base"), v)?,
            None => 10000.0,
        };
        let mut config = json!({
            "architectures": [arch.class],
            "model_type": arch.model_type,
            "hidden_size": hidden,
            "intermediate_size": self.required_u64(&key("feed_forward_length"))?,
            "num_hidden_layers": self.required_u64(&key("block_count"))?,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "rms_norm_eps": eps,
            "rope_theta": rope_theta,
            "vocab_size": vocab_size,
            "hidden_act": "silu",
            "tie_word_embeddings": self.tensor_info("output.weight").is_none(),
            "rope_scaling": self.rope_scaling(name)?,
            "torch_dtype": "float32",
        });
        let obj = config.as_object_mut().expect("a JSON object literal");
        if let Some(ctx) = self.get_u64(&key("context_length"))? {
            obj.insert("max_position_embeddings".into(), ctx.into());
        }
        if name == "llama" {
            let head_dim = match self.get_u64(&key("attention.key_length"))? {
                Some(d) => d,
                None => self
                    .get_u64(&key("rope.dimension_count"))?
                    .unwrap_or(hidden / heads),
            };
            obj.insert("head_dim".into(), head_dim.into());
            let bias = self.tensor_info("blk.0.attn_q.bias").is_some();
            obj.insert("attention_bias".into(), bias.into());
            obj.insert("mlp_bias".into(), false.into());
        } else {
            obj.insert("use_sliding_window".into(), false.into());
        }
        for (gguf_key, hf_key) in [
            ("tokenizer.ggml.bos_token_id", "bos_token_id"),
            ("tokenizer.ggml.eos_token_id", "eos_token_id"),
            ("tokenizer.ggml.padding_token_id", "pad_token_id"),
        ] {
            if let Some(id) = self.get_u64(gguf_key)? {
                obj.insert(hf_key.into(), id.into());
            }
        }
        Ok(config)
    }

    fn rope_scaling(&self, arch: &str) -> Result<Value, GgufError> {
        if self.tensor_info("rope_freqs.weight").is_some() {
            return Err(GgufError::Unsupported {
                path: self.path().to_path_buf(),
                what: "the RoPE frequency-factor tensor `rope_freqs.weight` (llama3 scaling)"
                    .into(),
            });
        }
        let type_key = format!("{arch}.rope.scaling.type");
        match self.get_str(&type_key)? {
            None | Some("none") => Ok(Value::Null),
            Some("linear") => {
                let factor_key = format!("{arch}.rope.scaling.factor");
                let factor = self
                    .get_f64(&factor_key)?
                    .ok_or_else(|| GgufError::MissingKey {
                        path: self.path().to_path_buf(),
                        key: factor_key,
                    })?;
                Ok(json!({"rope_type": "linear", "factor": factor}))
            }
            Some(other) => Err(GgufError::Unsupported {
                path: self.path().to_path_buf(),
                what: format!("RoPE scaling `{other}` (`{type_key}`)"),
            }),
        }
    }
}

/// The Hugging Face name of a GGUF tensor of the llama / qwen2 architectures, or `None` if
/// it has none (`token_embd.weight` → `model.embed_tokens.weight`,
/// `blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`, ...).
pub fn hf_tensor_name(gguf_name: &str) -> Option<String> {
    match gguf_name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, kind) = rest.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Reorders the rows of a llama.cpp q/k projection (weight `[rows, cols]` row-major, or a
/// bias with `cols = 1`) from the interleaved RoPE layout back to Hugging Face's rotate-half
/// layout: for each of the `n_head` heads of `d = rows / n_head` rows, output row
/// `s·d/2 + i` is input row `2i + s` (`s ∈ {0, 1}`, `i < d/2`).
///
/// # Panics
/// If `data.len() != rows · cols` or `rows` is not a multiple of `2 · n_head` (callers
/// validate shapes first).
pub fn unpermute_rows<T: Copy>(data: &[T], rows: usize, cols: usize, n_head: usize) -> Vec<T> {
    assert_eq!(data.len(), rows * cols, "unpermute_rows: data length");
    assert!(
        n_head > 0 && rows.is_multiple_of(2 * n_head),
        "unpermute_rows: {rows} rows for {n_head} heads"
    );
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..n_head {
        for s in 0..2 {
            for i in 0..half {
                let src = h * head_dim + 2 * i + s;
                out.extend_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
struct Entry {
    gguf_name: String,
    /// `Some(heads)` when the rows must be un-permuted with this head count.
    unpermute_heads: Option<usize>,
}

/// The tensors of a GGUF file under their Hugging Face names and layouts, dequantised on
/// request: a [`WeightSource`] for the model loader.
#[derive(Debug, Clone)]
pub struct GgufWeights {
    file: Arc<GgufFile>,
    entries: BTreeMap<String, Entry>,
}

impl GgufWeights {
    /// Maps every tensor of `file` to its Hugging Face name.
    ///
    /// # Errors
    /// [`GgufError::Unsupported`] for another architecture or a tensor with no Hugging Face
    /// equivalent (e.g. llama3's `rope_freqs.weight`); [`GgufError::Tensor`] if a q/k
    /// projection's rows do not split into the heads of the config.
    pub fn new(file: Arc<GgufFile>) -> Result<Self, GgufError> {
        let (_, arch) = arch(&file)?;
        let config = file.config_json()?;
        let heads = config["num_attention_heads"].as_u64().unwrap_or(0) as usize;
        let kv_heads = config["num_key_value_heads"].as_u64().unwrap_or(0) as usize;
        let mut entries = BTreeMap::new();
        for info in file.tensor_infos() {
            let hf = hf_tensor_name(&info.name).ok_or_else(|| GgufError::Unsupported {
                path: file.path().to_path_buf(),
                what: format!("tensor `{}` (no Hugging Face equivalent)", info.name),
            })?;
            let unpermute_heads = if !arch.permuted_qk {
                None
            } else if info.name.contains(".attn_q.") {
                Some(heads)
            } else if info.name.contains(".attn_k.") {
                Some(kv_heads)
            } else {
                None
            };
            if let Some(h) = unpermute_heads {
                let rows = info.shape()[0];
                if h == 0 || rows % (2 * h) != 0 {
                    return Err(GgufError::Tensor {
                        path: file.path().to_path_buf(),
                        tensor: info.name.clone(),
                        reason: format!("{rows} rows do not split into {h} heads of even size"),
                    });
                }
            }
            entries.insert(
                hf,
                Entry {
                    gguf_name: info.name.clone(),
                    unpermute_heads,
                },
            );
        }
        Ok(GgufWeights { file, entries })
    }

    /// Opens a GGUF file and maps its tensors.
    ///
    /// # Errors
    /// As [`GgufFile::open`] and [`GgufWeights::new`].
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self, GgufError> {
        Self::new(Arc::new(GgufFile::open(path)?))
    }

    /// The underlying file.
    pub fn file(&self) -> &Arc<GgufFile> {
        &self.file
    }

    /// The GGUF name of a Hugging Face tensor name.
    pub fn gguf_name(&self, hf_name: &str) -> Option<&str> {
        self.entries.get(hf_name).map(|e| e.gguf_name.as_str())
    }

    fn entry(&self, name: &str) -> Result<&Entry, WeightError> {
        self.entries.get(name).ok_or_else(|| WeightError::Missing {
            name: name.to_string(),
            location: format!("`{}`", self.file.path().display()),
        })
    }
}

impl WeightSource for GgufWeights {
    fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let entry = self.entries.get(name)?;
        self.file.tensor_info(&entry.gguf_name).map(|i| i.shape())
    }

    fn tensor_data(&self, name: &str) -> Result<TensorData, WeightError> {
        let entry = self.entry(name)?;
        let data = self.file.tensor_data(&entry.gguf_name)?;
        let Some(heads) = entry.unpermute_heads else {
            return Ok(data);
        };
        let shape = data.shape().to_vec();
        let dtype = data.dtype();
        let rows = shape[0];
        let row_bytes = data.as_bytes().len() / rows;
        let bytes = unpermute_rows(data.as_bytes(), rows, row_bytes, heads);
        Ok(TensorData::from_bytes_vec(bytes, shape, dtype))
    }

    fn quantized(&self, name: &str) -> Result<Option<QuantMatrix>, WeightError> {
        let entry = self.entry(name)?;
        let info = self
            .file
            .tensor_info(&entry.gguf_name)
            .ok_or_else(|| WeightError::Missing {
                name: name.to_string(),
                location: self.location(name),
            })?;
        let shape = info.shape();
        let Some(format) = BlockFormat::from_ggml_id(info.ggml_type.id()) else {
            return Ok(None);
        };
        if shape.len() != 2 {
            return Ok(None);
        }
        let (rows, cols) = (shape[0], shape[1]);
        let bytes = self.file.tensor_bytes(&entry.gguf_name)?;
        let bytes = match entry.unpermute_heads {
            // Whole rows move, so blocks are permuted like values.
            Some(heads) => unpermute_rows(bytes, rows, bytes.len() / rows.max(1), heads),
            None => bytes.to_vec(),
        };
        QuantMatrix::from_bytes(format, rows, cols, bytes)
            .map(Some)
            .map_err(|e| WeightError::File {
                path: self.file.path().to_path_buf(),
                reason: format!("GGUF tensor `{}`: {e}", entry.gguf_name),
            })
    }

    fn location(&self, name: &str) -> String {
        match self.entries.get(name) {
            Some(e) => format!(
                "`{}` (GGUF tensor `{}`)",
                self.file.path().display(),
                e.gguf_name
            ),
            None => format!("`{}`", self.file.path().display()),
        }
    }
}
