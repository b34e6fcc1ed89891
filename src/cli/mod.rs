//! The `l2d generate`, `l2d chat`, `l2d info`, `l2d train` and `l2d data inspect` commands:
//! their clap arguments and logic, as library functions (the `l2d` binary only parses and
//! dispatches). The libraries under them (`l2d-models`, `l2d-train`) have no command-line code.
//!
//! - [`generate`]: complete one or more prompts, streaming the tokens of a single prompt.
//! - [`chat`]: a conversation on standard input, one user message per line.
//! - [`info`]: the model, the adapter and the parameter counts.
//! - [`train`](mod@train): training and the data listing.
//! - [`logging`]: the lines and the progress bar the binary shows of the libraries' `tracing`
//!   events.
//!
//! The model is a Hugging Face folder (or an `org/name` of the local cache) or a GGUF file;
//! `--adapter` is a diffusion adapter (`l2d train`'s `adapter.safetensors`, or a reference
//! checkpoint with `--adapter-config`). Diffusion flags (`--steps`, `--solver`, `--rtol`,
//! `--atol`, `--max-nfe`, `--guidance-*`, `--x1*`) need an adapter; `--base-only` ignores the
//! adapter and generates with the frozen model.
//!
//! `--steps N` is the number of solver steps over a uniform grid of `N + 1` points from noise
//! (t = 0) to data (t = 1); the NFE per token is `N × stages + 1` (midpoint: `2N + 1`; the
//! default, 7 steps, is the paper's 15 NFE). An adaptive solver (`bosh3`, `dopri5`, `tsit5`,
//! `fehlberg2`, `adaptive_heun`) takes `--rtol`/`--atol` (default 1e-5, the reference's) and
//! an optional `--max-nfe` budget per token instead.

pub mod chat;
pub mod generate;
pub mod info;
pub mod logging;
pub mod train;

use std::io::Write;
use std::path::{Path, PathBuf};

use l2d_core::TemperatureSchedule;
use l2d_core::X1Estimator;
use l2d_models::diffusion::{AdapterLoadOptions, DiffusionError, DiffusionPath};
use l2d_models::generation::{
    BudgetPolicy, DEFAULT_TOLERANCE, DiffusionGenerationError, DiffusionMode, DiffusionOptions,
    DiffusionStats, GenerationConfig, GenerationError, GenerationOutput, GuidanceOptions,
    StopReason,
};
use l2d_models::l2d_config::{L2dConfig, L2dConfigError};
use l2d_models::lora::DecoderLora;
use l2d_models::pretrained::{LoadOptions, Pretrained, PretrainedError};
use l2d_models::sampling::SamplingConfig;
use l2d_solvers::Method;

pub use chat::{ChatArgs, run_chat};
pub use generate::{GenerateArgs, run_generate};
pub use info::{InfoArgs, run_info};
pub use train::{DataInspectArgs, TrainArgs, run_data_inspect, run_train};

/// Errors of the commands; each names the flag or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag's value, or a combination of flags, is invalid.
    #[error("invalid `{flag}`: {reason}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A file given on the command line does not exist.
    #[error("{what} `{path}` does not exist")]
    Missing {
        /// What the file is.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// The model could not be loaded or a prompt could not be built.
    #[error(transparent)]
    Model(#[from] PretrainedError),
    /// The adapter could not be loaded or does not fit the model.
    #[error("adapter `{path}`: {source}")]
    Adapter {
        /// The adapter file.
        path: PathBuf,
        /// What went wrong.
        source: Box<DiffusionError>,
    },
    /// An L2D configuration file could not be read.
    #[error(transparent)]
    Config(#[from] L2dConfigError),
    /// The diffusion options do not fit the model or adapter.
    #[error(transparent)]
    Diffusion(#[from] DiffusionGenerationError),
    /// Generation failed.
    #[error(transparent)]
    Generation(#[from] GenerationError),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
    /// Reading the messages from standard input failed (e.g. bytes that are not UTF-8).
    #[error("cannot read standard input: {0}")]
    Input(std::io::Error),
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> CliError {
    CliError::Invalid {
        flag,
        reason: reason.into(),
    }
}

/// Where the model (and adapter) come from.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// The model: a Hugging Face folder, an `org/name` of the local cache, or a GGUF file.
    #[arg(long, value_name = "PATH")]
    pub model: String,
    /// A diffusion adapter (`adapter.safetensors` of `l2d train`, or a reference checkpoint
    /// with `--adapter-config`).
    #[arg(long, value_name = "FILE")]
    pub adapter: Option<PathBuf>,
    /// The L2D configuration of an adapter file without one (a reference checkpoint):
    /// `l2d_config.json` or a reference `.cfg`.
    #[arg(long, value_name = "FILE", requires = "adapter")]
    pub adapter_config: Option<PathBuf>,
    /// Load the adapter even if it was trained on other base weights (fingerprint mismatch).
    #[arg(long, requires = "adapter")]
    pub force_adapter: bool,
    /// A LoRA adapter (`l2d train` with `method = "lora"`, or PEFT's
    /// `adapter_model.safetensors` with its `adapter_config.json`), folded into the model's
    /// weights.
    #[arg(long, value_name = "FILE", conflicts_with = "adapter")]
    pub lora: Option<PathBuf>,
    /// Device: `cpu`, or `vulkan` / `wgpu` / `cuda` when built with that feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weights: `f32`, `bf16` or `f16` for every tensor, or `q8_0` / `q4_0` / `q4_1` for
    /// the frozen projections kept in blocks on the CPU (a GGUF's own blocks where it has
    /// them; other weights quantized on load).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

/// How each new token is produced.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DiffusionArgs {
    /// Generate with the frozen model alone (ignores the adapter and the diffusion flags).
    #[arg(long)]
    pub base_only: bool,
    /// Solver steps per token over a uniform grid of STEPS + 1 points (default 7: midpoint's
    /// 15 NFE, the paper's default); 0 is the base model.
    #[arg(long)]
    pub steps: Option<usize>,
    /// The ODE solver: euler, midpoint (default), heun2, rk4 (3/8 rule), rk4_classic, or an
    /// adaptive one: bosh3, dopri5, tsit5, fehlberg2, adaptive_heun.
    #[arg(long)]
    pub solver: Option<String>,
    /// Relative tolerance of an adaptive solver (default 1e-5).
    #[arg(long)]
    pub rtol: Option<f64>,
    /// Absolute tolerance of an adaptive solver (default 1e-5).
    #[arg(long)]
    pub atol: Option<f64>,
    /// Most solver evaluations per token of an adaptive solver.
    #[arg(long)]
    pub max_nfe: Option<usize>,
    /// At the budget, solve the token again on a fixed grid of this many steps instead of
    /// failing.
    #[arg(long, requires = "max_nfe")]
    pub budget_fallback_steps: Option<usize>,
    /// The whole diffusion setting in the grammar of `l2d eval --settings` (`7`,
    /// `3:heun2`, `adaptive:bosh3:rtol=1e-3:max-nfe=64:fallback=4`, `base`, or the SDE
    /// sampler `sde:8:sigma=1`), instead of --steps, --solver, --rtol, --atol, --max-nfe and
    /// --budget-fallback-steps.
    #[arg(
        long,
        value_name = "SETTING",
        conflicts_with_all = ["steps", "solver", "rtol", "atol", "max_nfe", "budget_fallback_steps"]
    )]
    pub setting: Option<String>,
    /// The x1 estimate inside the ODE: sample, average, argmax or clamp (default: the
    /// adapter's).
    #[arg(long)]
    pub x1: Option<String>,
    /// Temperature schedule of the x1 estimate: a number, `1-t`, or
    /// `polynomial_<power>_<end>` (default: the adapter's).
    #[arg(long)]
    pub x1_temperature: Option<String>,
    /// Guide toward this class (an index; the adapter's number of classes is the null class).
    #[arg(long)]
    pub guidance_class: Option<usize>,
    /// Classifier-free guidance weight w (v = w·v(class) + (1 − w)·v(null); default 1).
    #[arg(long, requires = "guidance_class")]
    pub guidance_weight: Option<f64>,
    /// Guidance only for t in START,END.
    #[arg(long, value_name = "START,END", requires = "guidance_class")]
    pub guidance_interval: Option<String>,
    /// Seed of the diffusion noise and of sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run the first solver stage as a diffusion forward instead of reusing the frozen pass.
    #[arg(long, hide = true)]
    pub no_fuse: bool,
}

/// How the token is chosen from the final logits.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 (default) is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than min-p times the most likely one.
    #[arg(long)]
    pub min_p: Option<f32>,
    /// The most new tokens per reply.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Stop when the text contains this (repeatable; the text is cut before it).
    #[arg(long = "stop", value_name = "TEXT")]
    pub stops: Vec<String>,
    /// A prompt longer than the model's context is an error; with `left` its oldest tokens
    /// are dropped instead, keeping room for `--max-new-tokens` (at least one prompt token).
    #[arg(long, value_enum)]
    pub truncate: Option<Truncate>,
}

/// How a prompt that does not fit the model's context is shortened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Truncate {
    /// Drop the oldest tokens (the start of the prompt).
    Left,
}

impl SamplingArgs {
    /// `ids` fitted to a model `context` positions long: unchanged when it fits; with
    /// `--truncate left`, its last `max(1, context - max_new_tokens)` tokens when it does not
    /// (a note on `log` says how many were dropped); otherwise unchanged, for generation to
    /// refuse with a typed error.
    fn fit_prompt(&self, ids: Vec<u32>, context: usize, log: &mut impl Write) -> Vec<u32> {
        if ids.len() <= context || self.truncate.is_none() {
            return ids;
        }
        let keep = context.saturating_sub(self.max_new_tokens).max(1);
        let dropped = ids.len() - keep;
        note(
            log,
            format!(
                "the prompt's {} tokens exceed the model's context of {context}: its first \
                 {dropped} were dropped (--truncate left)",
                ids.len()
            ),
        );
        ids[dropped..].to_vec()
    }
}

/// A note when a reply stopped because the sequence filled the model's context.
fn note_context_full(log: &mut impl Write, output: &GenerationOutput, context: usize) {
    let full = output
        .sequences
        .iter()
        .filter(|s| s.stop_reason == StopReason::ContextFull)
        .count();
    if full > 0 {
        note(
            log,
            format!(
                "{full} of {} replies stopped early: the sequence filled the model's context of \
                 {context} positions",
                output.sequences.len()
            ),
        );
    }
}

impl SamplingArgs {
    /// The generation configuration (the model's EOS ids are added when generating).
    ///
    /// # Errors
    /// [`CliError::Invalid`] for out-of-range sampling parameters.
    pub fn generation_config(&self, seed: u64) -> Result<GenerationConfig, CliError> {
        let sampling = SamplingConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            seed,
        };
        sampling
            .validate()
            .map_err(|e| invalid("--temperature/--top-k/--top-p/--min-p", e.to_string()))?;
        let mut config = GenerationConfig::sampled(sampling, self.max_new_tokens);
        for s in &self.stops {
            if s.is_empty() {
                return Err(invalid("--stop", "an empty stop string"));
            }
            config.stops.add_string(s.clone());
        }
        Ok(config)
    }
}

/// A loaded model with its optional adapter.
#[derive(Debug)]
pub struct Loaded {
    /// The model bundle.
    pub lm: Pretrained,
    /// The diffusion path (cast to the model's dtype), if an adapter was loaded.
    pub adapter: Option<DiffusionPath>,
}

fn parse_method(name: &str) -> Result<Method, CliError> {
    name.parse()
        .map_err(|e: l2d_solvers::UnknownMethod| invalid("--solver", e.to_string()))
}

impl DiffusionArgs {
    /// Whether any flag asks for diffusion (so an adapter is needed).
    fn asks_for_diffusion(&self) -> Option<&'static str> {
        [
            (self.steps.is_some_and(|s| s > 0), "--steps"),
            (
                self.setting.as_deref().is_some_and(|s| s.trim() != "base"),
                "--setting",
            ),
            (self.solver.is_some(), "--solver"),
            (self.rtol.is_some(), "--rtol"),
            (self.atol.is_some(), "--atol"),
            (self.max_nfe.is_some(), "--max-nfe"),
            (self.x1.is_some(), "--x1"),
            (self.x1_temperature.is_some(), "--x1-temperature"),
            (self.guidance_class.is_some(), "--guidance-class"),
        ]
        .into_iter()
        .find_map(|(on, flag)| on.then_some(flag))
    }

    /// The mode of `--steps`, `--solver`, `--rtol`, `--atol`, `--max-nfe` and
    /// `--budget-fallback-steps` (the flags' spelling of a [`DiffusionMode`]). The flags'
    /// combinations are checked here; their values by [`DiffusionMode::validate`], the one
    /// check of every spelling, whose field names the flag in the error.
    fn mode_from_flags(&self) -> Result<DiffusionMode, CliError> {
        let method = match &self.solver {
            Some(name) => parse_method(name)?,
            None => Method::Midpoint,
        };
        let mode = if method.is_adaptive() {
            if let Some(steps) = self.steps {
                return Err(invalid(
                    "--steps",
                    format!(
                        "{steps} steps with the adaptive solver {method}: an adaptive solver \
                         chooses its steps (set --rtol/--atol/--max-nfe), or pick a fixed-grid \
                         solver (euler, midpoint, heun2, rk4)"
                    ),
                ));
            }
            DiffusionMode::Adaptive {
                method,
                rtol: self.rtol.unwrap_or(DEFAULT_TOLERANCE),
                atol: self.atol.unwrap_or(DEFAULT_TOLERANCE),
                max_nfe: self.max_nfe,
                on_budget: self
                    .budget_fallback_steps
                    .map_or(BudgetPolicy::Error, |steps| BudgetPolicy::FixedGrid {
                        steps,
                    }),
            }
        } else {
            for (set, flag) in [
                (self.rtol.is_some(), "--rtol"),
                (self.atol.is_some(), "--atol"),
                (self.max_nfe.is_some(), "--max-nfe"),
            ] {
                if set {
                    return Err(invalid(
                        flag,
                        format!(
                            "only adaptive solvers (bosh3, dopri5, tsit5, fehlberg2, \
                             adaptive_heun) take tolerances and budgets; {method} runs a fixed \
                             grid of --steps steps"
                        ),
                    ));
                }
            }
            match self.steps.unwrap_or(7) {
                0 => DiffusionMode::Base,
                steps => DiffusionMode::Fixed { steps, method },
            }
        };
        mode.validate().map_err(|e| match e {
            DiffusionGenerationError::Invalid { field, reason } => invalid(
                match field {
                    "method" => "--solver",
                    "tolerances" => "--rtol/--atol",
                    "max_nfe" => "--max-nfe",
                    "on_budget" => "--budget-fallback-steps",
                    _ => "--steps",
                },
                reason,
            ),
            other => CliError::Diffusion(other),
        })?;
        Ok(mode)
    }

    /// The generator options these flags describe (before checking them against the
    /// adapter).
    ///
    /// # Errors
    /// [`CliError::Invalid`] for unknown names, contradictory flags (`--steps` with an
    /// adaptive solver, tolerances with a fixed one) and malformed values.
    pub fn options(&self) -> Result<DiffusionOptions, CliError> {
        if self.base_only {
            return Ok(DiffusionOptions::base().with_seed(self.seed));
        }
        let mut options = match &self.setting {
            Some(text) => DiffusionOptions::from_mode(
                text.parse::<DiffusionMode>()
                    .map_err(|e| invalid("--setting", e.to_string()))?,
            ),
            None => DiffusionOptions::from_mode(self.mode_from_flags()?),
        };
        options.seed = self.seed;
        options.fused_first_evaluation = !self.no_fuse;
        if let Some(x1) = &self.x1 {
            options.x1_estimate = Some(
                x1.parse::<X1Estimator>()
                    .map_err(|e| invalid("--x1", e.to_string()))?,
            );
        }
        if let Some(t) = &self.x1_temperature {
            options.temperature = Some(
                t.parse::<TemperatureSchedule>()
                    .map_err(|e| invalid("--x1-temperature", e.to_string()))?,
            );
        }
        if let Some(class) = self.guidance_class {
            let interval = match &self.guidance_interval {
                None => None,
                Some(text) => {
                    let parts: Vec<f64> = text
                        .split(',')
                        .map(|p| p.trim().parse::<f64>())
                        .collect::<Result<_, _>>()
                        .map_err(|_| invalid("--guidance-interval", format!("{text:?}")))?;
                    match parts[..] {
                        [a, b] => Some((a, b)),
                        _ => {
                            return Err(invalid(
                                "--guidance-interval",
                                format!("{text:?}: expected START,END"),
                            ));
                        }
                    }
                }
            };
            options.guidance = Some(GuidanceOptions {
                class,
                weight: self.guidance_weight.unwrap_or(1.0),
                interval,
            });
        }
        Ok(options)
    }
}

impl ModelArgs {
    /// Loads the model and, unless `base_only`, the adapter (cast to the model's dtype).
    ///
    /// # Errors
    /// [`CliError::Missing`] for a model or adapter path that does not exist,
    /// [`CliError::Invalid`] for the device or dtype, [`CliError::Model`],
    /// [`CliError::Adapter`] for an adapter that cannot be read or does not fit the model.
    pub fn load(&self, base_only: bool) -> Result<Loaded, CliError> {
        let device = crate::eval::run::parse_device(&self.device)
            .map_err(|e| invalid("--device", e.to_string()))?;
        let format = crate::eval::run::parse_dtype(&self.dtype)
            .map_err(|e| invalid("--dtype", e.to_string()))?;
        let model_path = Path::new(&self.model);
        let looks_like_path = self.model.starts_with('.')
            || self.model.starts_with('/')
            || self.model.ends_with(".gguf")
            || self.model.matches('/').count() != 1;
        if looks_like_path && !model_path.exists() {
            return Err(CliError::Missing {
                what: "model",
                path: model_path.to_path_buf(),
            });
        }
        let adapter_path = self.adapter.as_ref().filter(|_| !base_only);
        if let Some(p) = adapter_path
            && !p.is_file()
        {
            return Err(CliError::Missing {
                what: "adapter",
                path: p.clone(),
            });
        }
        let config = match &self.adapter_config {
            Some(p) if !base_only => {
                if !p.is_file() {
                    return Err(CliError::Missing {
                        what: "adapter configuration",
                        path: p.clone(),
                    });
                }
                Some(L2dConfig::from_file(p)?)
            }
            _ => None,
        };
        if let Some(p) = &self.lora
            && !p.is_file()
        {
            return Err(CliError::Missing {
                what: "LoRA adapter",
                path: p.clone(),
            });
        }
        let mut lm = Pretrained::open(&self.model, &LoadOptions::with_format(device, format))?;
        if let Some(path) = &self.lora {
            let lora = DecoderLora::load(path, &lm.model, false)
                .map_err(|e| invalid("--lora", e.to_string()))?;
            lm.model = lora.merge_into(&lm.model);
        }
        let adapter = match adapter_path {
            None => None,
            Some(path) => {
                let options = AdapterLoadOptions {
                    config,
                    force: self.force_adapter,
                };
                let p = DiffusionPath::load(path, &lm.model, &options).map_err(|source| {
                    CliError::Adapter {
                        path: path.clone(),
                        source: Box::new(source),
                    }
                })?;
                Some(p.cast(lm.model.dtype()))
            }
        };
        Ok(Loaded { lm, adapter })
    }
}

/// Checks that diffusion flags come with an adapter.
///
/// # Errors
/// [`CliError::Invalid`] naming the first diffusion flag given without `--adapter`.
pub fn check_adapter_given(model: &ModelArgs, diffusion: &DiffusionArgs) -> Result<(), CliError> {
    if diffusion.base_only || model.adapter.is_some() {
        return Ok(());
    }
    match diffusion.asks_for_diffusion() {
        Some(flag) => Err(invalid(
            flag,
            "diffusion needs a trained adapter: pass --adapter FILE (or --base-only / \
             --steps 0 for the frozen model)",
        )),
        None => Ok(()),
    }
}

/// The closing statistics line of a generation: tokens per second and NFE per token.
pub fn stats_line(generation: &GenerationOutput, diffusion: &DiffusionStats) -> String {
    let s = &generation.stats;
    let nfe = diffusion.mean_nfe_per_token();
    let calls = diffusion.tokens.len().max(1) as f64;
    let forwards = diffusion.diffusion_forwards() as f64 / calls;
    let mode = if nfe == 0.0 {
        "base model".to_string()
    } else {
        format!(
            "{forwards:.1} diffusion forwards per step{}",
            if diffusion.fused_evaluations() > 0 {
                ", first stage fused into the frozen pass"
            } else {
                ""
            }
        )
    };
    format!(
        "{} tokens in {:.2} s: {:.1} tokens/s (prefill {} tokens in {:.2} s, decode {:.1} \
         tokens/s); NFE per token {:.1} ({mode})",
        s.new_tokens,
        s.total_time.as_secs_f64(),
        s.tokens_per_second(),
        s.prompt_tokens,
        s.prefill_time.as_secs_f64(),
        s.decode_tokens_per_second(),
        nfe,
    )
}

/// Writes `text` and flushes (streamed tokens appear as they come).
/// Writes a diagnostic line (the set-up, the statistics) to `log`, best effort: a log that
/// cannot be written (a full disk, a closed pipe) never stops the work or its output.
fn note(log: &mut impl Write, line: impl std::fmt::Display) {
    let _ = writeln!(log, "{line}");
    let _ = log.flush();
}

fn emit(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    out.write_all(text.as_bytes())?;
    out.flush()
}
