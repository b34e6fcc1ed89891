//! LoRA (Hu et al., 2021) of the frozen decoder: trainable low-rank updates
//! `W x + b + (x A B)·alpha/rank` of chosen projections of every layer. L2D's paper compares
//! the diffusion path with such an adapter at an equal number of trainable parameters; this
//! module is that baseline, and [`LoraDelta`] is also the diffusion path's own LoRA.
//!
//! Files are safetensors in the layout of Hugging Face PEFT's `adapter_model.safetensors`:
//! `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` (`[rank, d_in]`) and
//! `...lora_B.weight` (`[d_out, rank]`), with this metadata in the header:
//!
//! | key | value |
//! | --- | --- |
//! | `format` | `l2d-lora` |
//! | `format_version` | `1` |
//! | `lora_config` | PEFT's `adapter_config.json` fields: `r`, `lora_alpha`, `target_modules`, `init_lora_weights` |
//! | `architecture` | the base `model_type` |
//! | `base_fingerprint` | [`base_fingerprint`] of the base weights it was trained on |
//! | `num_parameters` | the adapter's parameter count |
//!
//! A PEFT adapter file without that metadata loads when an `adapter_config.json` lies beside
//! it.
//!
//! ```
//! use burn::module::Module;
//! use burn::tensor::{DType, Device};
//! use l2d_models::config::ModelConfig;
//! use l2d_models::decoder::{CausalLm, Projection};
//! use l2d_models::lora::{DecoderLora, LoraConfig};
//!
//! let config = ModelConfig::from_json_str(
//!     r#"{"model_type": "llama", "vocab_size": 64, "hidden_size": 32,
//!         "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
//!         "num_key_value_heads": 2}"#,
//! )
//! .unwrap();
//! let device = Device::flex();
//! let base = CausalLm::random(&config, &device, DType::F32, 0);
//! let lora = DecoderLora::init(&LoraConfig::new(4, 8.0, Projection::ALL.to_vec()), &base, 1)
//!     .unwrap();
//! // Per layer and unit of rank: q and o (32 + 32), k and v (32 + 16), gate, up and down
//! // (32 + 64); two layers, rank 4.
//! let per_rank = 2 * (32 + 32) + 2 * (32 + 16) + 3 * (32 + 64);
//! assert_eq!(lora.num_params(), 2 * 4 * per_rank);
//! assert_eq!(lora.num_params(), lora.config().num_params(&config));
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::tensor::{DType, Tensor, TensorData};
use l2d_core::HostRng;
use serde_json::{Value, json};

use crate::config::ModelConfig;
use crate::decoder::{CausalLm, DecoderDelta, FrozenLinear, LayerDelta, Projection};
use crate::diffusion::adapter::{AdapterMetadata, base_fingerprint};
use crate::weights::{SafetensorsSource, WeightSource, serialize_f32, write_atomically};

/// The `format` metadata entry of a LoRA file.
pub const LORA_FORMAT: &str = "l2d-lora";

/// The key prefix PEFT gives a causal LM's tensors.
const PEFT_PREFIX: &str = "base_model.model.";

/// A low-rank delta `(x A B)·scale`.
#[derive(Module, Debug)]
pub struct LoraDelta {
    /// `A`, `[d_in, rank]`.
    pub a: Param<Tensor<2>>,
    /// `B`, `[rank, d_out]`, initialised to zero.
    pub b: Param<Tensor<2>>,
    /// `alpha / rank`.
    pub scale: f64,
}

impl LoraDelta {
    /// The delta, in `x`'s dtype.
    ///
    /// # Shapes
    /// - `x`: `[batch, n, d_in]`; output: `[batch, n, d_out]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, d_in] = x.dims();
        let dtype = x.dtype();
        let a = self.a.val().cast(dtype);
        let bm = self.b.val().cast(dtype);
        let d_out = bm.dims()[1];
        x.reshape([b * n, d_in])
            .matmul(a)
            .matmul(bm)
            .mul_scalar(self.scale)
            .reshape([b, n, d_out])
    }

    /// The dense update `A B · scale`.
    ///
    /// # Shapes
    /// - output: `[d_in, d_out]`
    pub fn dense(&self) -> Tensor<2> {
        self.a.val().matmul(self.b.val()).mul_scalar(self.scale)
    }
}

/// Errors of LoRA adapters, each naming the field, file or tensor.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// An invalid configuration value.
    #[error("invalid LoRA `{field}`: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be read, or is not a LoRA adapter for this base.
    #[error("LoRA file `{path}`: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor is missing from a file or has the wrong shape.
    #[error("LoRA file `{path}`: tensor `{name}`: {reason}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The file was trained on other base weights.
    #[error(
        "LoRA file `{path}` was trained on another base (fingerprint {adapter}, this base {base})"
    )]
    FingerprintMismatch {
        /// The file.
        path: PathBuf,
        /// The recorded fingerprint.
        adapter: String,
        /// The base's fingerprint.
        base: String,
    },
    /// The adapter could not be written.
    #[error("cannot write LoRA file `{path}`: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// How a fresh adapter draws its `A` factors (`B` starts at zero either way, so the adapted
/// model starts as the base). The names are PEFT's `init_lora_weights` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoraInit {
    /// PEFT's default (`init_lora_weights = true`): uniform in `±1/√d_in`, its
    /// `kaiming_uniform_(a = √5)`.
    #[default]
    KaimingUniform,
    /// PEFT's `"gaussian"`: normal with standard deviation `1/rank`. The authors' `LoRA`
    /// module draws the diffusion path's factors this way.
    Gaussian,
}

impl LoraInit {
    /// Every initialisation.
    pub const ALL: [LoraInit; 2] = [LoraInit::KaimingUniform, LoraInit::Gaussian];

    /// The name configurations and flags use (`kaiming-uniform`, `gaussian`; serde's too).
    pub fn name(self) -> &'static str {
        match self {
            LoraInit::KaimingUniform => "kaiming-uniform",
            LoraInit::Gaussian => "gaussian",
        }
    }

    /// PEFT's `init_lora_weights` value: `true` or `"gaussian"`.
    pub fn to_json(self) -> Value {
        match self {
            LoraInit::KaimingUniform => Value::Bool(true),
            LoraInit::Gaussian => Value::String(LoraInit::Gaussian.name().into()),
        }
    }

    /// Reads PEFT's `init_lora_weights` (`true`, `"gaussian"`); other values (`false`,
    /// `"pissa"`, ...) are refused.
    ///
    /// # Errors
    /// [`LoraError::Config`] naming `init_lora_weights`.
    pub fn from_json(value: &Value) -> Result<Self, LoraError> {
        match value {
            Value::Bool(true) => Ok(LoraInit::KaimingUniform),
            Value::String(s) if s == LoraInit::Gaussian.name() => Ok(LoraInit::Gaussian),
            other => Err(LoraError::Config {
                field: "init_lora_weights",
                reason: format!("{other} is not one of true, \"gaussian\""),
            }),
        }
    }

    /// Draws an `A` factor of `n = d_in × rank` values from `rng`.
    fn draw(self, rng: &mut HostRng, d_in: usize, rank: usize) -> Vec<f32> {
        let n = d_in * rank;
        match self {
            LoraInit::KaimingUniform => {
                let bound = 1.0 / (d_in as f64).sqrt();
                rng.uniform_vec(n)
                    .into_iter()
                    .map(|u| ((2.0 * u - 1.0) * bound) as f32)
                    .collect()
            }
            LoraInit::Gaussian => {
                let std = 1.0 / rank as f64;
                rng.normal_vec(n)
                    .into_iter()
                    .map(|z| (z * std) as f32)
                    .collect()
            }
        }
    }
}

impl std::fmt::Display for LoraInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LoraInit {
    type Err = LoraError;

    /// The names of [`LoraInit::name`].
    fn from_str(s: &str) -> Result<Self, LoraError> {
        LoraInit::ALL
            .into_iter()
            .find(|init| init.name() == s)
            .ok_or_else(|| LoraError::Config {
                field: "init",
                reason: format!(
                    "{s:?} is not one of {}",
                    LoraInit::ALL.map(LoraInit::name).join(", ")
                ),
            })
    }
}

/// Rank, scaling, target projections and initialisation of a LoRA adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// The rank `r` of every update.
    pub rank: usize,
    /// `alpha`; updates are scaled by `alpha / rank`.
    pub alpha: f64,
    /// The projections of each layer that get an update.
    pub targets: Vec<Projection>,
    /// How [`DecoderLora::init`] draws the `A` factors.
    pub init: LoraInit,
}

impl LoraConfig {
    /// A configuration with PEFT's default initialisation (see [`LoraConfig::validate`]).
    pub fn new(rank: usize, alpha: f64, targets: Vec<Projection>) -> Self {
        Self {
            rank,
            alpha,
            targets,
            init: LoraInit::default(),
        }
    }

    /// The same configuration with `A` drawn by `init`.
    pub fn with_init(mut self, init: LoraInit) -> Self {
        self.init = init;
        self
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Refuses a zero rank, a non-finite alpha, no targets or a target named twice.
    ///
    /// # Errors
    /// [`LoraError::Config`] naming the field.
    pub fn validate(&self) -> Result<(), LoraError> {
        let bad = |field, reason: &str| {
            Err(LoraError::Config {
                field,
                reason: reason.to_string(),
            })
        };
        if self.rank == 0 {
            return bad("rank", "must be at least 1");
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return bad("alpha", "must be finite and positive");
        }
        if self.targets.is_empty() {
            return bad("targets", "name at least one projection");
        }
        let mut seen = self.targets.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != self.targets.len() {
            return bad("targets", "a projection is named twice");
        }
        Ok(())
    }

    /// Trainable parameters of this configuration on a model of `config`'s sizes.
    pub fn num_params(&self, config: &ModelConfig) -> usize {
        let per_rank: usize = self
            .targets
            .iter()
            .map(|&p| {
                let (d_in, d_out) = projection_dims(config, p);
                d_in + d_out
            })
            .sum();
        per_rank * self.rank * config.num_hidden_layers
    }

    /// The rank whose parameter count on `config`'s sizes is closest to `params` (at least 1):
    /// a baseline "of equal trainable parameters".
    pub fn rank_for_params(config: &ModelConfig, targets: &[Projection], params: usize) -> usize {
        let one = LoraConfig::new(1, 1.0, targets.to_vec()).num_params(config);
        if one == 0 {
            return 1;
        }
        ((params as f64 / one as f64).round() as usize).max(1)
    }

    /// PEFT's `adapter_config.json` fields.
    pub fn to_json(&self) -> Value {
        json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": self.rank,
            "lora_alpha": self.alpha,
            "target_modules": self.targets.iter().map(|p| p.name()).collect::<Vec<_>>(),
            "bias": "none",
            "lora_dropout": 0.0,
            "init_lora_weights": self.init.to_json(),
        })
    }

    /// Reads `r`, `lora_alpha`, `target_modules` (a list of names) and `init_lora_weights`
    /// (PEFT's default `true` when absent) from PEFT's fields.
    ///
    /// # Errors
    /// [`LoraError::Config`] naming the field.
    pub fn from_json(value: &Value) -> Result<Self, LoraError> {
        let bad = |field, reason: String| LoraError::Config { field, reason };
        let rank = value
            .get("r")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("r", "missing or not a whole number".into()))?;
        let alpha = value
            .get("lora_alpha")
            .and_then(Value::as_f64)
            .ok_or_else(|| bad("lora_alpha", "missing or not a number".into()))?;
        let targets = value
            .get("target_modules")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("target_modules", "missing or not a list".into()))?
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| bad("target_modules", format!("{v} is not a name")))?
                    .parse::<Projection>()
                    .map_err(|e| bad("target_modules", e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let init = value
            .get("init_lora_weights")
            .map_or(Ok(LoraInit::default()), LoraInit::from_json)?;
        let config = LoraConfig::new(rank as usize, alpha, targets).with_init(init);
        config.validate()?;
        Ok(config)
    }
}

/// `(d_in, d_out)` of projection `p` in a model of `config`'s sizes.
fn projection_dims(config: &ModelConfig, p: Projection) -> (usize, usize) {
    let hidden = config.hidden_size;
    let q = config.num_attention_heads * config.head_dim;
    let kv = config.num_key_value_heads * config.head_dim;
    let inter = config.intermediate_size;
    match p {
        Projection::Q => (hidden, q),
        Projection::K | Projection::V => (hidden, kv),
        Projection::O => (q, hidden),
        Projection::Gate | Projection::Up => (hidden, inter),
        Projection::Down => (inter, hidden),
    }
}

/// One layer's updates.
#[derive(Module, Debug)]
pub struct LayerLora {
    /// Update of `self_attn.q_proj`.
    pub q_proj: Option<LoraDelta>,
    /// Update of `self_attn.k_proj`.
    pub k_proj: Option<LoraDelta>,
    /// Update of `self_attn.v_proj`.
    pub v_proj: Option<LoraDelta>,
    /// Update of `self_attn.o_proj`.
    pub o_proj: Option<LoraDelta>,
    /// Update of `mlp.gate_proj`.
    pub gate_proj: Option<LoraDelta>,
    /// Update of `mlp.up_proj`.
    pub up_proj: Option<LoraDelta>,
    /// Update of `mlp.down_proj`.
    pub down_proj: Option<LoraDelta>,
}

impl LayerLora {
    fn empty() -> Self {
        Self {
            q_proj: None,
            k_proj: None,
            v_proj: None,
            o_proj: None,
            gate_proj: None,
            up_proj: None,
            down_proj: None,
        }
    }

    fn slot(&mut self, p: Projection) -> &mut Option<LoraDelta> {
        match p {
            Projection::Q => &mut self.q_proj,
            Projection::K => &mut self.k_proj,
            Projection::V => &mut self.v_proj,
            Projection::O => &mut self.o_proj,
            Projection::Gate => &mut self.gate_proj,
            Projection::Up => &mut self.up_proj,
            Projection::Down => &mut self.down_proj,
        }
    }

    /// The update of projection `p`, if any.
    pub fn get(&self, p: Projection) -> Option<&LoraDelta> {
        match p {
            Projection::Q => self.q_proj.as_ref(),
            Projection::K => self.k_proj.as_ref(),
            Projection::V => self.v_proj.as_ref(),
            Projection::O => self.o_proj.as_ref(),
            Projection::Gate => self.gate_proj.as_ref(),
            Projection::Up => self.up_proj.as_ref(),
            Projection::Down => self.down_proj.as_ref(),
        }
    }
}

impl LayerDelta for LayerLora {
    fn delta(&self, p: Projection, x: Tensor<3>) -> Option<Tensor<3>> {
        self.get(p).map(|d| d.forward(x))
    }
}

/// A LoRA adapter of a whole decoder: one [`LayerLora`] per layer. Pass it to
/// [`CausalLm::forward_hidden_adapted`] to run the adapted model, or fold it into the weights
/// with [`DecoderLora::merge_into`].
#[derive(Module, Debug)]
pub struct DecoderLora {
    /// Per-layer updates.
    pub layers: Vec<LayerLora>,
    /// The configuration.
    #[module(skip)]
    config: LoraConfig,
}

impl DecoderDelta for DecoderLora {
    fn layer(&self, index: usize) -> Option<&dyn LayerDelta> {
        self.layers.get(index).map(|l| l as &dyn LayerDelta)
    }
}

impl DecoderLora {
    /// A fresh adapter for `base` (f32, on its device), as PEFT initialises one: `A` drawn by
    /// the configuration's [`LoraInit`], `B` zero, so the adapted model starts as the base.
    /// Draws are keyed by `(seed, layer, projection)`.
    ///
    /// # Errors
    /// [`LoraError::Config`] for an invalid configuration or a rank above the widest target
    /// projection's larger side.
    pub fn init(config: &LoraConfig, base: &CausalLm, seed: u64) -> Result<Self, LoraError> {
        config.validate()?;
        // A rank above a projection's larger side adds nothing a full update lacks, and an
        // unbounded one would allocate without limit.
        let widest = base
            .model
            .layers
            .iter()
            .flat_map(|l| config.targets.iter().map(|&p| l.projection(p)))
            .map(|p| p.d_in().max(p.d_out()))
            .max()
            .unwrap_or(0);
        if config.rank > widest {
            return Err(LoraError::Config {
                field: "rank",
                reason: format!(
                    "{} exceeds the widest target projection ({widest})",
                    config.rank
                ),
            });
        }
        let device = base.device();
        let rng = HostRng::new(seed);
        let layers = base
            .model
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let mut out = LayerLora::empty();
                for &p in &config.targets {
                    let linear = layer.projection(p);
                    let (d_in, d_out) = (linear.d_in(), linear.d_out());
                    let mut r = rng.derive(i as u64).derive(p as u64);
                    let a = config.init.draw(&mut r, d_in, config.rank);
                    let a = Tensor::<2>::from_data(
                        TensorData::new(a, [d_in, config.rank]),
                        (&device, DType::F32),
                    );
                    let b = Tensor::<2>::zeros([config.rank, d_out], (&device, DType::F32));
                    *out.slot(p) = Some(LoraDelta {
                        a: Param::from_tensor(a),
                        b: Param::from_tensor(b),
                        scale: config.scale(),
                    });
                }
                out
            })
            .collect();
        Ok(Self {
            layers,
            config: config.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// Every update as `(layer, projection, delta)`.
    pub fn deltas(&self) -> impl Iterator<Item = (usize, Projection, &LoraDelta)> {
        self.layers.iter().enumerate().flat_map(|(i, l)| {
            Projection::ALL
                .into_iter()
                .filter_map(move |p| l.get(p).map(|d| (i, p, d)))
        })
    }

    /// The tensors under PEFT's names and layout (`lora_A.weight` `[rank, d_in]`,
    /// `lora_B.weight` `[d_out, rank]`).
    pub fn tensors(&self) -> Vec<(String, TensorData)> {
        self.deltas()
            .flat_map(|(i, p, d)| {
                let key = peft_key(i, p);
                [
                    (
                        format!("{key}.lora_A.weight"),
                        d.a.val().transpose().into_data(),
                    ),
                    (
                        format!("{key}.lora_B.weight"),
                        d.b.val().transpose().into_data(),
                    ),
                ]
            })
            .collect()
    }

    /// Writes the adapter (PEFT layout, metadata of the [module docs](self)) atomically.
    ///
    /// # Errors
    /// [`LoraError::Write`] naming the file.
    pub fn save(&self, path: impl AsRef<Path>, base: &CausalLm) -> Result<(), LoraError> {
        let path = path.as_ref();
        let write_err = |reason: String| LoraError::Write {
            path: path.to_path_buf(),
            reason,
        };
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), LORA_FORMAT.to_string());
        meta.insert("format_version".to_string(), "1".to_string());
        meta.insert("lora_config".to_string(), self.config.to_json().to_string());
        meta.insert(
            "architecture".to_string(),
            base.config().architecture.model_type().to_string(),
        );
        meta.insert("base_fingerprint".to_string(), base_fingerprint(base));
        meta.insert("num_parameters".to_string(), self.num_params().to_string());
        let bytes = serialize_f32(self.tensors(), meta).map_err(|e| write_err(e.to_string()))?;
        write_atomically(path, &bytes).map_err(|e| write_err(e.to_string()))
    }

    /// Loads an adapter file for `base` (f32, on its device): this crate's files, or a PEFT
    /// `adapter_model.safetensors` with its `adapter_config.json` beside it. Unless `force`,
    /// a recorded base fingerprint must match `base`'s.
    ///
    /// # Errors
    /// [`LoraError::File`] (unreadable, another format or architecture, no configuration,
    /// unexpected tensors), [`LoraError::Tensor`] (missing or misshapen),
    /// [`LoraError::FingerprintMismatch`], [`LoraError::Config`]; each names the file.
    pub fn load(path: impl AsRef<Path>, base: &CausalLm, force: bool) -> Result<Self, LoraError> {
        let path = path.as_ref();
        let file_err = |reason: String| LoraError::File {
            path: path.to_path_buf(),
            reason,
        };
        let meta = AdapterMetadata::read(path).map_err(|e| file_err(e.to_string()))?;
        // PEFT's files carry safetensors' `format: pt`.
        if let Some(format) = &meta.format
            && format != LORA_FORMAT
            && format != "pt"
        {
            return Err(file_err(format!(
                "format is {format:?}, not a LoRA adapter ({LORA_FORMAT:?})"
            )));
        }
        if let Some(version) = meta.raw.get("format_version")
            && version != "1"
        {
            return Err(file_err(format!("format_version {version} is not 1")));
        }
        if let Some(arch) = &meta.architecture
            && arch != base.config().architecture.model_type()
        {
            return Err(file_err(format!(
                "trained on a {arch} model, the base is {}",
                base.config().architecture.model_type()
            )));
        }
        let config = match meta.raw.get("lora_config") {
            Some(text) => serde_json::from_str::<Value>(text)
                .map_err(|e| file_err(format!("lora_config is not JSON: {e}")))
                .and_then(|v| LoraConfig::from_json(&v))?,
            None => {
                let sibling = path.with_file_name("adapter_config.json");
                let text = std::fs::read_to_string(&sibling).map_err(|e| {
                    file_err(format!(
                        "no lora_config in the metadata and no readable {}: {e}",
                        sibling.display()
                    ))
                })?;
                let value: Value = serde_json::from_str(&text).map_err(|e| LoraError::File {
                    path: sibling.clone(),
                    reason: format!("not JSON: {e}"),
                })?;
                LoraConfig::from_json(&value)?
            }
        };
        if let Some(recorded) = &meta.base_fingerprint
            && !force
        {
            let actual = base_fingerprint(base);
            if &actual != recorded {
                return Err(LoraError::FingerprintMismatch {
                    path: path.to_path_buf(),
                    adapter: recorded.clone(),
                    base: actual,
                });
            }
        }
        let source = SafetensorsSource::from_file(path).map_err(|e| file_err(e.to_string()))?;
        let names: BTreeMap<String, String> = source
            .names()
            .into_iter()
            .map(|n| (n.strip_prefix(PEFT_PREFIX).unwrap_or(&n).to_string(), n))
            .collect();
        let mut used = 0usize;
        let device = base.device();
        let mut fetch = |name: String, shape: [usize; 2]| -> Result<Tensor<2>, LoraError> {
            let tensor_err = |reason: String| LoraError::Tensor {
                path: path.to_path_buf(),
                name: name.clone(),
                reason,
            };
            let stored = names
                .get(&name)
                .ok_or_else(|| tensor_err("missing".into()))?;
            let got = source.shape(stored).unwrap_or_default();
            if got != shape {
                return Err(tensor_err(format!("shape {got:?}, expected {shape:?}")));
            }
            let data = source
                .tensor_data(stored)
                .map_err(|e| tensor_err(e.to_string()))?;
            if data
                .clone()
                .convert::<f32>()
                .iter::<f32>()
                .any(|v| !v.is_finite())
            {
                return Err(tensor_err("holds a non-finite value".into()));
            }
            used += 1;
            Ok(Tensor::<2>::from_data(data.convert::<f32>(), (&device, DType::F32)).transpose())
        };
        let mut layers = Vec::with_capacity(base.model.layers.len());
        for (i, layer) in base.model.layers.iter().enumerate() {
            let mut out = LayerLora::empty();
            for &p in &config.targets {
                let linear = layer.projection(p);
                let key = peft_key(i, p)
                    .strip_prefix(PEFT_PREFIX)
                    .map(str::to_string)
                    .unwrap_or_default();
                let a = fetch(format!("{key}.lora_A.weight"), [config.rank, linear.d_in()])?;
                let b = fetch(
                    format!("{key}.lora_B.weight"),
                    [linear.d_out(), config.rank],
                )?;
                *out.slot(p) = Some(LoraDelta {
                    a: Param::from_tensor(a),
                    b: Param::from_tensor(b),
                    scale: config.scale(),
                });
            }
            layers.push(out);
        }
        if used != names.len() {
            let mut extra: Vec<&String> = names.keys().collect();
            extra.retain(|n| {
                !(0..base.model.layers.len()).any(|i| {
                    config.targets.iter().any(|&p| {
                        let key = peft_key(i, p);
                        let key = key.strip_prefix(PEFT_PREFIX).unwrap_or(&key);
                        n.as_str() == format!("{key}.lora_A.weight")
                            || n.as_str() == format!("{key}.lora_B.weight")
                    })
                })
            });
            return Err(file_err(format!(
                "{} tensors this configuration does not have, e.g. {:?}",
                extra.len(),
                extra.first()
            )));
        }
        Ok(Self { layers, config })
    }

    /// `base` with every update folded into its weights, `W + A B·scale` (so generation runs
    /// at the base model's speed). Float weights keep their dtype; a quantized projection that
    /// gets an update becomes f32.
    pub fn merge_into(&self, base: &CausalLm) -> CausalLm {
        let mut merged = base.clone();
        let device = base.device();
        for (i, p, delta) in self.deltas() {
            let Some(layer) = merged.model.layers.get_mut(i) else {
                continue;
            };
            let old = layer.projection(p);
            let dtype = match &old.weight {
                Some(w) => w.val().dtype(),
                None => DType::F32,
            };
            let w = old.weight_tensor(&device, DType::F32) + delta.dense();
            let bias = old.bias.as_ref().map(|b| b.val());
            *layer.projection_mut(p) = FrozenLinear::new(w.cast(dtype), bias);
        }
        merged
    }
}

/// PEFT's key of projection `p` of layer `i`, without the `.lora_A.weight` suffix.
fn peft_key(i: usize, p: Projection) -> String {
    format!("{PEFT_PREFIX}model.layers.{i}.{}", p.path())
}
