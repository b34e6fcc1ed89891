//! The L2D diffusion path of the demo: the toy reference's configuration, its training on the
//! answer digits of the frozen base, and greedy exact-match evaluation through the diffusion
//! [`Generator`] (the same path `l2d generate` takes).
//!
//! Training is `l2d train`'s step on the task's problems (`l2d-train`'s `Stepper`: its
//! `sample_noise`, `forward_backward` and `AdamW::update`): the reference's loss (cross-entropy of
//! the diffusion path's logits on the next token, each position with its own `t ~ U[0, 1]` and
//! flow state `x_t = (1-t)·σ·ε + t·V_y`), scored on the answer digits only. That step replays
//! the authors' training step for step (`crates/l2d-train/tests/reference_training.rs`).

use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use l2d_core::HostRng;
use l2d_models::config::ModelConfig;
use l2d_models::decoder::CausalLm;
use l2d_models::diffusion::{AdapterLoadOptions, DiffusionPath, ParamCount, diffusion_param_count};
use l2d_models::generation::{
    DiffusionMode, DiffusionOptions, DiffusionStats, Flow, GenerationConfig, Generator,
};
use l2d_models::l2d_config::L2dConfig;
use serde::{Deserialize, Serialize};

use super::DemoError;
use super::evaluate::EvalResult;
use super::task::{DigitTask, Problem, finetune_data_rng};

/// Stream of the training timesteps and noise, apart from the path's initial weights.
const NOISE_STREAM: u64 = 0x666c_6f77;

/// The diffusion path's sizes at toy scale, in the authors' configuration vocabulary. The
/// default is the toy reference's: mapping dim 32, flow-to-LM encoder depth 2 of width
/// `hidden`, DiT modulation hidden `hidden` with a 64-frequency timestep embedding, LoRA rank 8
/// on q/o/gate/up/down; the training noise of the paper (`t ~ U[0, 1]`, σ = 64).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ToyDiffusionPath {
    /// Width of the flow (mapping) space.
    pub mapping_dim: usize,
    /// Width of the flow-to-LM encoder (`None`: the model's hidden size).
    pub flow_width: Option<usize>,
    /// Depth of the flow-to-LM encoder (linear layers).
    pub flow_depth: usize,
    /// Hidden width of the DiT modulation (`None`: the model's hidden size).
    pub modulation_hidden: Option<usize>,
    /// Sinusoidal frequency-embedding width of the timestep.
    pub frequency_dim: usize,
    /// LoRA rank of the diffusion path's projections.
    pub lora_rank: usize,
    /// How training timesteps are drawn: `u ~ U[0, 1]` through this schedule (`identity`,
    /// `cosmap`, `shifted_<s>`; the reference's `noise_schedule`).
    #[serde(default = "default_noise_schedule")]
    pub noise_schedule: l2d_core::NoiseSchedule,
    /// The noise's standard deviation σ (the reference's `noise_rescaling`, 64).
    #[serde(default = "default_noise_scale")]
    pub noise_scale: f64,
    /// Training timesteps are drawn in `[0, 1 - minimum_training_noise]` (the reference's
    /// `minimum_training_noise`, 0).
    #[serde(default)]
    pub minimum_training_noise: f64,
}

fn default_noise_schedule() -> l2d_core::NoiseSchedule {
    l2d_core::NoiseSchedule::Identity
}

fn default_noise_scale() -> f64 {
    64.0
}

impl Default for ToyDiffusionPath {
    fn default() -> Self {
        Self {
            mapping_dim: 32,
            flow_width: None,
            flow_depth: 2,
            modulation_hidden: None,
            frequency_dim: 64,
            lora_rank: 8,
            noise_schedule: l2d_core::NoiseSchedule::Identity,
            noise_scale: default_noise_scale(),
            minimum_training_noise: 0.0,
        }
    }
}

impl ToyDiffusionPath {
    /// The diffusion path's trainable parameters on a base of `config`, by part: the count of
    /// [`l2d_models::diffusion::diffusion_param_count`] for [`ToyDiffusionPath::l2d_config`].
    ///
    /// ```
    /// use l2d::demo::{ToyDiffusionPath, TinyLlama};
    ///
    /// let config = TinyLlama::default().model_config()?;
    /// // The toy reference's 6-digit row.
    /// assert_eq!(ToyDiffusionPath::default().param_count(&config)?.total(), 58_592);
    /// # Ok::<(), l2d::demo::DemoError>(())
    /// ```
    ///
    /// # Errors
    /// [`DemoError::Diffusion`] for sizes the path cannot have on this base.
    pub fn param_count(&self, config: &ModelConfig) -> Result<ParamCount, DemoError> {
        Ok(diffusion_param_count(&self.l2d_config(), config)?)
    }
}

impl ToyDiffusionPath {
    /// The configuration in the reference's vocabulary: a `mapping` flow space of
    /// `mapping_dim` (one linear layer), L2-normalised with `mult` rescaling, noise σ = `noise_scale`, the
    /// flow-to-LM encoder of `flow_depth` layers and width `flow_width` with timestep rescaling
    /// 1.0, training timesteps from `noise_schedule` up to `1 - minimum_training_noise`, full DiT modulation of hidden `modulation_hidden` on a `frequency_dim` sinusoid,
    /// LoRA of rank and alpha `lora_rank` on q/o/gate/up/down, the base preserved at `t = 0`;
    /// inference defaults: x1 `sample` at temperature 0 (the argmax embedding).
    ///
    /// ```
    /// use l2d::demo::{ToyDiffusionPath, TinyLlama};
    /// use l2d_models::diffusion::diffusion_param_count;
    ///
    /// let base = TinyLlama::default().model_config()?;
    /// let config = ToyDiffusionPath::default().l2d_config();
    /// assert_eq!(config.flow_lora_rank, 8);
    /// assert_eq!(diffusion_param_count(&config, &base)?.total(), 58_592);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn l2d_config(&self) -> L2dConfig {
        L2dConfig {
            flow_representation_dim: Some(self.mapping_dim),
            flow_representation_num_layers: Some(1),
            flow_to_lm_translation_depth: self.flow_depth,
            flow_to_lm_hidden_size: self.flow_width,
            flow_to_lm_timestep_rescaling: Some(1.0),
            timestep_modulation_hidden_size: self.modulation_hidden,
            timestep_modulation_freq_embedding_size: Some(self.frequency_dim),
            flow_lora_rank: self.lora_rank,
            flow_lora_alpha: Some(self.lora_rank as f64),
            noise_schedule: self.noise_schedule,
            noise_rescaling: self.noise_scale,
            minimum_training_noise: self.minimum_training_noise,
            ..L2dConfig::default()
        }
    }
}

/// Settings of the diffusion path's training. Defaults: the toy reference's (AdamW lr 1e-3,
/// β (0.9, 0.95), ε 1e-8, weight decay 0.01, constant lr, no clipping, batch 128, 3000
/// steps), the same optimizer as the LoRA baseline's ([`super::LoraConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffusionTrainConfig {
    /// The diffusion path's sizes.
    pub path: ToyDiffusionPath,
    /// Optimizer steps.
    pub steps: usize,
    /// Problems per step.
    pub batch_size: usize,
    /// Learning rate (constant).
    pub lr: f64,
    /// Adam's β₁.
    pub beta_1: f32,
    /// Adam's β₂.
    pub beta_2: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Seed of the initial weights and the noise.
    pub seed: u64,
    /// Seed of the training problems: with the LoRA baseline's seed, both see the same
    /// problems in the same order ([`finetune_data_rng`]).
    pub data_seed: u64,
    /// Start from the weights of this file (an adapter, or the authors' key names as
    /// `scripts/toy_reference.py` writes them) instead of the seeded initialisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<std::path::PathBuf>,
    /// Write the initial weights to this file (in the authors' key names) before training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_out: Option<std::path::PathBuf>,
}

impl Default for DiffusionTrainConfig {
    fn default() -> Self {
        Self {
            path: ToyDiffusionPath::default(),
            steps: 3000,
            batch_size: 128,
            lr: 1e-3,
            beta_1: 0.9,
            beta_2: 0.95,
            weight_decay: 0.01,
            seed: 2,
            data_seed: 1,
            init_from: None,
            init_out: None,
        }
    }
}

impl DiffusionTrainConfig {
    fn validate(&self) -> Result<(), DemoError> {
        if self.batch_size == 0 {
            return Err(DemoError::invalid("batch_size", "must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(DemoError::invalid(
                "lr",
                format!("{} is not positive", self.lr),
            ));
        }
        if self.path.lora_rank == 0 {
            return Err(DemoError::invalid("path.lora_rank", "must be at least 1"));
        }
        Ok(())
    }
}

/// The path training starts from: `config.init_from`'s weights, or the seeded initialisation;
/// written to `config.init_out` when set.
fn initial_path(
    base: &CausalLm,
    config: &DiffusionTrainConfig,
) -> Result<DiffusionPath, DemoError> {
    let l2d = config.path.l2d_config();
    let path = match &config.init_from {
        Some(file) => DiffusionPath::load(
            file,
            base,
            &AdapterLoadOptions {
                config: Some(l2d),
                force: true,
            },
        )?,
        None => DiffusionPath::init(&l2d, base, config.seed)?,
    };
    if let Some(file) = &config.init_out {
        write_reference_weights(&path, file)?;
    }
    Ok(path)
}

/// Writes `path`'s parameters under the authors' key names, with no metadata: the layout of
/// their `state_dict`, as `scripts/toy_reference.py --path-init` reads it.
///
/// # Errors
/// [`DemoError::Write`] naming the file.
pub fn write_reference_weights(
    path: &DiffusionPath,
    file: &std::path::Path,
) -> Result<(), DemoError> {
    let err = |reason: String| DemoError::Write {
        path: file.to_path_buf(),
        reason,
    };
    let bytes = l2d_models::weights::serialize_f32(path.reference_tensors()?, Default::default())
        .map_err(|e| err(e.to_string()))?;
    l2d_models::weights::write_atomically(file, &bytes).map_err(|e| err(e.to_string()))
}

/// A trained diffusion path.
#[derive(Debug, Clone)]
pub struct TrainedDiffusion {
    /// The path on the plain (non-autodiff) device.
    pub path: DiffusionPath,
    /// Its parameters (every one trainable).
    pub trainable_params: usize,
    /// The training loss of every step.
    pub losses: Vec<f32>,
    /// Wall time of the training, in seconds.
    pub seconds: f64,
}

/// Trains a fresh diffusion path of `config` beside the frozen `base` on `task` (answer digits
/// only) on `device` with autodiff; `base` stays on its plain device and receives no gradient.
/// `on_step(step, loss)` is called after every step.
///
/// # Errors
/// [`DemoError`] for an invalid configuration, a path that does not fit the base, or a
/// non-finite loss.
pub fn train_diffusion(
    base: &CausalLm,
    task: &DigitTask,
    config: &DiffusionTrainConfig,
    device: &Device,
    on_step: impl FnMut(usize, f32),
) -> Result<TrainedDiffusion, DemoError> {
    config.validate()?;
    let start = Instant::now();
    let path = initial_path(base, config)?;
    let trainable_params = path.num_params();
    // `l2d train`'s step (its `Stepper`) on batches of the task's problems.
    let (path, losses) = super::Finetune {
        phase: "diffusion",
        task,
        steps: config.steps,
        batch_size: config.batch_size,
        lr: config.lr,
        data: finetune_data_rng(config.data_seed),
        rng: HostRng::new(config.seed).derive(NOISE_STREAM),
    }
    .run(
        path,
        super::adamw(config.beta_1, config.beta_2, config.weight_decay),
        base,
        device,
        on_step,
    )?;
    Ok(TrainedDiffusion {
        path,
        trainable_params,
        losses,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The mean cost of one generated token (answer digit) of one row.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct TokenCost {
    /// NFE as the paper counts it: solver evaluations (the fused one at `t = 0` included)
    /// plus the final evaluation at `t = 1`.
    pub nfe: f64,
    /// Diffusion-path forwards actually run (the fused first evaluation costs none; a batched
    /// forward counts once per row).
    pub forwards: f64,
    /// Accepted solver steps.
    pub accepted_steps: f64,
    /// Rejected adaptive steps.
    pub rejected_steps: f64,
    /// Evaluations at `t >= 1` answered with a zero velocity (the end-point guard).
    pub zero_velocity_evaluations: f64,
}

/// Exact match of one diffusion setting, with its cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffusionEval {
    /// Accuracy and time.
    pub result: EvalResult,
    /// The mean cost per answer digit.
    pub cost: TokenCost,
}

/// Greedy answers of the frozen `base` with the diffusion `path` under `options` (through
/// [`Generator::generate`], `batch_size` problems per call), with the generation statistics
/// of every call.
///
/// # Errors
/// [`DemoError::Generation`] for invalid options or a failed solve.
pub fn diffusion_answers(
    base: &CausalLm,
    path: &DiffusionPath,
    task: &DigitTask,
    problems: &[Problem],
    options: &DiffusionOptions,
    batch_size: usize,
) -> Result<(Vec<Vec<u32>>, Vec<DiffusionStats>), DemoError> {
    let generator = Generator::new(base, Some(path), options.clone())
        .map_err(|e| DemoError::Generation(e.to_string()))?;
    let config = GenerationConfig::greedy(task.answer_len());
    let mut answers = Vec::with_capacity(problems.len());
    let mut stats = Vec::new();
    for chunk in problems.chunks(batch_size.max(1)) {
        let prompts: Vec<Vec<u32>> = chunk.iter().map(|p| task.prompt_tokens(p)).collect();
        let out = generator
            .generate(None, &prompts, &config, |_| Flow::Continue)
            .map_err(|e| DemoError::Generation(e.to_string()))?;
        answers.extend(out.generation.sequences.into_iter().map(|s| s.tokens));
        stats.push(out.diffusion);
    }
    Ok((answers, stats))
}

/// Greedy exact match of `base` + `path` under `options` on `problems`, timed.
///
/// # Errors
/// As [`diffusion_answers`].
pub fn diffusion_exact_match(
    base: &CausalLm,
    path: &DiffusionPath,
    task: &DigitTask,
    problems: &[Problem],
    options: &DiffusionOptions,
    batch_size: usize,
) -> Result<DiffusionEval, DemoError> {
    let start = Instant::now();
    let (answers, stats) = diffusion_answers(base, path, task, problems, options, batch_size)?;
    let result = EvalResult::score(task, problems, &answers, start.elapsed().as_secs_f64());
    Ok(DiffusionEval {
        result,
        cost: cost_per_token(&stats, options),
    })
}

/// The mean cost per generated token and row, from the statistics of the generation calls of
/// `options`.
pub fn cost_per_token(stats: &[DiffusionStats], options: &DiffusionOptions) -> TokenCost {
    // A fixed-grid forward covers the whole batch and a fixed-grid step every row; adaptive
    // solves run row by row, so their counts are already summed over the rows.
    let batched = if matches!(options.mode, DiffusionMode::Adaptive { .. }) {
        |_: usize| 1
    } else {
        |rows: usize| rows
    };
    let mut sums = [0usize; 5];
    let mut rows = 0usize;
    for t in stats.iter().flat_map(|s| &s.tokens) {
        rows += t.rows;
        let scale = batched(t.rows);
        sums[0] += t.nfe.iter().sum::<usize>();
        sums[1] += t.diffusion_forwards * scale;
        sums[2] += t.accepted_steps * scale;
        sums[3] += t.rejected_steps * scale;
        sums[4] += t.zero_velocity_evaluations * scale;
    }
    let per = |x: usize| {
        if rows == 0 {
            0.0
        } else {
            x as f64 / rows as f64
        }
    };
    TokenCost {
        nfe: per(sums[0]),
        forwards: per(sums[1]),
        accepted_steps: per(sums[2]),
        rejected_steps: per(sums[3]),
        zero_velocity_evaluations: per(sums[4]),
    }
}
