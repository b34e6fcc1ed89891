//! Chat with a model from the shell: renders the model's chat template for one user message
//! (optionally after a system message), streams the reply to stdout as it is generated and
//! prints statistics to stderr.
//!
//! ```text
//! scripts/fetch-smollm2.sh    # prints the path of SmolLM2-135M-Instruct.Q4_1.gguf
//! cargo run --release --example chat -- \
//!     --gguf .models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --temperature 0 \
//!     "What is the capital of France?"
//! cargo run --release --example chat -- --model path/to/hf-folder --top-p 0.9 "Hi!"
//! ```

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use burn::module::Module;
use burn::tensor::{DType, Device};
use clap::{ArgGroup, Parser, ValueEnum};
use l2d::models::chat_template::ChatMessage;
use l2d::models::generation::{Flow, GenerationConfig, StopReason};
use l2d::models::pretrained::{LoadOptions, Pretrained};
use l2d::models::sampling::SamplingConfig;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Dtype {
    F32,
    F16,
    Bf16,
}

/// Chat with a Llama / Qwen2 / Mistral model (GGUF file or Hugging Face folder) on the CPU.
#[derive(Debug, Parser)]
#[command(group(ArgGroup::new("source").required(true).args(["gguf", "model"])))]
struct Args {
    /// The user's message.
    prompt: String,
    /// A GGUF file (e.g. SmolLM2-135M-Instruct.Q4_1.gguf).
    #[arg(long, value_name = "PATH")]
    gguf: Option<String>,
    /// A Hugging Face model folder, or `org/name` in the local Hugging Face cache.
    #[arg(long, value_name = "DIR")]
    model: Option<String>,
    /// A system message to put before the user's.
    #[arg(long)]
    system: Option<String>,
    /// The most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy decoding.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Keep only the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p.
    #[arg(long)]
    top_p: Option<f32>,
    /// Drop tokens less likely than min-p times the most likely one.
    #[arg(long)]
    min_p: Option<f32>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when the reply contains this text (repeatable; the text is not printed).
    #[arg(long = "stop", value_name = "TEXT")]
    stops: Vec<String>,
    /// Weight dtype.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
}

fn run(args: Args) -> Result<()> {
    let sampling = SamplingConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        seed: args.seed,
    };
    sampling.validate()?;
    let mut config = GenerationConfig::sampled(sampling, args.max_new_tokens);
    for s in &args.stops {
        config = config.with_stop_string(s.clone());
    }
    let dtype = match args.dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::Bf16 => DType::BF16,
    };
    let options = LoadOptions::new(Device::flex(), dtype);

    let started = std::time::Instant::now();
    let lm = match (&args.gguf, &args.model) {
        (Some(path), _) => Pretrained::from_gguf(path, &options)
            .with_context(|| format!("cannot load the GGUF model `{path}`"))?,
        (None, Some(name)) => Pretrained::from_pretrained(name, &options)
            .with_context(|| format!("cannot load the model `{name}`"))?,
        (None, None) => anyhow::bail!("pass --gguf PATH or --model DIR"),
    };
    eprintln!(
        "loaded {} ({:.1} M parameters, {:?}) in {:.2?}",
        lm.source.path().display(),
        lm.model.num_params() as f64 / 1e6,
        lm.model.dtype(),
        started.elapsed()
    );

    let mut messages = Vec::new();
    if let Some(system) = args.system {
        messages.push(ChatMessage::system(system));
    }
    messages.push(ChatMessage::user(args.prompt));

    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    let out = lm.chat(&messages, &config, |event| {
        let written = stdout
            .write_all(event.text.as_bytes())
            .and_then(|_| stdout.flush());
        match written {
            Ok(()) => Flow::Continue,
            Err(e) => {
                write_error = Some(e);
                Flow::StopAll
            }
        }
    })?;
    if let Some(e) = write_error {
        return Err(e).context("cannot write to stdout");
    }
    writeln!(stdout).context("cannot write to stdout")?;

    let seq = &out.sequences[0];
    let s = out.stats;
    let reason = match &seq.stop_reason {
        StopReason::StopId(id) => format!(
            "stop token {}",
            lm.tokenizer
                .id_to_token(*id)
                .unwrap_or_else(|| id.to_string())
        ),
        StopReason::StopString(text) => format!("stop string {text:?}"),
        StopReason::MaxNewTokens => format!("--max-new-tokens {}", args.max_new_tokens),
        StopReason::Callback => "interrupted".into(),
        StopReason::ContextFull => format!(
            "the model's context ({} positions)",
            lm.model.config().max_position_embeddings
        ),
    };
    eprintln!(
        "{} prompt tokens, {} new tokens; prefill {:.2?} ({:.1} tokens/s), decode {:.1} \
         tokens/s, {:.1} tokens/s overall; stopped by {reason}",
        s.prompt_tokens,
        s.new_tokens,
        s.prefill_time,
        s.prefill_tokens_per_second(),
        s.decode_tokens_per_second(),
        s.tokens_per_second(),
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Library errors already quote their cause; print each message of the chain once.
            let mut message = String::new();
            for cause in e.chain().map(ToString::to_string) {
                if !message.contains(&cause) {
                    if !message.is_empty() {
                        message.push_str(": ");
                    }
                    message.push_str(&cause);
                }
            }
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
