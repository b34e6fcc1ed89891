//! The L2D diffusion path of the demo: the toy reference's configuration, its training on the
//! answer digits of the frozen base, and greedy exact-match evaluation through the diffusion
//! [`Generator`] (the same path `l2d generate` takes).
//!
//! Training follows the reference's loss (cross-entropy of the diffusion path's logits on the
//! next token, each position with its own `t ~ U[0, 1]` and flow state
//! `x_t = (1-t)·σ·ε + t·V_y`), scored on the answer digits only. Because a flow position
//! attends only to the frozen path's keys/values and never to other flow positions, the
//! diffusion path is run on the scored positions only ([`answer_diffusion_loss`]): the same
//! loss as [`DiffusionPath::loss`] with the prompt positions ignored, at about a third of the
//! cost (the tests check the two agree).

use std::time::Instant;

use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor};
use l2d_core::HostRng;
use l2d_models::decoder::{CausalLm, ForwardOptions};
use l2d_models::diffusion::{DiffusionPath, FlowContext, Timesteps};
use l2d_models::generation::{
    DiffusionMode, DiffusionOptions, DiffusionStats, Flow, GenerationConfig, Generator,
};
use l2d_models::l2d_config::L2dConfig;
use serde::{Deserialize, Serialize};

use super::DemoError;
use super::evaluate::EvalResult;
use super::lora::{ToyDiffusionPath, finetune_data_rng};
use super::task::{AdditionTask, Problem};

/// Stream of the training timesteps and noise, apart from the path's initial weights.
const NOISE_STREAM: u64 = 0x666c_6f77;

impl ToyDiffusionPath {
    /// The configuration in the reference's vocabulary: a `mapping` flow space of
    /// `mapping_dim` (one linear layer), L2-normalised with `mult` rescaling, noise σ = 64, the
    /// flow-to-LM encoder of `flow_depth` layers and width `flow_width` with timestep rescaling
    /// 1.0, full DiT modulation of hidden `modulation_hidden` on a `frequency_dim` sinusoid,
    /// LoRA of rank and alpha `lora_rank` on q/o/gate/up/down, the base preserved at `t = 0`;
    /// inference defaults: x1 `sample` at temperature 0 (the argmax embedding).
    ///
    /// ```
    /// use l2d::demo::{lora::ToyDiffusionPath, TinyLlama};
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

/// The random inputs of one step's loss on the answer positions.
#[derive(Debug, Clone)]
pub struct AnswerNoise {
    /// The time of every answer position, `[batch, answer_len]`.
    pub timesteps: Tensor<2>,
    /// Unit-normal `ε` of every answer position, `[batch, answer_len, d]`.
    pub noise: Tensor<3>,
}

/// Draws the timesteps (`u ~ U(0, 1)` through the path's noise schedule, times its maximum
/// training time), then the unit noise, from `rng`.
///
/// # Shapes
/// - outputs: `[batch, answer_len]` and `[batch, answer_len, d]`
pub fn sample_answer_noise(
    path: &DiffusionPath,
    batch: usize,
    answer_len: usize,
    rng: &mut HostRng,
    device: &Device,
) -> AnswerNoise {
    let config = path.config();
    let u = rng.uniform([batch, answer_len], device);
    let timesteps = config
        .noise_schedule
        .apply_tensor(u)
        .mul_scalar(config.maximum_timestep());
    let noise = rng.normal([batch, answer_len, path.flow_dim()], device);
    AnswerNoise { timesteps, noise }
}

/// The diffusion loss on the answers: the frozen pass over `inputs`, then the diffusion path
/// at the last `answer_len` positions only (those that predict the answer digits), each with
/// its time and flow state `x_t = (1-t)·σ·ε + t·V_answer`; the mean cross-entropy of the
/// answer digits. Equal to [`DiffusionPath::loss`] with shifted labels that ignore the prompt.
///
/// # Shapes
/// - `inputs`: `[batch, seq]`; `answers`: `[batch, answer_len]` (`answer_len <= seq`)
/// - `noise.timesteps`: `[batch, answer_len]`; `noise.noise`: `[batch, answer_len, d]`
/// - output: `[1]`
///
/// # Errors
/// [`DemoError::Diffusion`] for shapes that do not fit the path or the base.
pub fn answer_diffusion_loss(
    path: &DiffusionPath,
    base: &CausalLm,
    inputs: Tensor<2, Int>,
    answers: Tensor<2, Int>,
    noise: AnswerNoise,
) -> Result<Tensor<1>, DemoError> {
    let [b, seq] = inputs.dims();
    let [_, len] = answers.dims();
    if len == 0 || len > seq {
        return Err(DemoError::invalid(
            "answers",
            format!("{len} answer positions for sequences of {seq}"),
        ));
    }
    path.check_base(base)?;
    let frozen = base.frozen_forward(inputs, &ForwardOptions::default());
    let context = FlowContext::from_frozen(&frozen).narrow_queries(seq - len, len)?;
    let dtype = base.dtype();
    let t = noise.timesteps.cast(dtype);
    let x1 = path.token_representations(base, answers.clone());
    let t3 = t.clone().reshape([b, len, 1]);
    let x0 = noise
        .noise
        .cast(dtype)
        .mul_scalar(path.config().noise_rescaling);
    let x_t = x0 * t3.clone().neg().add_scalar(1.0) + x1 * t3;
    let logits = path.forward_cached(base, &context, x_t, &Timesteps::PerPosition(t), None)?;
    let logp = log_softmax(logits, 2);
    Ok(logp.gather(2, answers.unsqueeze_dim::<3>(2)).mean().neg())
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
    task: &AdditionTask,
    config: &DiffusionTrainConfig,
    device: &Device,
    mut on_step: impl FnMut(usize, f32),
) -> Result<TrainedDiffusion, DemoError> {
    config.validate()?;
    let start = Instant::now();
    let path = DiffusionPath::init(&config.path.l2d_config(), base, config.seed)?;
    let trainable_params = path.num_params();
    let mut path = l2d_train::step::trainable(path, device);
    let mut optim = AdamWConfig::new()
        .with_beta_1(config.beta_1)
        .with_beta_2(config.beta_2)
        .with_epsilon(1e-8)
        .with_weight_decay(config.weight_decay)
        .init();
    let mut data = finetune_data_rng(config.data_seed);
    let mut rng = HostRng::new(config.seed).derive(NOISE_STREAM);
    let mut losses = Vec::with_capacity(config.steps);
    let plain = device.clone().without_autodiff();
    for step in 0..config.steps {
        let batch = task.train_batch(config.batch_size, &mut data, &plain);
        let noise = sample_answer_noise(
            &path,
            config.batch_size,
            task.answer_len(),
            &mut rng,
            &plain,
        );
        let loss = answer_diffusion_loss(&path, base, batch.inputs, batch.answers, noise)?;
        let value;
        (path, value) = super::descend("diffusion", step, loss, path, &mut optim, config.lr)?;
        losses.push(value);
        on_step(step, value);
    }
    Ok(TrainedDiffusion {
        path: path.valid(),
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
    task: &AdditionTask,
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
    task: &AdditionTask,
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
