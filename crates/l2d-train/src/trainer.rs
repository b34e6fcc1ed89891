//! The training run: load the model and data, then step, validate, log and checkpoint.
//! [`Trainer`] holds a run in progress with one method per part ([`Trainer::start`],
//! [`Trainer::step`], [`Trainer::log`], [`Trainer::validate`], [`Trainer::checkpoint`],
//! [`Trainer::finish`]); [`run_objective`] calls them at the configured cadence for any
//! [`Objective`] (the diffusion path or the LoRA baseline).
//!
//! Each optimizer step takes `accumulation_steps` micro-batches from the seeded epoch order
//! (epochs roll over inside a step), draws each micro-batch's timesteps, noise and class
//! dropout from a generator keyed by `(seed, step, micro-batch)`, backpropagates
//! `loss / accumulation_steps` (the reference's averaging), clips the summed gradient to a
//! global norm and applies AdamW at the scheduled rate. A micro-batch with a non-finite loss,
//! or a step whose gradient norm is not finite, is skipped and counted; past
//! `max_nonfinite` the run stops with [`TrainError::NonFinite`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use l2d_core::HostRng;
use l2d_models::chat_template::ChatTemplate;
use l2d_models::decoder::CausalLm;
use l2d_models::diffusion::DiffusionPath;
use l2d_models::lora::DecoderLora;
use l2d_models::pretrained::{LoadOptions, Pretrained, WeightFormat};
use l2d_models::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::checkpoint::{TrainState, latest_checkpoint, load_checkpoint, save_checkpoint};
use crate::config::{Method, TrainConfig};
use crate::data::read::read_chat_files;
use crate::data::{
    ClassList, Conversation, DataPosition, EncodeStats, EpochOrder, ExampleEncoder,
    TokenizedExample, collate, split_conversations,
};
use crate::error::{Result, TrainError};
use crate::memory::{MemoryBreakdown, peak_rss};
use crate::objective::Objective;
use crate::optim::AdamW;
use crate::stepper::Stepper;
use crate::validation::{ValidationMetrics, ValidationOptions};

/// Stream id of the training draws.
const TRAIN_STREAM: u64 = 0x5452_4149; // "TRAI"

/// How a run is driven (what the command line adds to the configuration).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from the run folder's latest checkpoint.
    pub resume: bool,
    /// Stop (after checkpointing) once this many steps are done, as if killed after a
    /// checkpoint; the run can be resumed to its planned end.
    pub stop_after: Option<usize>,
    /// Start afresh in a run folder that holds a previous run, deleting that run's outputs
    /// (its checkpoints, metrics, adapter and config; nothing else). Without it (or
    /// `resume`) such a folder is refused.
    pub overwrite: bool,
}

/// The model bundle a run trains on.
pub struct LoadedModel {
    /// The frozen base, on a device without autodiff.
    pub base: CausalLm,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Its chat template (or the configured file).
    pub template: ChatTemplate,
}

/// The device named by `train.device` ([`l2d_core::device_by_name`]: `cpu`, `vulkan`,
/// `wgpu`, `cuda`, `cuda:N` as built in, or `default`).
///
/// # Errors
/// [`TrainError::Config`] for a name this build does not have.
pub fn device_from_name(name: &str) -> Result<Device> {
    l2d_core::device_by_name(name).map_err(|e| TrainError::config("train.device", e.to_string()))
}

/// The weight format named by `model.dtype` ([`WeightFormat`]: `f32`, `bf16`, `f16`, or a
/// quantized base in `q8_0`, `q4_0`, `q4_1`).
///
/// # Errors
/// [`TrainError::Config`] for any other name.
pub fn weight_format_from_name(name: &str) -> Result<WeightFormat> {
    name.parse::<WeightFormat>()
        .map_err(|e| TrainError::config("model.dtype", e.to_string()))
}

/// Loads the base model, tokenizer and chat template of a configuration.
///
/// # Errors
/// [`TrainError::Model`] naming the path; [`TrainError::Config`] for a model without a chat
/// template and no `data.template_file`.
pub fn load_model(config: &TrainConfig, device: &Device) -> Result<LoadedModel> {
    let path = PathBuf::from(&config.model.path);
    let options = LoadOptions::with_format(
        device.clone(),
        weight_format_from_name(&config.model.dtype)?,
    );
    let pretrained =
        Pretrained::open(&config.model.path, &options).map_err(|e| TrainError::Model {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    let template = match &config.data.template_file {
        Some(file) => ChatTemplate::from_jinja_file(file)?
            .with_bos_token(pretrained.tokenizer.bos_token().map(|t| t.content.clone()))
            .with_eos_token(pretrained.tokenizer.eos_token().map(|t| t.content.clone())),
        None => pretrained.chat_template.clone().ok_or_else(|| {
            TrainError::config(
                "data.template_file",
                format!(
                    "`{}` has no chat template (a base model?): give one with data.template_file",
                    path.display()
                ),
            )
        })?,
    };
    Ok(LoadedModel {
        base: pretrained.model,
        tokenizer: pretrained.tokenizer,
        template,
    })
}

/// Encoded training and validation data.
#[derive(Debug, Clone)]
pub struct PreparedData {
    /// Training sequences.
    pub train: Vec<TokenizedExample>,
    /// Validation sequences.
    pub validation: Vec<TokenizedExample>,
    /// What encoding the training data kept and dropped.
    pub train_stats: EncodeStats,
    /// The same for validation.
    pub validation_stats: EncodeStats,
    /// The padding id.
    pub pad_id: u32,
}

/// Reads, splits and encodes the data of a configuration.
///
/// # Errors
/// Reading and encoding errors; [`TrainError::NoData`] when no training sequence is left.
pub fn prepare_data(config: &TrainConfig, model: &LoadedModel) -> Result<PreparedData> {
    let conversations = read_chat_files(&config.data.train)?;
    let (train, valid): (Vec<Conversation>, Vec<Conversation>) =
        match config.data.validation_fraction {
            Some(f) => split_conversations(conversations, f, config.seed)?,
            None => (conversations, read_chat_files(&config.data.validation)?),
        };
    let classes = ClassList::new(config.data.classes.clone())?;
    let encoder = ExampleEncoder::new(
        &model.tokenizer,
        &model.template,
        config.data.max_seq_len,
        config.data.layout,
    )
    .with_classes(classes)
    .with_template_name(config.data.template_name.clone());
    let (train, train_stats) = encoder.encode_all(&train)?;
    let (validation, validation_stats) = encoder.encode_all(&valid)?;
    if train.is_empty() {
        return Err(TrainError::NoData {
            what: "the training data".into(),
            reason: train_stats.to_string(),
        });
    }
    let pad_id = model
        .tokenizer
        .pad_token()
        .or(model.tokenizer.eos_token())
        .map_or(0, |t| t.id);
    // A tokenizer larger than the model's embedding can produce ids with no row to look up.
    let vocab = model.base.config().vocab_size;
    for (what, examples) in [("training", &train), ("validation", &validation)] {
        for e in examples.iter() {
            if let Some(&id) = e.input_ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(TrainError::TokenOutOfVocabulary {
                    what: format!("conversation {} of the {what} data", e.conversation),
                    id,
                    vocab,
                });
            }
        }
    }
    if pad_id as usize >= vocab {
        return Err(TrainError::TokenOutOfVocabulary {
            what: "the tokenizer's padding id".into(),
            id: pad_id,
            vocab,
        });
    }
    Ok(PreparedData {
        train,
        validation,
        train_stats,
        validation_stats,
        pad_id,
    })
}

/// A hash of encoded examples (FNV-1a over ids, labels and classes).
pub fn data_fingerprint(examples: &[TokenizedExample]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: u64| {
        for b in x.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for e in examples {
        eat(e.input_ids.len() as u64);
        e.input_ids.iter().for_each(|&t| eat(u64::from(t)));
        e.labels.iter().for_each(|&l| eat(l as u64));
        eat(e.class_id.map_or(u64::MAX, |c| c as u64));
    }
    format!("{h:016x}")
}

/// The number of optimizer steps of a configuration over `examples` training sequences.
pub fn total_steps(config: &TrainConfig, examples: usize) -> usize {
    let t = &config.train;
    t.steps.unwrap_or_else(|| {
        let micro_batches = examples.div_ceil(t.micro_batch_size);
        micro_batches.div_ceil(t.accumulation_steps).max(1) * t.epochs
    })
}

/// One line of `metrics.jsonl` for a training step window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Steps completed.
    pub step: usize,
    /// Mean micro-batch loss over the window.
    pub loss: f64,
    /// The learning rate of the last step.
    pub lr: f64,
    /// The last step's gradient norm before clipping.
    pub grad_norm: f64,
    /// Scored tokens per second over the window.
    pub tokens_per_s: f64,
    /// Seconds per optimizer step over the window.
    pub s_per_step: f64,
    /// Micro-batches skipped so far for a non-finite loss or gradient.
    pub nonfinite: usize,
    /// The epoch.
    pub epoch: usize,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Steps completed.
    pub steps: usize,
    /// The planned total.
    pub total_steps: usize,
    /// The step the run started at (0 unless resumed).
    pub start_step: usize,
    /// The adapter written at the end (absent when stopped early).
    pub adapter: Option<PathBuf>,
    /// The metrics file.
    pub metrics: PathBuf,
    /// Every validation, by step.
    pub validations: Vec<(usize, ValidationMetrics)>,
    /// Every step record logged.
    pub records: Vec<StepRecord>,
    /// Mean seconds per optimizer step.
    pub s_per_step: f64,
    /// The peak resident set of the process, bytes.
    pub peak_rss: Option<u64>,
    /// Analytic memory of a micro-batch at the longest training sequence (diffusion path
    /// runs; `None` for LoRA).
    pub memory: Option<MemoryBreakdown>,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// What encoding kept and dropped.
    pub train_stats: EncodeStats,
    /// Micro-batches skipped for non-finite values.
    pub nonfinite: usize,
}

/// Appends JSON lines to `metrics.jsonl`.
struct Metrics {
    file: std::fs::File,
    path: PathBuf,
}

impl Metrics {
    fn open(path: PathBuf, append: bool) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&path)
            .map_err(|e| TrainError::io("open", &path, e))?;
        Ok(Metrics { file, path })
    }

    fn write(&mut self, value: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{value}").map_err(|e| TrainError::io("write", &self.path, e))
    }
}

/// The `tracing` target of the events that follow a run's progress (a front end draws them
/// as a bar): each carries `step` and `total_steps`, and the last one `finished = true`. Every
/// other event of a run (its set-up, validation results, skipped batches, where the adapter
/// went) is a plain line on the target `l2d_train`.
pub const PROGRESS_TARGET: &str = "l2d_train::progress";

/// Trains as the configuration says; see the [module docs](self). Progress goes out as
/// `tracing` events (see [`PROGRESS_TARGET`]): install a subscriber to see it
/// (`tracing_subscriber::fmt::init()`, or the `l2d` binary's progress bar); without one the run
/// is silent.
///
/// # Errors
/// Configuration, model, data, checkpoint and diffusion-path errors;
/// [`TrainError::NonFinite`].
pub fn train(config: &TrainConfig, options: &RunOptions) -> Result<TrainSummary> {
    config.validate()?;
    let device = device_from_name(&config.train.device)?.without_autodiff();
    let model = load_model(config, &device)?;
    let data = prepare_data(config, &model)?;
    run(config, options, &model, &data, &device)
}

/// What a run writes in its folder (`config.toml`, `metrics.jsonl`, `checkpoints/`,
/// `adapter.safetensors`): the entries `--overwrite` deletes, and whose presence marks a
/// folder as holding a run.
pub const RUN_OUTPUTS: [&str; 4] = [
    "config.toml",
    "metrics.jsonl",
    crate::checkpoint::CHECKPOINTS,
    "adapter.safetensors",
];

/// Creates the run folder or checks that it may be used: a folder holding a previous run's
/// outputs is refused unless the run resumes it or `overwrite` is set (then those outputs,
/// and only those, are deleted first). Leftovers of interrupted checkpoint writes are
/// removed.
///
/// # Errors
/// [`TrainError::RunFolderInUse`] naming the folder; [`TrainError::Io`].
fn prepare_run_folder(out: &std::path::Path, options: &RunOptions) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| TrainError::io("create", out, e))?;
    let present: Vec<&str> = RUN_OUTPUTS
        .iter()
        .copied()
        .filter(|name| out.join(name).exists())
        .collect();
    if !present.is_empty() && !options.resume {
        if !options.overwrite {
            return Err(TrainError::RunFolderInUse {
                path: out.to_path_buf(),
                found: present.join(", "),
            });
        }
        for name in present {
            let p = out.join(name);
            let removed = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            removed.map_err(|e| TrainError::io("remove", &p, e))?;
        }
    }
    crate::checkpoint::remove_leftovers(&out.join(crate::checkpoint::CHECKPOINTS))
}

/// [`train`] on an already loaded model and prepared data.
///
/// # Errors
/// As [`train`].
pub fn run(
    config: &TrainConfig,
    options: &RunOptions,
    model: &LoadedModel,
    data: &PreparedData,
    device: &Device,
) -> Result<TrainSummary> {
    match config.method {
        Method::L2d => run_objective::<DiffusionPath>(config, options, model, data, device),
        Method::Lora => run_objective::<DecoderLora>(config, options, model, data, device),
    }
}

/// [`run`] for one [`Objective`]: [`Trainer::start`], then [`Trainer::step`] with logging,
/// validation and checkpoints at their cadence, then [`Trainer::finish`].
///
/// # Errors
/// As [`run`].
pub fn run_objective<O: Objective>(
    config: &TrainConfig,
    options: &RunOptions,
    model: &LoadedModel,
    data: &PreparedData,
    device: &Device,
) -> Result<TrainSummary> {
    let mut trainer = Trainer::<O>::start(config, options, model, data, device)?;
    let stop_at = options
        .stop_after
        .map_or(trainer.total, |s| s.min(trainer.total));
    while trainer.step < stop_at {
        let (lr, grad_norm) = trainer.step()?;
        let step = trainer.step;
        if step % config.train.log_every.max(1) == 0 || step == stop_at {
            trainer.log(lr, grad_norm)?;
        }
        let side_work = Instant::now();
        let every = config.validation.every;
        if (every > 0 && step % every == 0) || step == trainer.total {
            trainer.validate()?;
        }
        let ck = config.output.checkpoint_every;
        if (ck > 0 && step % ck == 0) || step == trainer.total || step == stop_at {
            trainer.checkpoint()?;
        }
        trainer.window.excluded += side_work.elapsed().as_secs_f64();
    }
    trainer.finish()
}

/// Sums over the steps since the last log line.
#[derive(Debug)]
struct Window {
    loss: f64,
    micro_batches: usize,
    tokens: usize,
    steps: usize,
    start: Instant,
    /// Seconds of validation and checkpointing inside the window (not step time).
    excluded: f64,
}

impl Window {
    fn new() -> Self {
        Window {
            loss: 0.0,
            micro_batches: 0,
            tokens: 0,
            steps: 0,
            start: Instant::now(),
            excluded: 0.0,
        }
    }
}

/// A training run in progress: the adapter, the optimizer and the run's position, with one
/// method per thing a run does (step, log, validate, checkpoint, finish).
pub struct Trainer<'a, O: Objective> {
    config: &'a TrainConfig,
    base: &'a CausalLm,
    data: &'a PreparedData,
    device: &'a Device,
    /// The adapter, its optimizer and the gradients of the step in progress.
    stepper: Stepper<O>,
    order: EpochOrder,
    metrics: Metrics,
    /// Optimizer steps done.
    pub step: usize,
    /// Steps the run plans.
    pub total: usize,
    start_step: usize,
    position: DataPosition,
    nonfinite: usize,
    fingerprint: String,
    valid_options: ValidationOptions,
    window: Window,
    run_start: Instant,
    records: Vec<StepRecord>,
    validations: Vec<(usize, ValidationMetrics)>,
    memory: Option<MemoryBreakdown>,
    trainable_params: usize,
}

impl<'a, O: Objective> Trainer<'a, O> {
    /// Prepares the run folder, creates the adapter (or restores the latest checkpoint with
    /// `options.resume`), writes the start line and, on a fresh run, validates at step 0.
    ///
    /// # Errors
    /// As [`run`].
    pub fn start(
        config: &'a TrainConfig,
        options: &RunOptions,
        model: &'a LoadedModel,
        data: &'a PreparedData,
        device: &'a Device,
    ) -> Result<Self> {
        let out = &config.output.dir;
        prepare_run_folder(out, options)?;
        crate::checkpoint::write_atomically(&out.join("config.toml"), config.to_toml().as_bytes())?;
        let base = &model.base;
        let total = total_steps(config, data.train.len());
        let fingerprint = data_fingerprint(&data.train);
        let adam = AdamW::new(config.optim.adamw());
        let resume_from = match options.resume {
            true => Some(
                latest_checkpoint(out)?.ok_or_else(|| TrainError::Checkpoint {
                    path: out.join(crate::checkpoint::CHECKPOINTS),
                    reason: "--resume given but the run folder has no checkpoint".into(),
                })?,
            ),
            false => None,
        };
        let (adapter, adam, step, position, nonfinite) = match &resume_from {
            Some(dir) => {
                let ckpt = load_checkpoint::<O>(dir, base, adam)?;
                check_resume(dir, &ckpt.state, config, &fingerprint, total)?;
                let s = ckpt.state;
                (ckpt.adapter, ckpt.adam, s.step, s.position, s.nonfinite)
            }
            None => (
                O::create(config, base)?,
                adam,
                0,
                DataPosition::default(),
                0,
            ),
        };
        let stepper = Stepper::new(adapter, adam, device);
        let adapter = stepper.adapter();
        let t = &config.train;
        let trainable_params = adapter.num_params();
        let longest = data
            .train
            .iter()
            .map(TokenizedExample::len)
            .max()
            .unwrap_or(0);
        let memory = adapter.memory(base, t.micro_batch_size, longest);
        let mut metrics = Metrics::open(out.join("metrics.jsonl"), resume_from.is_some())?;
        tracing::info!(
            target: "l2d_train",
            "l2d train ({}): {} training sequences ({}), {} validation; {} steps of {} x {} \
             sequences; {} trainable parameters",
            O::NAME,
            data.train.len(),
            data.train_stats,
            data.validation.len(),
            total,
            t.accumulation_steps,
            t.micro_batch_size,
            trainable_params
        );
        tracing::info!(
            target: PROGRESS_TARGET,
            step,
            total_steps = total,
            "starting at step {step} of {total}"
        );
        metrics.write(json!({
            "kind": "start",
            "step": step,
            "total_steps": total,
            "train_sequences": data.train.len(),
            "validation_sequences": data.validation.len(),
            "train_data": data.train_stats,
            "validation_data": data.validation_stats,
            "trainable_params": trainable_params,
            "method": config.method,
            "resumed_from": resume_from.as_ref().map(|p| p.display().to_string()),
        }))?;
        let v = &config.validation;
        let mut trainer = Trainer {
            config,
            base,
            data,
            device,
            stepper,
            order: EpochOrder::new(data.train.len(), config.seed, config.data.shuffle),
            metrics,
            step,
            total,
            start_step: step,
            position,
            nonfinite,
            fingerprint,
            valid_options: ValidationOptions {
                batch_size: v.batch_size,
                max_batches: v.max_batches,
                t_bins: v.t_bins,
                nstep_grid_points: v.nstep_grid_points,
                nstep_batches: v.nstep_batches,
                seed: config.seed,
                pad_id: data.pad_id,
                known_base_accuracy: None,
            },
            window: Window::new(),
            run_start: Instant::now(),
            records: Vec::new(),
            validations: Vec::new(),
            memory,
            trainable_params,
        };
        if step == 0 {
            trainer.validate()?;
            trainer.window = Window::new();
        }
        Ok(trainer)
    }

    /// The adapter being trained.
    pub fn adapter(&self) -> &O {
        self.stepper.adapter()
    }

    /// Counts a skipped micro-batch or update; past `train.max_nonfinite`, the run stops.
    fn skip(&mut self, message: String) -> Result<()> {
        self.nonfinite += 1;
        tracing::warn!(target: "l2d_train", nonfinite = self.nonfinite, "{message}");
        let limit = self.config.train.max_nonfinite;
        if self.nonfinite > limit {
            return Err(TrainError::NonFinite {
                step: self.step + 1,
                count: self.nonfinite,
                limit,
            });
        }
        Ok(())
    }

    /// One optimizer step: `accumulation_steps` micro-batches from the epoch order (each with
    /// its draws keyed by `(seed, step, micro-batch)`), then clipping and AdamW at the
    /// scheduled rate. Returns the rate and the gradient norm before clipping (NaN when no
    /// micro-batch gave a gradient).
    ///
    /// # Errors
    /// The objective's errors; [`TrainError::NonFinite`] past the limit.
    pub fn step(&mut self) -> Result<(f64, f64)> {
        let t = &self.config.train;
        let (accum, micro_batch) = (t.accumulation_steps, t.micro_batch_size);
        let lr = self.config.schedule_shape(self.total).lr(self.step);
        for micro in 0..accum {
            let indices = self.order.next_batch(&mut self.position, micro_batch);
            let refs: Vec<&TokenizedExample> =
                indices.iter().map(|&i| &self.data.train[i]).collect();
            let batch = collate(&refs, self.data.pad_id, self.device);
            let mut rng = HostRng::new(self.config.seed)
                .derive(TRAIN_STREAM)
                .derive((self.step * accum + micro) as u64);
            let micro_result =
                self.stepper
                    .micro_step(self.base, &batch, &mut rng, 1.0 / accum as f64)?;
            if micro_result.accumulated {
                self.window.loss += micro_result.loss;
                self.window.micro_batches += 1;
                self.window.tokens += micro_result.scored;
            } else if micro_result.scored > 0 {
                self.skip(format!(
                    "step {}: micro-batch {micro} has a non-finite loss ({}); skipped",
                    self.step + 1,
                    micro_result.loss
                ))?;
            }
        }
        let mut grad_norm = f64::NAN;
        if let Some(update) = self.stepper.update(lr) {
            grad_norm = update.grad_norm;
            if !update.applied {
                self.skip(format!(
                    "step {}: non-finite gradient norm; update skipped",
                    self.step + 1
                ))?;
            }
        }
        self.step += 1;
        self.window.steps += 1;
        Ok((lr, grad_norm))
    }

    /// Writes the step record of the window since the last one (loss, rate, gradient norm,
    /// speed without validation and checkpoint time) and starts a new window.
    ///
    /// # Errors
    /// [`TrainError::Io`] writing `metrics.jsonl`.
    pub fn log(&mut self, lr: f64, grad_norm: f64) -> Result<()> {
        let w = &self.window;
        let elapsed = (w.start.elapsed().as_secs_f64() - w.excluded).max(0.0);
        let record = StepRecord {
            step: self.step,
            loss: if w.micro_batches > 0 {
                w.loss / w.micro_batches as f64
            } else {
                f64::NAN
            },
            lr,
            grad_norm,
            tokens_per_s: w.tokens as f64 / elapsed.max(1e-9),
            s_per_step: elapsed / w.steps.max(1) as f64,
            nonfinite: self.nonfinite,
            epoch: self.position.epoch,
        };
        let message = format!(
            "step {}/{} loss {:.4} lr {:.3e} |g| {:.3} {:.2} s/step",
            self.step, self.total, record.loss, record.lr, record.grad_norm, record.s_per_step
        );
        tracing::info!(
            target: PROGRESS_TARGET,
            step = self.step,
            total_steps = self.total,
            loss = record.loss,
            lr = record.lr,
            grad_norm = record.grad_norm,
            s_per_step = record.s_per_step,
            "{message}"
        );
        let mut line = serde_json::to_value(&record).unwrap_or_default();
        line["kind"] = json!("train");
        self.metrics.write(line)?;
        self.records.push(record);
        self.window = Window::new();
        Ok(())
    }

    /// Validates the adapter at this step (nothing without validation data) and writes the
    /// result with the seconds it took.
    ///
    /// # Errors
    /// The objective's errors; [`TrainError::Io`].
    pub fn validate(&mut self) -> Result<()> {
        if self.data.validation.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let v = self.adapter().validate(
            self.base,
            &self.data.validation,
            &self.valid_options,
            self.device,
        )?;
        let seconds = started.elapsed().as_secs_f64();
        // The frozen base does not change: its accuracy on these examples is measured once.
        self.valid_options.known_base_accuracy = v.base_accuracy;
        tracing::info!(
            target: "l2d_train",
            step = self.step,
            loss = v.loss,
            seconds,
            "{}",
            valid_line(self.step, &v)
        );
        self.metrics.write(
            json!({"kind": "validation", "step": self.step, "seconds": seconds, "metrics": v}),
        )?;
        self.validations.push((self.step, v));
        Ok(())
    }

    /// Saves a checkpoint of this step (atomically; the newest `output.keep_last` are kept).
    ///
    /// # Errors
    /// [`TrainError::Io`] / [`TrainError::Checkpoint`] naming the file.
    pub fn checkpoint(&mut self) -> Result<PathBuf> {
        let t = &self.config.train;
        let state = TrainState {
            version: 1,
            step: self.step,
            total_steps: self.total,
            position: self.position,
            nonfinite: self.nonfinite,
            seed: self.config.seed,
            data_fingerprint: self.fingerprint.clone(),
            micro_batch_size: t.micro_batch_size,
            accumulation_steps: t.accumulation_steps,
        };
        let dir = save_checkpoint(
            &self.config.output.dir,
            self.stepper.adapter(),
            self.base,
            self.stepper.adam(),
            &state,
            self.config.output.keep_last,
        )?;
        self.metrics
            .write(json!({"kind": "checkpoint", "step": self.step, "dir": dir}))?;
        Ok(dir)
    }

    /// Ends the run: the adapter goes to `RUN/adapter.safetensors` when the planned steps
    /// are done, the end line to `metrics.jsonl`.
    ///
    /// # Errors
    /// [`TrainError::Checkpoint`] writing the adapter; [`TrainError::Io`].
    pub fn finish(mut self) -> Result<TrainSummary> {
        tracing::info!(
            target: PROGRESS_TARGET,
            step = self.step,
            total_steps = self.total,
            finished = true,
            "training loop ended at step {} of {}",
            self.step,
            self.total
        );
        let out = &self.config.output.dir;
        let adapter = if self.step == self.total {
            let file = out.join("adapter.safetensors");
            self.adapter().save(&file, self.base)?;
            tracing::info!(target: "l2d_train", "adapter written to {}", file.display());
            Some(file)
        } else {
            None
        };
        let steps_run = self.step - self.start_step;
        let summary = TrainSummary {
            steps: self.step,
            total_steps: self.total,
            start_step: self.start_step,
            adapter,
            metrics: out.join("metrics.jsonl"),
            validations: self.validations,
            records: self.records,
            s_per_step: self.run_start.elapsed().as_secs_f64() / steps_run.max(1) as f64,
            peak_rss: peak_rss(),
            memory: self.memory,
            trainable_params: self.trainable_params,
            train_stats: self.data.train_stats.clone(),
            nonfinite: self.nonfinite,
        };
        self.metrics.write(json!({
            "kind": "end",
            "step": summary.steps,
            "s_per_step": summary.s_per_step,
            "peak_rss_bytes": summary.peak_rss,
            "memory_estimate_bytes": summary.memory,
        }))?;
        Ok(summary)
    }
}

fn valid_line(step: usize, v: &ValidationMetrics) -> String {
    let acc = match (v.nstep_accuracy, v.accuracy, v.base_accuracy) {
        (Some(n), _, Some(b)) => format!(" n-step acc {n:.4} (base {b:.4})"),
        (None, Some(a), Some(b)) => format!(" acc {a:.4} (base {b:.4})"),
        _ => String::new(),
    };
    format!(
        "validation at step {step}: loss {:.4} over {} tokens{acc}",
        v.loss, v.tokens
    )
}

/// Refuses to resume a run on other data, another seed or other batching.
fn check_resume(
    dir: &Path,
    state: &TrainState,
    config: &TrainConfig,
    fingerprint: &str,
    total: usize,
) -> Result<()> {
    let mismatch = |what: &str, saved: String, now: String| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        reason: format!(
            "cannot resume: {what} is {now} but the checkpoint was made with {saved}; resuming \
             would not continue the same run"
        ),
    };
    if state.seed != config.seed {
        return Err(mismatch(
            "the seed",
            state.seed.to_string(),
            config.seed.to_string(),
        ));
    }
    if state.data_fingerprint != fingerprint {
        return Err(mismatch(
            "the encoded training data (fingerprint)",
            state.data_fingerprint.clone(),
            fingerprint.to_string(),
        ));
    }
    if state.micro_batch_size != config.train.micro_batch_size
        || state.accumulation_steps != config.train.accumulation_steps
    {
        return Err(mismatch(
            "the batching (micro_batch_size x accumulation_steps)",
            format!("{} x {}", state.micro_batch_size, state.accumulation_steps),
            format!(
                "{} x {}",
                config.train.micro_batch_size, config.train.accumulation_steps
            ),
        ));
    }
    if state.total_steps != total {
        return Err(mismatch(
            "the planned number of steps (it sets the learning-rate schedule)",
            state.total_steps.to_string(),
            total.to_string(),
        ));
    }
    if state.step > total {
        return Err(mismatch(
            "the planned number of steps",
            state.step.to_string(),
            total.to_string(),
        ));
    }
    Ok(())
}
