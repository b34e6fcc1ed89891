//! The `l2d train` and `l2d data inspect` commands: their arguments (clap) and what they do, over `l2d-train`'s library. The `l2d` binary only parses and dispatches
//! here.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;

use l2d_train::config::{DataSection, ModelSection, TrainConfig};
use l2d_train::data::inspect::{InspectFormat, render_example};
use l2d_train::data::read::read_chat_files;
use l2d_train::data::{ClassList, EncodeStats, ExampleEncoder, Layout};
use l2d_train::error::{Result, TrainError};
use l2d_train::trainer::{RunOptions, TrainSummary, device_from_name, load_model, train};

/// `l2d train`: train the diffusion path of a model on chat data.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// The TOML configuration (see the docs of [`l2d_train::config`]); flags override it.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The base model: a Hugging Face folder, an `org/name` of the local cache, or a GGUF.
    #[arg(long)]
    pub model: Option<String>,
    /// Training chat files (`.jsonl`, `.parquet`); repeat or separate with commas.
    #[arg(long, value_delimiter = ',')]
    pub train: Vec<PathBuf>,
    /// Validation chat files.
    #[arg(long, value_delimiter = ',')]
    pub valid: Vec<PathBuf>,
    /// Hold out this fraction of the training conversations for validation.
    #[arg(long)]
    pub valid_fraction: Option<f64>,
    /// The run folder (metrics, checkpoints, the final adapter).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Optimizer steps (overrides epochs).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Passes over the training data.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Sequences per micro-batch.
    #[arg(long)]
    pub micro_batch_size: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    pub accumulation_steps: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Maximum sequence length.
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// The run seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Any configuration value, `section.key=value` (TOML literal); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue from the run folder's latest checkpoint.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Start afresh in a run folder that holds a previous run, deleting that run's
    /// checkpoints, metrics, adapter and config (nothing else in the folder).
    #[arg(long)]
    pub overwrite: bool,
    /// Stop after this many steps (after a checkpoint); `--resume` continues the run.
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

impl TrainArgs {
    /// The configuration: the file (or defaults), then the flags.
    ///
    /// # Errors
    /// [`TrainError::ConfigParse`] / [`TrainError::Config`]; a missing model or training data.
    pub fn resolve(&self) -> Result<TrainConfig> {
        let mut config = match &self.config {
            Some(path) => TrainConfig::from_file(path)?,
            None => {
                let model = self.model.clone().ok_or_else(|| {
                    TrainError::config("model.path", "give --model or a --config file")
                })?;
                if self.train.is_empty() {
                    return Err(TrainError::config(
                        "data.train",
                        "give --train FILE or a --config file",
                    ));
                }
                let text = format!(
                    "[model]\npath = {}\n[data]\ntrain = []\n",
                    toml::Value::String(model)
                );
                TrainConfig::from_toml_str(&text, std::path::Path::new("<flags>"))?
            }
        };
        let ModelSection { path, .. } = &mut config.model;
        if let Some(m) = &self.model {
            *path = m.clone();
        }
        let DataSection {
            train,
            validation,
            validation_fraction,
            max_seq_len,
            ..
        } = &mut config.data;
        if !self.train.is_empty() {
            *train = self.train.clone();
        }
        if !self.valid.is_empty() {
            *validation = self.valid.clone();
            *validation_fraction = None;
        }
        if let Some(f) = self.valid_fraction {
            *validation_fraction = Some(f);
            validation.clear();
        }
        if let Some(m) = self.max_seq_len {
            *max_seq_len = m;
        }
        if let Some(o) = &self.output {
            config.output.dir = o.clone();
        }
        if let Some(s) = self.steps {
            config.train.steps = Some(s);
        }
        if let Some(e) = self.epochs {
            config.train.epochs = e;
            if self.steps.is_none() {
                config.train.steps = None;
            }
        }
        if let Some(m) = self.micro_batch_size {
            config.train.micro_batch_size = m;
        }
        if let Some(a) = self.accumulation_steps {
            config.train.accumulation_steps = a;
        }
        if let Some(lr) = self.lr {
            config.optim.peak_lr = lr;
        }
        if let Some(s) = self.seed {
            config.seed = s;
        }
        for s in &self.set {
            config.set(s)?;
        }
        Ok(config)
    }
}

/// Runs `l2d train`.
///
/// # Errors
/// As [`l2d_train::train`].
pub fn run_train(args: &TrainArgs) -> Result<TrainSummary> {
    let config = args.resolve()?;
    let summary = train(
        &config,
        &RunOptions {
            resume: args.resume,
            overwrite: args.overwrite,
            stop_after: args.stop_after,
        },
    )?;
    tracing::info!(
        steps = summary.steps,
        s_per_step = summary.s_per_step,
        "done: {} steps ({:.2} s/step), peak RSS {}",
        summary.steps,
        summary.s_per_step,
        summary
            .peak_rss
            .map_or("n/a".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
    );
    Ok(summary)
}

/// `l2d data inspect`: show how chat files are tokenised and which tokens carry loss.
#[derive(Debug, Clone, Args)]
pub struct DataInspectArgs {
    /// Chat files (`.jsonl`, `.parquet`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The model whose tokenizer and chat template are used (folder, cache name or GGUF).
    #[arg(long)]
    pub model: String,
    /// Maximum sequence length (longer conversations are cut as in training).
    #[arg(long, default_value_t = 2048)]
    pub max_seq_len: usize,
    /// `conversation` (one sequence per conversation) or `turn` (one per assistant turn).
    #[arg(long, default_value = "conversation")]
    pub layout: String,
    /// How many conversations to show (0: only the counts).
    #[arg(long, short = 'n', default_value_t = 3)]
    pub limit: usize,
    /// `text` (scored spans marked) or `table` (one token per line).
    #[arg(long, default_value = "text")]
    pub format: InspectFormat,
    /// Guidance classes, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,
    /// Which named chat template.
    #[arg(long)]
    pub template_name: Option<String>,
    /// Never colour the output.
    #[arg(long)]
    pub no_color: bool,
}

/// Runs `l2d data inspect`, writing to `out`.
///
/// # Errors
/// Model, reading and encoding errors.
pub fn run_data_inspect(args: &DataInspectArgs, out: &mut dyn Write) -> Result<()> {
    let layout: Layout = args.layout.parse()?;
    let text = format!(
        "[model]\npath = {}\n[data]\ntrain = []\n",
        toml::Value::String(args.model.clone())
    );
    let config = TrainConfig::from_toml_str(&text, std::path::Path::new("<flags>"))?;
    let model = load_model(&config, &device_from_name("cpu")?)?;
    let conversations = read_chat_files(&args.files)?;
    let encoder = ExampleEncoder::new(&model.tokenizer, &model.template, args.max_seq_len, layout)
        .with_classes(ClassList::new(args.classes.clone())?)
        .with_template_name(args.template_name.clone());
    let color = !args.no_color && std::io::stdout().is_terminal();
    let w = |e: std::io::Error| TrainError::io("write", "<stdout>", e);
    let (mut all, mut stats) = (Vec::new(), EncodeStats::default());
    for (i, c) in conversations.iter().enumerate() {
        let (examples, s) = encoder.encode(c, i)?;
        stats.merge(&s);
        if i < args.limit {
            writeln!(
                out,
                "=== conversation {} ({}), {} message(s){}: {} sequence(s)",
                i + 1,
                c.origin,
                c.messages.len(),
                c.class
                    .as_ref()
                    .map(|k| format!(", class {k}"))
                    .unwrap_or_default(),
                examples.len()
            )
            .map_err(w)?;
            for (j, e) in examples.iter().enumerate() {
                writeln!(
                    out,
                    "--- sequence {}: {} inputs, {} scored{}",
                    j + 1,
                    e.len(),
                    e.num_scored(),
                    e.class_id
                        .map(|c| format!(", class id {c}"))
                        .unwrap_or_default()
                )
                .map_err(w)?;
                write!(
                    out,
                    "{}",
                    render_example(&model.tokenizer, e, args.format, color)
                )
                .map_err(w)?;
            }
        }
        all.extend(examples);
    }
    writeln!(
        out,
        "=== {} ({} layout, max_seq_len {}{})",
        stats,
        layout,
        args.max_seq_len,
        if encoder.uses_generation_blocks() {
            ", assistant spans from {% generation %} blocks"
        } else {
            ""
        }
    )
    .map_err(w)?;
    if !color && args.format == InspectFormat::Text && args.limit > 0 {
        writeln!(out, "(scored tokens are shown between [[ and ]])").map_err(w)?;
    }
    Ok(())
}
