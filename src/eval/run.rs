//! `l2d eval`: the sweep itself, as library functions and the command's clap arguments.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use burn::tensor::Device;
use l2d_models::chat_template::ChatMessage;
use l2d_models::decoder::CausalLm;
use l2d_models::diffusion::{AdapterLoadOptions, DiffusionPath};
use l2d_models::generation::{
    BaseStep, DiffusionOptions, Flow, GenerationConfig, Generator, TokenStep,
};
use l2d_models::lora::DecoderLora;
use l2d_models::pretrained::{LoadOptions, Pretrained, WeightFormat};
use l2d_models::sampling::SamplingConfig;

use super::EvalError;
use super::extract::Extraction;
use super::report::{EvalReport, ItemResult, SettingResult};
use super::setting::Setting;
use super::task_file::{TaskItem, load_tasks};

/// Arguments of `l2d eval`: a steps-vs-accuracy sweep of a model (and diffusion adapter) on a
/// local JSONL task file.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// The model: a Hugging Face folder, an `org/name` of the local cache, or a GGUF file.
    #[arg(long)]
    pub model: String,
    /// A trained diffusion adapter (needed by every setting but `base` and `lora`).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// A LoRA adapter (`l2d train` with `method = "lora"`, or a PEFT
    /// `adapter_model.safetensors`), needed by the `lora` setting.
    #[arg(long)]
    pub lora: Option<PathBuf>,
    /// The JSONL task file: one `{"prompt": ..., "answer": ...}` per line.
    #[arg(long)]
    pub tasks: PathBuf,
    /// Answer extraction: `exact`, `number` or `choice[:N]` (letters A.., default 4).
    #[arg(long, default_value = "number", value_parser = parse_extraction)]
    pub extract: Extraction,
    /// Settings to sweep, comma-separated: `base`, `lora`, `N[:SOLVER]` (fixed steps),
    /// `adaptive[:SOLVER][:rtol=X][:atol=Y][:max-nfe=N]`, `sde:N[:DIFFUSION]` (the SDE
    /// sampler).
    #[arg(long, value_delimiter = ',', default_value = "base", value_parser = parse_setting)]
    pub settings: Vec<Setting>,
    /// Feed prompts as raw text instead of through the model's chat template.
    #[arg(long)]
    pub raw: bool,
    /// A system message placed before each prompt (chat template only).
    #[arg(long)]
    pub system: Option<String>,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Extra stop strings.
    #[arg(long = "stop")]
    pub stops: Vec<String>,
    /// Only the first N items.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Prompts per generation batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Seed of the diffusion noise and of sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device: `cpu` (`flex`), or `vulkan` / `wgpu` / `cuda` when built with that feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weights: `f32`, `bf16`, `f16`, or `q8_0` / `q4_0` / `q4_1` (projections in blocks).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Where to write the JSON report.
    #[arg(long, default_value = "eval-report.json")]
    pub report: PathBuf,
    /// Where to write the SVG plot.
    #[arg(long, default_value = "eval-plot.svg")]
    pub plot: PathBuf,
    /// Add this run's settings to the report already at `--report` (a setting it holds is
    /// replaced), e.g. to sweep settings as their adapters become ready. The report must be
    /// of the same model, tasks, items, extraction, template, system prompt, stops, new-token
    /// limit, seed and dtype, and name no other adapter or LoRA; the plot shows the union.
    #[arg(long)]
    pub append: bool,
}

fn parse_extraction(s: &str) -> Result<Extraction, String> {
    s.parse()
}

fn parse_setting(s: &str) -> Result<Setting, String> {
    s.parse()
}

/// Refuses to add this run's settings to `earlier` unless both evaluate the same thing.
fn check_append(earlier: &EvalReport, args: &EvalArgs, num_items: usize) -> Result<(), EvalError> {
    let differs = |field: &'static str, theirs: String, ours: String| {
        (theirs != ours).then(|| {
            EvalError::invalid(
                "append",
                format!(
                    "{} was written with {field} {theirs}, this run has {ours}; write a new \
                     report instead",
                    args.report.display()
                ),
            )
        })
    };
    let name = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let checks = [
        differs("model", earlier.model.clone(), args.model.clone()),
        differs(
            "tasks",
            earlier.tasks.clone(),
            args.tasks.display().to_string(),
        ),
        differs(
            "items",
            earlier.num_items.to_string(),
            num_items.to_string(),
        ),
        differs(
            "extraction",
            earlier.extraction.clone(),
            args.extract.to_string(),
        ),
        differs(
            "chat template",
            earlier.chat_template.to_string(),
            (!args.raw).to_string(),
        ),
        differs(
            "max new tokens",
            earlier.max_new_tokens.to_string(),
            args.max_new_tokens.to_string(),
        ),
        differs("seed", earlier.seed.to_string(), args.seed.to_string()),
        differs("dtype", earlier.dtype.clone(), args.dtype.clone()),
        // Times per answer on two devices would sit side by side as if comparable. Two names
        // of one device (`cpu`, `flex`) are the same device.
        match (parse_device(&earlier.device), parse_device(&args.device)) {
            (Ok(a), Ok(b)) if format!("{a:?}") == format!("{b:?}") => None,
            _ => differs("device", earlier.device.clone(), args.device.clone()),
        },
        differs(
            "system prompt",
            format!("{:?}", earlier.system),
            format!("{:?}", args.system),
        ),
        differs(
            "stops",
            format!("{:?}", earlier.stops),
            format!("{:?}", args.stops),
        ),
        match (&earlier.adapter, name(&args.adapter)) {
            (Some(a), Some(b)) => differs("adapter", a.clone(), b),
            _ => None,
        },
        match (&earlier.lora, name(&args.lora)) {
            (Some(a), Some(b)) => differs("lora", a.clone(), b),
            _ => None,
        },
    ];
    match checks.into_iter().flatten().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The device named `name`: `cpu` / `flex`, and `vulkan`, `wgpu`, `cuda` when compiled in.
///
/// # Errors
/// [`EvalError::Invalid`] naming the field `device` for an unknown or not-compiled backend.
pub fn parse_device(name: &str) -> Result<Device, EvalError> {
    l2d_core::device_by_name(name).map_err(|e| EvalError::invalid("device", e.to_string()))
}

/// The weight format named `name` ([`WeightFormat`]'s names: `f32`, `bf16`, `f16`, `q8_0`,
/// `q4_0`, `q4_1`).
///
/// # Errors
/// [`EvalError::Invalid`] naming the field `dtype`.
pub fn parse_dtype(name: &str) -> Result<WeightFormat, EvalError> {
    name.parse::<WeightFormat>()
        .map_err(|e| EvalError::invalid("dtype", e.to_string()))
}

/// The token prompts of `items`: through the model's chat template (one user message,
/// after `system` if given) unless `raw`, else the plain text encoded as the tokenizer does.
///
/// # Errors
/// [`EvalError::Model`] for a model without a chat template (use raw mode) or an encoding
/// failure.
pub fn prepare_prompts(
    model: &Pretrained,
    items: &[TaskItem],
    raw: bool,
    system: Option<&str>,
) -> Result<Vec<Vec<u32>>, EvalError> {
    items
        .iter()
        .map(|item| {
            if raw {
                return Ok(model.encode(&item.prompt)?);
            }
            let mut messages = Vec::with_capacity(2);
            if let Some(s) = system {
                messages.push(ChatMessage::system(s));
            }
            messages.push(ChatMessage::user(item.prompt.clone()));
            Ok(model.chat_prompt(&messages)?)
        })
        .collect()
}

/// Evaluates one setting whose per-token step is `step`: generates every answer in batches
/// of `batch_size`, extracts and scores them. `mean_nfe_per_token` is left at 0:
/// [`evaluate_setting`] fills it from the diffusion step's statistics.
///
/// # Errors
/// [`EvalError::Generation`] when generation fails.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_with_step<S: TokenStep + ?Sized>(
    model: &Pretrained,
    step: &mut S,
    setting: Setting,
    prompts: &[Vec<u32>],
    items: &[TaskItem],
    extraction: Extraction,
    generation: &GenerationConfig,
    batch_size: usize,
) -> Result<SettingResult, EvalError> {
    let start = Instant::now();
    let mut results = Vec::with_capacity(items.len());
    let mut generated = 0;
    for (chunk_index, chunk) in prompts.chunks(batch_size.max(1)).enumerate() {
        let out = model
            .generate_with(step, chunk, generation, |_| Flow::Continue)
            .map_err(|e| EvalError::Generation(Box::new(e)))?;
        for (j, seq) in out.sequences.into_iter().enumerate() {
            let index = chunk_index * batch_size.max(1) + j;
            let item = &items[index];
            generated += seq.tokens.len();
            results.push(ItemResult {
                index,
                extracted: extraction.extract(&seq.text),
                correct: extraction.is_correct(&seq.text, &item.answer),
                expected: item.answer.clone(),
                tokens: seq.tokens.len(),
                output: seq.text,
            });
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let total = results.len();
    let correct = results.iter().filter(|r| r.correct).count();
    Ok(SettingResult {
        setting,
        label: setting.to_string(),
        correct,
        total,
        accuracy: if total == 0 {
            0.0
        } else {
            correct as f64 / total as f64
        },
        mean_nfe_per_token: 0.0,
        generated_tokens: generated,
        seconds_per_answer: if total == 0 {
            0.0
        } else {
            seconds / total as f64
        },
        tokens_per_second: if seconds > 0.0 {
            generated as f64 / seconds
        } else {
            0.0
        },
        items: results,
    })
}

/// The generator options of a diffusion setting (the base setting: none), with `seed` for
/// the noise.
pub fn diffusion_options(setting: Setting, seed: u64) -> DiffusionOptions {
    DiffusionOptions::from_mode(setting.mode()).with_seed(seed)
}

/// Evaluates one setting of the sweep on a loaded model: `base` with the frozen model, `lora`
/// with `lora_model` (the model with its LoRA merged), diffusion settings through the diffusion [`Generator`] over `adapter` (noise seeded by
/// `generation.sampling.seed`), whose mean NFE per token goes into the result.
///
/// # Errors
/// [`EvalError::AdapterRequired`] for a diffusion setting without an adapter or `lora`
/// without a LoRA model,
/// [`EvalError::Diffusion`] for options the adapter cannot run; otherwise as
/// [`evaluate_with_step`].
#[allow(clippy::too_many_arguments)]
pub fn evaluate_setting(
    model: &Pretrained,
    adapter: Option<&DiffusionPath>,
    lora_model: Option<&CausalLm>,
    setting: Setting,
    prompts: &[Vec<u32>],
    items: &[TaskItem],
    extraction: Extraction,
    generation: &GenerationConfig,
    batch_size: usize,
) -> Result<SettingResult, EvalError> {
    if setting == Setting::Lora {
        let merged = lora_model.ok_or_else(|| EvalError::AdapterRequired {
            setting: setting.to_string(),
        })?;
        return evaluate_with_step(
            model,
            &mut BaseStep::new(merged),
            setting,
            prompts,
            items,
            extraction,
            generation,
            batch_size,
        );
    }
    if setting == Setting::Base {
        return evaluate_with_step(
            model,
            &mut model.base_step(),
            setting,
            prompts,
            items,
            extraction,
            generation,
            batch_size,
        );
    }
    let adapter = adapter.ok_or_else(|| EvalError::AdapterRequired {
        setting: setting.to_string(),
    })?;
    let options = diffusion_options(setting, generation.sampling.seed);
    let generator = Generator::new(&model.model, Some(adapter), options).map_err(|source| {
        EvalError::Diffusion {
            setting: setting.to_string(),
            source: Box::new(source),
        }
    })?;
    let mut step = generator.step();
    let mut result = evaluate_with_step(
        model, &mut step, setting, prompts, items, extraction, generation, batch_size,
    )?;
    result.mean_nfe_per_token = step.stats().mean_nfe_per_token();
    Ok(result)
}

/// The commit of the working directory's git repository, if any.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// Runs `l2d eval`: checks the settings, loads the tasks and the model, evaluates every
/// setting (each setting's result, and the item count before, go out as `tracing` events on
/// this module's target), writes the JSON report and the plot, and returns the report.
///
/// # Errors
/// [`EvalError`] for bad arguments, unreadable files, a model or adapter that fails to load,
/// a diffusion setting without an adapter, or a generation failure.
pub fn run_eval(args: &EvalArgs) -> Result<EvalReport, EvalError> {
    if args.settings.is_empty() {
        return Err(EvalError::invalid("settings", "no setting given"));
    }
    if args.batch_size == 0 {
        return Err(EvalError::invalid("batch_size", "must be at least 1"));
    }
    if args.adapter.is_none()
        && let Some(s) = args.settings.iter().find(|s| s.is_diffusion())
    {
        return Err(EvalError::AdapterRequired {
            setting: s.to_string(),
        });
    }
    if args.lora.is_none() && args.settings.contains(&Setting::Lora) {
        return Err(EvalError::AdapterRequired {
            setting: Setting::Lora.to_string(),
        });
    }
    for file in args.adapter.iter().chain(&args.lora) {
        if !file.is_file() {
            return Err(EvalError::Io {
                path: file.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such adapter file"),
            });
        }
    }
    let device = parse_device(&args.device)?;
    let format = parse_dtype(&args.dtype)?;
    let mut items = load_tasks(&args.tasks, args.extract)?;
    if let Some(n) = args.limit {
        items.truncate(n);
    }
    let earlier = if args.append {
        let earlier = EvalReport::read_json(&args.report)?;
        check_append(&earlier, args, items.len())?;
        Some(earlier)
    } else {
        None
    };
    tracing::info!(
        items = items.len(),
        "{} items from {}",
        items.len(),
        args.tasks.display()
    );
    let model = Pretrained::open(&args.model, &LoadOptions::with_format(device, format))?;
    let adapter = match &args.adapter {
        None => None,
        Some(path) => Some(
            DiffusionPath::load(path, &model.model, &AdapterLoadOptions::default())
                .map_err(|source| EvalError::Adapter {
                    path: path.clone(),
                    source: Box::new(source),
                })?
                .cast(model.model.dtype()),
        ),
    };
    let lora_model = match &args.lora {
        None => None,
        Some(path) => Some(
            DecoderLora::load(path, &model.model, false)
                .map_err(|source| EvalError::Lora {
                    path: path.clone(),
                    source: Box::new(source),
                })?
                .merge_into(&model.model),
        ),
    };
    let prompts = prepare_prompts(&model, &items, args.raw, args.system.as_deref())?;
    let mut generation = GenerationConfig {
        sampling: SamplingConfig {
            seed: args.seed,
            ..SamplingConfig::greedy()
        },
        ..GenerationConfig::greedy(args.max_new_tokens)
    };
    for s in &args.stops {
        generation.stops.add_string(s.clone());
    }
    let mut settings = Vec::with_capacity(args.settings.len());
    for &setting in &args.settings {
        let r = evaluate_setting(
            &model,
            adapter.as_ref(),
            lora_model.as_ref(),
            setting,
            &prompts,
            &items,
            args.extract,
            &generation,
            args.batch_size,
        )?;
        tracing::info!(
            setting = %r.label,
            accuracy = r.accuracy,
            seconds_per_answer = r.seconds_per_answer,
            "{}: accuracy {:.3} ({}/{}), {:.3} s per answer",
            r.label,
            r.accuracy,
            r.correct,
            r.total,
            r.seconds_per_answer
        );
        settings.push(r);
    }
    let (mut adapter_name, mut lora_name) = (
        args.adapter.as_ref().map(|p| p.display().to_string()),
        args.lora.as_ref().map(|p| p.display().to_string()),
    );
    if let Some(earlier) = earlier {
        adapter_name = adapter_name.or(earlier.adapter);
        lora_name = lora_name.or(earlier.lora);
        let mut merged = earlier.settings;
        for r in settings {
            match merged.iter_mut().find(|m| m.label == r.label) {
                Some(slot) => *slot = r,
                None => merged.push(r),
            }
        }
        settings = merged;
    }
    let report = EvalReport {
        model: args.model.clone(),
        adapter: adapter_name,
        lora: lora_name,
        tasks: args.tasks.display().to_string(),
        num_items: items.len(),
        extraction: args.extract.to_string(),
        chat_template: !args.raw,
        system: args.system.clone(),
        stops: args.stops.clone(),
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        device: args.device.clone(),
        dtype: args.dtype.clone(),
        git_commit: git_commit(),
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        settings,
    };
    report.write_json(&args.report)?;
    report
        .plot()
        .write(&args.plot)
        .map_err(|source| EvalError::Io {
            path: args.plot.clone(),
            source,
        })?;
    Ok(report)
}
