//! The `l2d train` configuration: a TOML file whose sections mirror the run's parts, every
//! key optional except the model and the training data. Unknown keys are errors naming the
//! key.
//!
//! ```toml
//! seed = 42
//! method = "l2d"                   # or "lora": the LoRA baseline of `[lora]`
//!
//! [model]
//! path = ".models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # or a Hugging Face folder
//! dtype = "f32"                              # or "bf16", or "q8_0"/"q4_0"/"q4_1" (base only)
//!
//! [data]
//! train = ["fixtures/train/arithmetic.jsonl"]
//! validation_fraction = 0.1        # or: validation = ["valid.jsonl"]
//! max_seq_len = 256
//! layout = "conversation"          # or "turn" (one example per assistant turn)
//! classes = []                     # guidance classes, e.g. ["math", "coding", "general_qa"]
//!
//! [l2d]                            # the reference's hyper-parameter names
//! preset = "reference"             # or "small"; then any key overrides it
//! flow_lora_rank = 32
//!
//! [lora]                          # only with method = "lora"
//! rank = "match-l2d"               # or a number; "match-l2d": the parameters of `[l2d]`
//! targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
//! # alpha = 123.0                  # default: the rank (updates scaled by 1)
//! init = "kaiming-uniform"         # PEFT's default; or "gaussian" (N(0, 1/rank²), the authors')
//!
//! [optim]
//! peak_lr = 1e-4
//! min_lr = 1e-6
//! warmup_steps = 100
//! warmup = "linear"                # or "log" (DeepSpeed's WarmupDecayLR)
//! decay = "linear"                 # or "cosine", "constant"
//! beta1 = 0.9
//! beta2 = 0.95
//! eps = 1e-8
//! weight_decay = 0.01
//! max_grad_norm = 1.0
//!
//! [train]
//! micro_batch_size = 4
//! accumulation_steps = 8           # 32 sequences per optimizer step, as the reference
//! epochs = 1                       # or steps = N
//! max_nonfinite = 10
//! log_every = 10
//!
//! [validation]
//! every = 100
//! batch_size = 4
//! t_bins = 10
//! nstep_grid_points = 8            # midpoint on 8 grid points (7 steps), as the reference's
//! nstep_batches = 2                # `compute_nstep_loss = 8`
//!
//! [output]
//! dir = "runs/smollm2"
//! checkpoint_every = 100
//! keep_last = 3
//! ```

use std::path::{Path, PathBuf};

use l2d_models::config::ModelConfig;
use l2d_models::decoder::Projection;
use l2d_models::diffusion::diffusion_param_count;
use l2d_models::l2d_config::L2dConfig;
use l2d_models::lora::{LoraConfig, LoraInit};
use serde::{Deserialize, Serialize};

use crate::data::Layout;
use crate::error::{Result, TrainError};
use crate::optim::AdamWConfig;
use crate::schedule::{Decay, Warmup};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Seed of everything random: initialisation, data order, split, timesteps, noise.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The base model.
    pub model: ModelSection,
    /// The chat data.
    pub data: DataSection,
    /// What is trained: the L2D diffusion path or a LoRA baseline.
    #[serde(default)]
    pub method: Method,
    /// The L2D hyper-parameters (reference names), as a TOML table.
    #[serde(default)]
    pub l2d: toml::Table,
    /// The LoRA baseline (`method = "lora"`).
    #[serde(default)]
    pub lora: LoraSection,
    /// Optimizer and learning-rate schedule.
    #[serde(default)]
    pub optim: OptimSection,
    /// Batching and run length.
    #[serde(default)]
    pub train: TrainSection,
    /// Validation.
    #[serde(default)]
    pub validation: ValidationSection,
    /// Where outputs go.
    #[serde(default)]
    pub output: OutputSection,
}

fn default_seed() -> u64 {
    42
}

/// What a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The L2D diffusion path of `[l2d]`.
    #[default]
    L2d,
    /// A LoRA of the decoder's projections (`[lora]`): the baseline of the paper's
    /// comparisons.
    Lora,
}

/// `[lora]`: the LoRA baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraSection {
    /// The rank: a number, or `"match-l2d"` for the rank whose parameter count is closest to
    /// the diffusion path of `[l2d]` on this base ("of equal trainable parameters").
    pub rank: LoraRank,
    /// `alpha` (updates are scaled by `alpha / rank`); default: the rank.
    pub alpha: Option<f64>,
    /// Projections of each layer that get an update (`q_proj`, ..., `down_proj`).
    pub targets: Vec<String>,
    /// How the `A` factors are drawn: `"kaiming-uniform"` (PEFT's default) or `"gaussian"`.
    pub init: LoraInit,
}

/// [`LoraSection::rank`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LoraRank {
    /// A fixed rank.
    Fixed(usize),
    /// `"match-l2d"`.
    Match(MatchL2d),
}

/// The string `"match-l2d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchL2d {
    /// `"match-l2d"`.
    #[serde(rename = "match-l2d")]
    MatchL2d,
}

impl Default for LoraSection {
    fn default() -> Self {
        LoraSection {
            rank: LoraRank::Match(MatchL2d::MatchL2d),
            alpha: None,
            targets: Projection::ALL
                .iter()
                .map(|p| p.name().to_string())
                .collect(),
            init: LoraInit::default(),
        }
    }
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A Hugging Face model folder, an `org/name` of the local cache, or a GGUF file.
    pub path: String,
    /// The base weights: `f32`, `bf16` or `f16`, or `q8_0` / `q4_0` / `q4_1` for projections
    /// kept in blocks on the CPU (the diffusion path is always f32).
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// An existing adapter to continue from (its optimizer state is not restored; use
    /// `--resume` for that).
    #[serde(default)]
    pub init_adapter: Option<PathBuf>,
}

fn default_dtype() -> String {
    "f32".into()
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Training chat files (`.jsonl` or `.parquet`).
    pub train: Vec<PathBuf>,
    /// Validation chat files.
    #[serde(default)]
    pub validation: Vec<PathBuf>,
    /// Hold out this fraction of the training conversations instead.
    #[serde(default)]
    pub validation_fraction: Option<f64>,
    /// Maximum inputs per sequence.
    #[serde(default = "default_max_seq_len")]
    pub max_seq_len: usize,
    /// `conversation` or `turn`.
    #[serde(default)]
    pub layout: Layout,
    /// Guidance classes (empty: none); must match `l2d.guidance_modulation_num_classes`.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Which named chat template to use.
    #[serde(default)]
    pub template_name: Option<String>,
    /// A chat template file (`.jinja`) replacing the model's.
    #[serde(default)]
    pub template_file: Option<PathBuf>,
    /// Shuffle the training examples each epoch.
    #[serde(default = "yes")]
    pub shuffle: bool,
}

fn default_max_seq_len() -> usize {
    2048
}

fn yes() -> bool {
    true
}

/// `[optim]`: AdamW and the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimSection {
    /// Peak learning rate.
    pub peak_lr: f64,
    /// Minimum learning rate (start of warmup and end of decay).
    pub min_lr: f64,
    /// Warmup steps.
    pub warmup_steps: usize,
    /// Warmup shape.
    pub warmup: Warmup,
    /// Decay shape.
    pub decay: Decay,
    /// AdamW β₁.
    pub beta1: f64,
    /// AdamW β₂.
    pub beta2: f64,
    /// AdamW ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: none).
    pub max_grad_norm: f64,
}

impl Default for OptimSection {
    fn default() -> Self {
        let a = AdamWConfig::default();
        OptimSection {
            peak_lr: 1e-4,
            min_lr: 1e-6,
            warmup_steps: 100,
            warmup: Warmup::Linear,
            decay: Decay::Linear,
            beta1: a.beta1,
            beta2: a.beta2,
            eps: a.eps,
            weight_decay: a.weight_decay,
            max_grad_norm: a.max_grad_norm,
        }
    }
}

impl OptimSection {
    /// The AdamW part.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
            ..AdamWConfig::default()
        }
    }
}

/// `[train]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSection {
    /// Sequences per forward.
    pub micro_batch_size: usize,
    /// Micro-batches per optimizer step.
    pub accumulation_steps: usize,
    /// Optimizer steps (`None`: as many as `epochs` take).
    pub steps: Option<usize>,
    /// Passes over the training data when `steps` is not set.
    pub epochs: usize,
    /// Micro-batches with a non-finite loss or gradient tolerated before stopping.
    pub max_nonfinite: usize,
    /// Log (metrics line, progress) every this many steps.
    pub log_every: usize,
    /// Compute device: `cpu` (burn's flex backend) or, when built in, `vulkan`, `wgpu`,
    /// `cuda`.
    pub device: String,
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            micro_batch_size: 4,
            accumulation_steps: 8,
            steps: None,
            epochs: 1,
            max_nonfinite: 10,
            log_every: 10,
            device: "cpu".into(),
        }
    }
}

/// `[validation]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationSection {
    /// Validate every this many steps (0: only at the end).
    pub every: usize,
    /// Sequences per validation batch.
    pub batch_size: usize,
    /// Validation batches per evaluation (0: all).
    pub max_batches: usize,
    /// Bins of `t` for the per-time loss.
    pub t_bins: usize,
    /// Grid points of the midpoint solve for n-step accuracy (0: skip it).
    pub nstep_grid_points: usize,
    /// Batches used for n-step accuracy (0: all of `max_batches`).
    pub nstep_batches: usize,
}

impl Default for ValidationSection {
    fn default() -> Self {
        ValidationSection {
            every: 100,
            batch_size: 4,
            max_batches: 0,
            t_bins: 10,
            nstep_grid_points: 8,
            nstep_batches: 2,
        }
    }
}

/// `[output]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputSection {
    /// The run folder: `metrics.jsonl`, `config.toml`, `checkpoints/`, `adapter.safetensors`.
    pub dir: PathBuf,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Checkpoints kept (older ones are deleted).
    pub keep_last: usize,
}

impl Default for OutputSection {
    fn default() -> Self {
        OutputSection {
            dir: PathBuf::from("runs/l2d"),
            checkpoint_every: 100,
            keep_last: 3,
        }
    }
}

/// The L2D presets: `reference` (the released configuration of the authors' `*_lad_lora.cfg`)
/// and `small` (a quarter-size path for CPU experiments: flow and conditioning width 64,
/// LoRA rank 8 with alpha 8).
pub const L2D_PRESETS: &[&str] = &["reference", "small"];

impl TrainConfig {
    /// Parses TOML text (`path` names the file in errors).
    ///
    /// # Errors
    /// [`TrainError::ConfigParse`] naming the key and line of an unknown key or a wrong type.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| TrainError::ConfigParse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Reads a TOML file. Relative data, model and output paths stay relative to the
    /// working directory (as on the command line).
    ///
    /// # Errors
    /// [`TrainError::Io`], [`TrainError::ConfigParse`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io("read", path, e))?;
        Self::from_toml_str(&text, path)
    }

    /// The TOML text of the configuration.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// The LoRA configuration of `[lora]` for a base of `base`'s sizes (`rank = "match-l2d"`
    /// counts the diffusion path of `[l2d]` on it).
    ///
    /// # Errors
    /// [`TrainError::Config`] naming `lora.<key>` (or `l2d` when the path cannot be counted).
    pub fn lora_config(&self, base: &ModelConfig) -> Result<LoraConfig> {
        let targets = self.lora_targets()?;
        let rank = match self.lora.rank {
            LoraRank::Fixed(r) => r,
            LoraRank::Match(_) => {
                let params = diffusion_param_count(&self.l2d_config()?, base)
                    .map_err(|e| TrainError::config("l2d", e.to_string()))?
                    .total();
                LoraConfig::rank_for_params(base, &targets, params)
            }
        };
        let config = LoraConfig::new(rank, self.lora.alpha.unwrap_or(rank as f64), targets)
            .with_init(self.lora.init);
        config.validate().map_err(|e| match e {
            l2d_models::lora::LoraError::Config { field, reason } => {
                TrainError::config(format!("lora.{field}"), reason)
            }
            other => TrainError::config("lora", other.to_string()),
        })?;
        Ok(config)
    }

    /// The L2D configuration: the preset, then the file named by `file`, then every other
    /// key of `[l2d]` (reference names); classes set `guidance_modulation_num_classes` when
    /// it is not given.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming `l2d.<key>` for an unknown preset, key or value.
    pub fn l2d_config(&self) -> Result<L2dConfig> {
        let mut table = self.l2d.clone();
        let preset = match table.remove("preset") {
            None => "reference".to_string(),
            Some(toml::Value::String(s)) => s,
            Some(other) => {
                return Err(TrainError::config(
                    "l2d.preset",
                    format!("must be a string, got {other}"),
                ));
            }
        };
        let mut base = match preset.as_str() {
            "reference" => serde_json::Map::new(),
            "small" => serde_json::json!({
                "flow_representation_dim": 64,
                "flow_to_lm_hidden_size": 64,
                "timestep_modulation_hidden_size": 64,
                "timestep_modulation_freq_embedding_size": 64,
                "flow_lora_rank": 8,
                "flow_lora_alpha": 8.0,
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
            other => {
                return Err(TrainError::config(
                    "l2d.preset",
                    format!("unknown preset {other:?}; use one of {L2D_PRESETS:?}"),
                ));
            }
        };
        if let Some(file) = table.remove("file") {
            let toml::Value::String(file) = file else {
                return Err(TrainError::config("l2d.file", "must be a path"));
            };
            let from_file = L2dConfig::from_file(&file)
                .map_err(|e| TrainError::config("l2d.file", e.to_string()))?;
            if let serde_json::Value::Object(m) = from_file.to_json() {
                base.extend(m);
            }
        }
        let overrides =
            serde_json::to_value(&table).map_err(|e| TrainError::config("l2d", e.to_string()))?;
        if let serde_json::Value::Object(m) = overrides {
            base.extend(m);
        }
        if !self.data.classes.is_empty() && !base.contains_key("guidance_modulation_num_classes") {
            base.insert(
                "guidance_modulation_num_classes".into(),
                self.data.classes.len().into(),
            );
        }
        let config = L2dConfig::from_value(serde_json::Value::Object(base))
            .map_err(|e| TrainError::config("l2d", e.to_string()))?;
        let n = config.num_classes();
        if n != self.data.classes.len() {
            return Err(TrainError::config(
                "data.classes",
                format!(
                    "{} classes listed but l2d.guidance_modulation_num_classes = {n}",
                    self.data.classes.len()
                ),
            ));
        }
        Ok(config)
    }

    /// Checks everything that does not need the model or the data.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.data.train.is_empty() {
            return Err(TrainError::config("data.train", "no training file given"));
        }
        for p in self.data.train.iter().chain(&self.data.validation) {
            if !p.exists() {
                return Err(TrainError::config(
                    "data",
                    format!("data file `{}` does not exist", p.display()),
                ));
            }
        }
        if !self.data.validation.is_empty() && self.data.validation_fraction.is_some() {
            return Err(TrainError::config(
                "data.validation_fraction",
                "give either validation files or a validation fraction, not both",
            ));
        }
        if self.data.max_seq_len < 2 {
            return Err(TrainError::config("data.max_seq_len", "must be at least 2"));
        }
        crate::trainer::weight_format_from_name(&self.model.dtype)?;
        crate::trainer::device_from_name(&self.train.device)?;
        let t = &self.train;
        if t.micro_batch_size == 0 || t.accumulation_steps == 0 {
            return Err(TrainError::config(
                "train",
                "micro_batch_size and accumulation_steps must be positive",
            ));
        }
        if t.steps == Some(0) || (t.steps.is_none() && t.epochs == 0) {
            return Err(TrainError::config("train.steps", "the run has no step"));
        }
        if self.validation.batch_size == 0 {
            return Err(TrainError::config(
                "validation.batch_size",
                "must be positive",
            ));
        }
        if self.validation.nstep_grid_points == 1 {
            return Err(TrainError::config(
                "validation.nstep_grid_points",
                "a grid needs at least 2 points (0 disables n-step accuracy)",
            ));
        }
        if self.output.keep_last == 0 {
            return Err(TrainError::config(
                "output.keep_last",
                "must keep at least 1",
            ));
        }
        self.schedule_shape(1).validate()?;
        self.optim.adamw().validate()?;
        self.l2d_config()?;
        if self.method == Method::Lora {
            self.lora_targets()?;
            if self.lora.rank == LoraRank::Fixed(0) {
                return Err(TrainError::config("lora.rank", "must be at least 1"));
            }
            if let Some(a) = self.lora.alpha
                && !(a.is_finite() && a > 0.0)
            {
                return Err(TrainError::config(
                    "lora.alpha",
                    "must be finite and positive",
                ));
            }
        }
        Ok(())
    }

    /// The projections named by `lora.targets`.
    fn lora_targets(&self) -> Result<Vec<Projection>> {
        self.lora
            .targets
            .iter()
            .map(|t| {
                t.parse::<Projection>()
                    .map_err(|e| TrainError::config("lora.targets", e.to_string()))
            })
            .collect()
    }

    /// The learning-rate schedule for a run of `total_steps`.
    pub fn schedule_shape(&self, total_steps: usize) -> crate::schedule::LrSchedule {
        crate::schedule::LrSchedule {
            peak_lr: self.optim.peak_lr,
            min_lr: self.optim.min_lr,
            warmup_steps: self.optim.warmup_steps,
            warmup: self.optim.warmup,
            decay: self.optim.decay,
            total_steps,
        }
    }

    /// Sets a value by dotted key (`optim.peak_lr`, `seed`, ...) from a TOML literal (a bare
    /// word is taken as a string), as `--set key=value` does.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the key if the result does not parse.
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| TrainError::Config {
                field: None,
                reason: format!("`--set {assignment}`: expected KEY=VALUE"),
            })?;
        let key = key.trim();
        let value: toml::Value = format!("v = {}", value.trim())
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.trim().to_string()));
        let mut doc =
            toml::Table::try_from(&*self).map_err(|e| TrainError::config(key, e.to_string()))?;
        let parts: Vec<&str> = key.split('.').collect();
        let (last, parents) = parts
            .split_last()
            .ok_or_else(|| TrainError::config(key, "empty key"))?;
        let mut table = &mut doc;
        for p in parents {
            table = table
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| TrainError::config(key, format!("`{p}` is not a section")))?;
        }
        table.insert(last.to_string(), value);
        *self = doc
            .try_into()
            .map_err(|e: toml::de::Error| TrainError::config(key, e.to_string()))?;
        Ok(())
    }
}
