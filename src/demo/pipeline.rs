//! The whole demo as one function: train the tiny base from scratch and freeze it, finetune it
//! with plain LoRA (the paper's baseline) and with the L2D diffusion path (same data, steps and
//! optimizer, about equal trainable parameters), and score greedy exact match on held-out
//! problems: the base, LoRA, L2D with Euler at several step counts, and an adaptive solver.
//! [`run_quickstart`] returns a [`QuickstartReport`] that prints as a table, serialises to JSON
//! and draws the accuracy-vs-NFE plot. `examples/quickstart.rs` is a thin command line over it.
//!
//! # Steps and NFE
//! "Steps" are Euler grid intervals `k` over `0, 1/k, …, 1`. The NFE per token is the paper's
//! count: `k` solver evaluations plus the final evaluation at `t = 1` (`k + 1`). The first
//! evaluation, at `t = 0`, is exactly the frozen model's logits (the path is gated off there),
//! so a token costs `k` diffusion-path forwards on top of the frozen pass. The toy reference's
//! "NFE 1, 2, 4, 8, 16" columns count solver evaluations, i.e. `k` here.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use l2d_core::TemperatureSchedule;
use l2d_core::X1Estimator;
use l2d_models::decoder::CausalLm;
use l2d_models::diffusion::{AdapterLoadOptions, DiffusionPath};
use l2d_models::generation::{DiffusionMode, DiffusionOptions};
use l2d_solvers::Method;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::analysis::{FlowTarget, teacher_forced_accuracy};
use super::diffusion::{
    DiffusionTrainConfig, TokenCost, TrainedDiffusion, cost_per_token, diffusion_answers,
    train_diffusion,
};
use super::evaluate::{EvalResult, greedy_answers};
use super::lora::{LoraConfig, init_label, train_lora};
use super::pretrain::{PretrainConfig, load_base, pretrain, save_base};
use super::task::{DigitTask, Problem, TaskKind};
use super::{DemoError, TinyLlama};
use crate::plot::{LinePlot, Series};
use l2d_models::lora::LoraInit;

/// Offset of the held-out set's seed from the run's seed.
const TEST_STREAM: u64 = 7;

/// An adaptive solver setting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveSetting {
    /// A method with an error estimate (`bosh3`, `dopri5`, `fehlberg2`, `adaptive_heun`).
    pub method: Method,
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
}

impl AdaptiveSetting {
    /// The setting a command line names: `none` for no adaptive row, else an adaptive method's
    /// name (this crate's or torchdiffeq's) at `rtol = atol = tolerance`.
    ///
    /// ```
    /// use l2d::demo::pipeline::AdaptiveSetting;
    /// use l2d_solvers::Method;
    ///
    /// assert_eq!(AdaptiveSetting::from_flag("none", 1e-3)?, None);
    /// let s = AdaptiveSetting::from_flag("dopri5", 1e-3)?.unwrap();
    /// assert_eq!((s.method, s.rtol, s.atol), (Method::Dopri5, 1e-3, 1e-3));
    /// assert!(AdaptiveSetting::from_flag("euler", 1e-3).is_err()); // no error estimate
    /// assert!(AdaptiveSetting::from_flag("rk45", 1e-3).is_err());
    /// # Ok::<(), l2d::demo::DemoError>(())
    /// ```
    ///
    /// # Errors
    /// [`DemoError::InvalidConfig`] for an unknown method or one without an error estimate.
    pub fn from_flag(name: &str, tolerance: f64) -> Result<Option<Self>, DemoError> {
        if name == "none" {
            return Ok(None);
        }
        let method: Method = name.parse().map_err(|e: l2d_solvers::UnknownMethod| {
            DemoError::invalid("adaptive", e.to_string())
        })?;
        if !method.is_adaptive() {
            return Err(DemoError::invalid(
                "adaptive",
                format!("{name:?} is not an adaptive method (bosh3, dopri5, ...)"),
            ));
        }
        Ok(Some(Self {
            method,
            rtol: tolerance,
            atol: tolerance,
        }))
    }
}

impl Default for AdaptiveSetting {
    /// Bogacki–Shampine 3(2) at the reference's tolerances (`rtol = atol = 1e-5`).
    fn default() -> Self {
        Self {
            method: Method::Bosh3,
            rtol: 1e-5,
            atol: 1e-5,
        }
    }
}

/// Everything the demo runs. The default is the quickstart: the toy reference's 6-digit row
/// (hidden 48, 2 layers, 400 base steps; 3000 finetuning steps), 1000 held-out problems,
/// Euler at 1, 2, 4, 8 and 16 steps, bosh3 at `1e-5`, and the x1 estimate both ways.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuickstartConfig {
    /// The task (addition by default; absent from the reports of earlier versions).
    #[serde(default)]
    pub task: TaskKind,
    /// Digits per operand (or prompt elements of a one-token task).
    pub digits: usize,
    /// The base model's training (and shape).
    pub base: PretrainConfig,
    /// The plain-LoRA baseline (rank matched to the diffusion path by default).
    pub lora: LoraConfig,
    /// Further LoRA runs reported beside it (by default the same rank with PEFT's
    /// initialisation of `A`, beside the authors' one).
    pub extra_lora: Vec<LoraConfig>,
    /// Train and score the LoRA baselines (`lora` and `extra_lora`); true by default.
    #[serde(default = "lora_baselines_default")]
    pub lora_baselines: bool,
    /// The diffusion path's training.
    pub diffusion: DiffusionTrainConfig,
    /// Held-out problems.
    pub test_size: usize,
    /// Problems per evaluation batch.
    pub eval_batch: usize,
    /// Euler grid intervals to evaluate.
    pub euler_steps: Vec<usize>,
    /// The adaptive solver row (`None`: no row).
    pub adaptive: Option<AdaptiveSetting>,
    /// Also evaluate the `average` x1 estimate at temperature 1 (the toy reference's second
    /// estimate) at every Euler step count.
    pub average_at_temperature_one: bool,
    /// Seed of the held-out set and of the generation noise.
    pub seed: u64,
    /// Also run the diagnostics of [`Analysis`].
    pub analysis: bool,
    /// Use the model of this Hugging Face folder (`config.json`, `model.safetensors`) as the
    /// frozen base instead of training one: for example a base the authors' code trained
    /// (`scripts/toy_reference.py`), to swap it in while keeping everything else ours.
    pub base_in: Option<PathBuf>,
    /// Write the frozen base to this folder as a Hugging Face model (`config.json`,
    /// `model.safetensors`), e.g. for `scripts/toy_reference.py --base`.
    pub base_out: Option<PathBuf>,
    /// Load the diffusion path from this adapter file instead of training it: one saved by
    /// `adapter_out` on this run's base, or a path in the authors' key names trained on it
    /// (read with this run's diffusion configuration).
    pub adapter_in: Option<PathBuf>,
    /// Save the trained diffusion path to this adapter file.
    pub adapter_out: Option<PathBuf>,
}

impl Default for QuickstartConfig {
    fn default() -> Self {
        Self {
            task: TaskKind::Addition,
            digits: 6,
            base: PretrainConfig::default(),
            lora: LoraConfig::default(),
            extra_lora: vec![LoraConfig {
                init: LoraInit::KaimingUniform,
                ..LoraConfig::default()
            }],
            lora_baselines: true,
            diffusion: DiffusionTrainConfig::default(),
            test_size: 1000,
            eval_batch: 500,
            euler_steps: vec![1, 2, 4, 8, 16],
            adaptive: Some(AdaptiveSetting::default()),
            average_at_temperature_one: true,
            seed: 0,
            analysis: false,
            base_in: None,
            base_out: None,
            adapter_in: None,
            adapter_out: None,
        }
    }
}

fn lora_baselines_default() -> bool {
    true
}

impl QuickstartConfig {
    /// The configuration at `digits` digits and the model `shape`, everything else default,
    /// with every seed derived from `seed` (the LoRA baseline and the diffusion path share
    /// their training problems).
    pub fn new(digits: usize, shape: TinyLlama, seed: u64) -> Self {
        let mut c = Self {
            digits,
            seed,
            ..Self::default()
        };
        c.base.model = shape;
        c.base.seed = seed;
        c.lora.seed = seed + 1;
        for l in &mut c.extra_lora {
            l.seed = seed + 1;
        }
        c.diffusion.seed = seed + 2;
        c.diffusion.data_seed = seed + 1;
        c
    }

    /// Sets the LoRA baseline's and the diffusion path's training steps (the same for both).
    pub fn with_finetune_steps(mut self, steps: usize) -> Self {
        self.lora.steps = steps;
        self.diffusion.steps = steps;
        for l in &mut self.extra_lora {
            l.steps = steps;
        }
        self
    }
}

/// What a row of the table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// The frozen base model, greedy.
    Base,
    /// A plain-LoRA finetune, greedy.
    Lora,
    /// L2D on a fixed Euler grid.
    L2dFixed,
    /// L2D with an adaptive solver.
    L2dAdaptive,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The row's name as printed.
    pub method: String,
    /// What it is.
    pub kind: RowKind,
    /// The x1 estimate (`sample T=0` or `average T=1`) of an L2D row.
    pub x1_estimate: Option<String>,
    /// Parameters: the base's total for the base row, the trainable ones otherwise.
    pub params: usize,
    /// Euler grid intervals of a fixed L2D row.
    pub steps: Option<usize>,
    /// Mean NFE per answer digit (the paper's count; 0 for greedy rows without diffusion).
    pub nfe_per_token: f64,
    /// Mean diffusion-path forwards run per answer digit (the fused `t = 0` evaluation is
    /// free).
    pub forwards_per_token: f64,
    /// The solver's mean cost per answer digit (L2D rows).
    pub cost: Option<TokenCost>,
    /// Exact match over all answer digits.
    pub accuracy: f64,
    /// Problems answered exactly.
    pub correct: usize,
    /// Problems.
    pub total: usize,
    /// Accuracy of each answer digit, most significant first.
    pub digit_accuracy: Vec<f64>,
    /// Wall time per answer (all its digits), in milliseconds.
    pub ms_per_answer: f64,
}

/// Training summary of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// What was trained.
    pub what: String,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// Steps.
    pub steps: usize,
    /// Mean loss of the first and the last 5% of steps.
    pub loss_start: f32,
    /// See `loss_start`.
    pub loss_end: f32,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl TrainingSummary {
    fn new(what: impl Into<String>, params: usize, losses: &[f32], seconds: f64) -> Self {
        let w = (losses.len() / 20).max(1).min(losses.len().max(1));
        let mean = |s: &[f32]| {
            if s.is_empty() {
                f32::NAN
            } else {
                s.iter().sum::<f32>() / s.len() as f32
            }
        };
        Self {
            what: what.into(),
            trainable_params: params,
            steps: losses.len(),
            loss_start: mean(&losses[..w.min(losses.len())]),
            loss_end: mean(&losses[losses.len().saturating_sub(w)..]),
            seconds,
        }
    }
}

/// Teacher-forced accuracy of the diffusion path at one time (see
/// [`teacher_forced_accuracy`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherForced {
    /// The time.
    pub t: f64,
    /// What the flow state holds.
    pub target: FlowTarget,
    /// All answer digits right.
    pub exact: f64,
    /// Per digit, most significant first.
    pub digits: Vec<f64>,
}

/// Greedy exact match of the Euler rows (`sample`, temperature 0) under another noise seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedRun {
    /// The generation seed.
    pub seed: u64,
    /// `(Euler steps, exact match)` for every step count of the run.
    pub accuracy: Vec<(usize, f64)>,
}

/// Diagnostics of the trained diffusion path ([`QuickstartConfig::analysis`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Teacher-forced accuracy against the time, with the right answer in the flow state,
    /// and at `t = 1` with the frozen model's guess in it.
    pub teacher_forced: Vec<TeacherForced>,
    /// The Euler rows under other generation-noise seeds (the run's own seed first).
    pub noise_seeds: Vec<SeedRun>,
    /// `(NFE, exact match)` of the midpoint method at the Euler step counts (`sample`,
    /// temperature 0): another placement of the evaluations on the t-axis.
    pub midpoint: Vec<(f64, f64)>,
}

/// The demo's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuickstartReport {
    /// The configuration run.
    pub config: QuickstartConfig,
    /// The trainings, in order (base, LoRA runs, diffusion path).
    pub training: Vec<TrainingSummary>,
    /// The table's rows, in order.
    pub rows: Vec<Row>,
    /// The diagnostics, when asked for.
    pub analysis: Option<Analysis>,
    /// Wall time of the whole run (training and evaluation), in seconds.
    pub total_seconds: f64,
}

fn digit_accuracy(task: &DigitTask, problems: &[Problem], answers: &[Vec<u32>]) -> Vec<f64> {
    let len = task.answer_len();
    let mut right = vec![0usize; len];
    for (p, got) in problems.iter().zip(answers) {
        for (i, (want, got)) in task.answer_tokens(p).iter().zip(got).enumerate() {
            right[i] += usize::from(want == got);
        }
    }
    let n = problems.len().max(1) as f64;
    right.into_iter().map(|r| r as f64 / n).collect()
}

struct Scored {
    result: EvalResult,
    digits: Vec<f64>,
}

fn score(task: &DigitTask, problems: &[Problem], answers: &[Vec<u32>], start: Instant) -> Scored {
    Scored {
        result: EvalResult::score(task, problems, answers, start.elapsed().as_secs_f64()),
        digits: digit_accuracy(task, problems, answers),
    }
}

#[allow(clippy::too_many_arguments)]
fn row(
    method: String,
    kind: RowKind,
    x1_estimate: Option<&str>,
    params: usize,
    steps: Option<usize>,
    nfe: f64,
    forwards: f64,
    s: Scored,
) -> Row {
    Row {
        method,
        kind,
        x1_estimate: x1_estimate.map(str::to_string),
        params,
        steps,
        nfe_per_token: nfe,
        forwards_per_token: forwards,
        cost: None,
        accuracy: s.result.accuracy,
        correct: s.result.correct,
        total: s.result.total,
        digit_accuracy: s.digits,
        ms_per_answer: s.result.seconds_per_answer * 1e3,
    }
}

/// Creates the folders that the run's output files go to, before any training, so that a
/// path that cannot be written fails at once rather than after the training.
fn prepare_outputs(config: &QuickstartConfig) -> Result<(), DemoError> {
    let files = [&config.adapter_out, &config.diffusion.init_out];
    let parents = files
        .into_iter()
        .flatten()
        .filter_map(|f| f.parent().filter(|p| !p.as_os_str().is_empty()));
    for dir in parents.chain(config.base_out.as_deref()) {
        std::fs::create_dir_all(dir).map_err(|e| DemoError::Write {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// Runs the demo on `device`, reporting its stages as `tracing` events (one line each) on this
/// module's target.
///
/// # Errors
/// [`DemoError`] for an invalid configuration, a non-finite training loss, a failed
/// generation, or an output folder that cannot be created (before any training).
pub fn run_quickstart(
    config: &QuickstartConfig,
    device: &Device,
) -> Result<QuickstartReport, DemoError> {
    let start = Instant::now();
    let task = DigitTask::new(config.task, config.digits)?;
    let test = task.test_set(
        config.test_size,
        &mut ChaCha8Rng::seed_from_u64(config.seed + TEST_STREAM),
    )?;
    prepare_outputs(config)?;
    let shape = config.base.model;
    let model_config = shape.model_config_for(task.vocab_size())?;
    let mut training = Vec::new();
    let mut rows = Vec::new();
    tracing::info!(
        "task: {}; {} held-out problems",
        task.describe(),
        test.len()
    );

    // 1. The base model.
    tracing::info!(
        "[1/4] base model: Llama, hidden {}, {} layers, {} heads ({} kv), intermediate {}; {} \
         steps of AdamW lr {} batch {}",
        shape.hidden,
        shape.layers,
        shape.heads,
        shape.kv_heads,
        shape.intermediate,
        config.base.steps,
        config.base.lr,
        config.base.batch_size
    );
    let every = |steps: usize, n: usize| (steps / n).max(1);
    let base_every = every(config.base.steps, 4);
    let base = match &config.base_in {
        Some(dir) => {
            let base = load_base(dir, &model_config, device)?;
            tracing::info!("  loaded from {}", dir.display());
            base
        }
        None => pretrain(&task, &config.base, device, |step, loss| {
            if (step + 1) % base_every == 0 {
                tracing::info!("  step {:>5}  loss {loss:.4}", step + 1);
            }
        })?,
    };
    if let Some(dir) = &config.base_out {
        save_base(&base.model, &shape, dir)?;
        tracing::info!("  written to {}", dir.display());
    }
    let base_params = base.model.num_params();
    training.push(TrainingSummary::new(
        "base (all parameters, then frozen)",
        base_params,
        &base.losses,
        base.seconds,
    ));
    tracing::info!(
        "  trained in {:.1} s ({base_params} parameters), frozen",
        base.seconds
    );
    let t0 = Instant::now();
    let answers = greedy_answers(&base.model, &task, &test, config.eval_batch);
    let scored = score(&task, &test, &answers, t0);
    tracing::info!("  base exact match {:.3}", scored.result.accuracy);
    rows.push(row(
        "base (frozen)".into(),
        RowKind::Base,
        None,
        base_params,
        None,
        0.0,
        0.0,
        scored,
    ));

    // 2. The plain-LoRA baseline(s).
    let diffusion_size = config.diffusion.path.param_count(&model_config)?.total();
    let lora_configs = std::iter::once(&config.lora).chain(&config.extra_lora);
    for (i, lora_config) in lora_configs
        .take_while(|_| config.lora_baselines)
        .enumerate()
    {
        let adapter = lora_config.adapter_config(&model_config)?;
        let (rank, alpha) = (adapter.rank, adapter.alpha);
        let init = init_label(adapter.init);
        tracing::info!(
            "[2/4] plain-LoRA baseline {}: rank {rank}, alpha {alpha} on q/o/gate/up/down ({} \
             parameters; the diffusion path has {diffusion_size}), {init} init; {} steps of \
             AdamW lr {} β ({}, {}) batch {}",
            i + 1,
            adapter.num_params(&model_config),
            lora_config.steps,
            lora_config.lr,
            lora_config.beta_1,
            lora_config.beta_2,
            lora_config.batch_size
        );
        let lora_every = every(lora_config.steps, 5);
        let lora = train_lora(&base.model, &task, lora_config, device, |step, loss| {
            if (step + 1) % lora_every == 0 {
                tracing::info!("  step {:>5}  loss {loss:.4}", step + 1);
            }
        })?;
        let name = format!("LoRA r{rank} ({init} init)");
        training.push(TrainingSummary::new(
            name.clone(),
            lora.trainable_params,
            &lora.losses,
            lora.seconds,
        ));
        tracing::info!("  trained in {:.1} s", lora.seconds);
        let t0 = Instant::now();
        let answers = greedy_answers(&lora.model, &task, &test, config.eval_batch);
        let scored = score(&task, &test, &answers, t0);
        tracing::info!("  {name} exact match {:.3}", scored.result.accuracy);
        rows.push(row(
            name,
            RowKind::Lora,
            None,
            lora.trainable_params,
            None,
            0.0,
            0.0,
            scored,
        ));
    }

    // 3. The diffusion path.
    let d = &config.diffusion;
    tracing::info!(
        "[3/4] L2D diffusion path: mapping space {}, flow-to-LM depth {}, DiT modulation, LoRA \
         rank {} on q/o/gate/up/down ({diffusion_size} parameters); {} steps of AdamW lr {} β \
         ({}, {}) batch {}, t ~ U[0, 1] per position",
        d.path.mapping_dim,
        d.path.flow_depth,
        d.path.lora_rank,
        d.steps,
        d.lr,
        d.beta_1,
        d.beta_2,
        d.batch_size
    );
    let trained = match &config.adapter_in {
        Some(file) => {
            let t0 = Instant::now();
            let options = AdapterLoadOptions {
                config: Some(d.path.l2d_config()),
                force: false,
            };
            let path = DiffusionPath::load(file, &base.model, &options)?;
            tracing::info!("  loaded from {}", file.display());
            TrainedDiffusion {
                trainable_params: path.num_params(),
                path,
                losses: Vec::new(),
                seconds: t0.elapsed().as_secs_f64(),
            }
        }
        None => {
            let diffusion_every = every(d.steps, 5);
            let trained = train_diffusion(&base.model, &task, d, device, |step, loss| {
                if (step + 1) % diffusion_every == 0 {
                    tracing::info!("  step {:>5}  loss {loss:.4}", step + 1);
                }
            })?;
            tracing::info!(
                "  trained in {:.1} s ({} parameters)",
                trained.seconds,
                trained.trainable_params
            );
            trained
        }
    };
    training.push(TrainingSummary::new(
        "L2D diffusion path",
        trained.trainable_params,
        &trained.losses,
        trained.seconds,
    ));
    if let Some(file) = &config.adapter_out {
        trained.path.save(file, &base.model)?;
        tracing::info!("  saved to {}", file.display());
    }

    // 4. L2D at every step count, then adaptive.
    tracing::info!("[4/4] L2D evaluation (greedy over the answer digits)");
    let estimates: Vec<(&str, DiffusionOptions)> = {
        let base_options = DiffusionOptions::fixed(1)
            .with_method(Method::Euler)
            .with_seed(config.seed);
        let mut v = vec![("sample T=0", base_options.clone())];
        if config.average_at_temperature_one {
            v.push((
                "average T=1",
                base_options
                    .with_x1_estimate(X1Estimator::Average)
                    .with_temperature(TemperatureSchedule::Constant(1.0)),
            ));
        }
        v
    };
    for (label, template) in &estimates {
        for &k in &config.euler_steps {
            let mut options = template.clone();
            options.mode = DiffusionMode::Fixed {
                steps: k,
                method: Method::Euler,
            };
            let r = evaluate_l2d(&base.model, &trained, &task, &test, &options, config)?;
            tracing::info!(
                "  Euler {k:>2} steps ({label}): exact match {:.3}, {:.1} ms/answer",
                r.accuracy,
                r.ms_per_answer
            );
            rows.push(Row {
                method: format!("L2D Euler {k}"),
                kind: RowKind::L2dFixed,
                x1_estimate: Some(label.to_string()),
                steps: Some(k),
                ..r
            });
        }
    }
    if let Some(a) = config.adaptive {
        let options = DiffusionOptions::adaptive(a.method, a.rtol, a.atol).with_seed(config.seed);
        let r = evaluate_l2d(&base.model, &trained, &task, &test, &options, config)?;
        tracing::info!(
            "  {} rtol {:e} atol {:e} (sample T=0): exact match {:.3}, {:.2} NFE/token ({:.2} \
             accepted, {:.2} rejected steps, {:.2} end-point evaluations), {:.1} ms/answer",
            a.method.name(),
            a.rtol,
            a.atol,
            r.accuracy,
            r.nfe_per_token,
            r.cost.map_or(0.0, |c| c.accepted_steps),
            r.cost.map_or(0.0, |c| c.rejected_steps),
            r.cost.map_or(0.0, |c| c.zero_velocity_evaluations),
            r.ms_per_answer
        );
        rows.push(Row {
            method: format!("L2D {} {:e}", a.method.name(), a.rtol),
            kind: RowKind::L2dAdaptive,
            x1_estimate: Some("sample T=0".into()),
            ..r
        });
    }
    let analysis = if config.analysis {
        Some(analyse(&base.model, &trained, &task, &test, config, &rows)?)
    } else {
        None
    };
    Ok(QuickstartReport {
        config: config.clone(),
        training,
        rows,
        analysis,
        total_seconds: start.elapsed().as_secs_f64(),
    })
}

/// Teacher-forced times of the analysis, with the right answer in the flow state.
const ANALYSIS_TIMES: [f64; 8] = [0.0, 0.5, 0.9, 0.95, 0.98, 0.99, 0.995, 1.0];

/// Teacher-forced times of the analysis, with the frozen model's guess in the flow state.
const GUESS_TIMES: [f64; 4] = [0.9, 0.95, 0.98, 1.0];

fn analyse(
    base: &CausalLm,
    trained: &TrainedDiffusion,
    task: &DigitTask,
    test: &[Problem],
    config: &QuickstartConfig,
    rows: &[Row],
) -> Result<Analysis, DemoError> {
    tracing::info!(
        "analysis: teacher-forced accuracy of the diffusion path (right answer prefix given)"
    );
    let mut teacher_forced = Vec::new();
    let cases = ANALYSIS_TIMES
        .iter()
        .map(|&t| (t, FlowTarget::Truth))
        .chain(GUESS_TIMES.iter().map(|&t| (t, FlowTarget::BaseGuess)));
    for (t, target) in cases {
        let (exact, digits) =
            teacher_forced_accuracy(&trained.path, base, task, test, t, target, config.seed)?;
        tracing::info!(
            "  t = {t:<5} flow state from {target:?}: exact {exact:.3}, digits {}",
            digits
                .iter()
                .map(|d| format!("{d:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        teacher_forced.push(TeacherForced {
            t,
            target,
            exact,
            digits,
        });
    }
    let own: Vec<(usize, f64)> = rows
        .iter()
        .filter(|r| r.kind == RowKind::L2dFixed && r.x1_estimate.as_deref() == Some("sample T=0"))
        .filter_map(|r| r.steps.map(|k| (k, r.accuracy)))
        .collect();
    let mut noise_seeds = vec![SeedRun {
        seed: config.seed,
        accuracy: own,
    }];
    for seed in [config.seed + 1, config.seed + 2] {
        let mut accuracy = Vec::new();
        for &k in &config.euler_steps {
            let options = DiffusionOptions::fixed(k)
                .with_method(Method::Euler)
                .with_seed(seed);
            let r = evaluate_l2d(base, trained, task, test, &options, config)?;
            accuracy.push((k, r.accuracy));
        }
        tracing::info!("  generation seed {seed}: Euler (steps, exact match) {accuracy:?}");
        noise_seeds.push(SeedRun { seed, accuracy });
    }
    let mut midpoint = Vec::new();
    for &k in &config.euler_steps {
        let options = DiffusionOptions::fixed(k)
            .with_method(Method::Midpoint)
            .with_seed(config.seed);
        let r = evaluate_l2d(base, trained, task, test, &options, config)?;
        midpoint.push((r.nfe_per_token, r.accuracy));
    }
    tracing::info!("  midpoint (NFE, exact match): {midpoint:?}");
    Ok(Analysis {
        teacher_forced,
        noise_seeds,
        midpoint,
    })
}

fn evaluate_l2d(
    base: &CausalLm,
    trained: &TrainedDiffusion,
    task: &DigitTask,
    test: &[Problem],
    options: &DiffusionOptions,
    config: &QuickstartConfig,
) -> Result<Row, DemoError> {
    let t0 = Instant::now();
    let (answers, stats) =
        diffusion_answers(base, &trained.path, task, test, options, config.eval_batch)?;
    let scored = score(task, test, &answers, t0);
    let cost = cost_per_token(&stats, options);
    let (nfe, forwards) = (cost.nfe, cost.forwards);
    Ok(Row {
        cost: Some(cost),
        ..row(
            String::new(),
            RowKind::L2dFixed,
            None,
            trained.trainable_params,
            None,
            nfe,
            forwards,
            scored,
        )
    })
}

impl QuickstartReport {
    /// The table, in Markdown.
    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str(
            "| method | x1 estimate | params | steps | NFE / token | forwards / token | exact \
             match | time / answer |\n",
        );
        s.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for r in &self.rows {
            let dash = || "-".to_string();
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {:.3} | {:.2} ms |\n",
                r.method,
                r.x1_estimate.clone().unwrap_or_else(dash),
                r.params,
                r.steps.map_or_else(dash, |k| k.to_string()),
                match r.kind {
                    RowKind::Base | RowKind::Lora => dash(),
                    RowKind::L2dFixed => format!("{:.0}", r.nfe_per_token),
                    RowKind::L2dAdaptive => format!("{:.2}", r.nfe_per_token),
                },
                match r.kind {
                    RowKind::Base | RowKind::Lora => dash(),
                    _ => format!("{:.2}", r.forwards_per_token),
                },
                r.accuracy,
                r.ms_per_answer
            ));
        }
        s
    }

    /// The accuracy-vs-NFE plot: the base and LoRA rows as horizontal lines, every x1
    /// estimate's Euler rows as a line against their NFE per token, the adaptive row as a
    /// point at its mean NFE.
    pub fn plot(&self) -> LinePlot {
        let mut plot = LinePlot::new(
            format!(
                "{}: exact match on {} held-out problems",
                DigitTask::new(self.config.task, self.config.digits)
                    .map_or_else(|e| e.to_string(), |t| t.describe()),
                self.config.test_size
            ),
            "NFE per answer digit (Euler steps + 1; log scale)",
            "exact match",
        )
        .with_log2_x(true);
        plot.size = (900.0, 460.0);
        for r in &self.rows {
            if matches!(r.kind, RowKind::Base | RowKind::Lora) {
                plot = plot.series(Series::horizontal(
                    format!("{} {:.3}", r.method, r.accuracy),
                    r.accuracy,
                ));
            }
        }
        let mut estimates: Vec<&str> = Vec::new();
        for r in &self.rows {
            if let (RowKind::L2dFixed, Some(e)) = (r.kind, r.x1_estimate.as_deref())
                && !estimates.contains(&e)
            {
                estimates.push(e);
            }
        }
        for e in estimates {
            let points = self
                .rows
                .iter()
                .filter(|r| r.kind == RowKind::L2dFixed && r.x1_estimate.as_deref() == Some(e))
                .map(|r| (r.nfe_per_token, r.accuracy))
                .collect();
            plot = plot.series(Series::line(format!("L2D, {e}"), points));
        }
        for r in self.rows.iter().filter(|r| r.kind == RowKind::L2dAdaptive) {
            plot = plot.series(Series::points(
                format!(
                    "{}: {:.0} NFE",
                    r.method.trim_start_matches("L2D "),
                    r.nfe_per_token
                ),
                vec![(r.nfe_per_token, r.accuracy)],
            ));
        }
        plot
    }

    /// Writes `quickstart.json` (this report) and `quickstart.svg` (the plot) into `dir`,
    /// creating it; returns the two paths.
    ///
    /// # Errors
    /// [`DemoError::Write`] naming the file.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), DemoError> {
        self.write_named(dir, "quickstart")
    }

    /// Writes `<stem>.json` (this report) and `<stem>.svg` (the plot) into `dir`, creating
    /// it, each atomically; returns the two paths.
    ///
    /// # Errors
    /// [`DemoError::Write`] naming the file.
    pub fn write_named(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), DemoError> {
        let fail = |path: &Path, e: &dyn std::fmt::Display| DemoError::Write {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(dir, &e))?;
        let json = dir.join(format!("{stem}.json"));
        let text = serde_json::to_string_pretty(self).map_err(|e| fail(&json, &e))?;
        l2d_models::weights::write_atomically(&json, (text + "\n").as_bytes())
            .map_err(|e| fail(&json, &e))?;
        let svg = dir.join(format!("{stem}.svg"));
        self.plot().write(&svg).map_err(|e| fail(&svg, &e))?;
        Ok((json, svg))
    }
}
