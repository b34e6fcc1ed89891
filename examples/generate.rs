//! Diffusion generation on SmolLM2-135M-Instruct, the project's one real model, side by side
//! with the base model.
//!
//! ```text
//! scripts/fetch-smollm2.sh                      # .models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
//! cargo run --release --example generate                 # 7 midpoint steps (15 NFE per token)
//! cargo run --release --example generate -- 3 "What is 12 + 30?"
//! cargo run --release --example generate -- 7 --adapter runs/smollm2-arithmetic/adapter.safetensors
//! ```
//!
//! The first argument is the number of solver steps per token (midpoint; `N` steps cost
//! `2N + 1` NFE), the second the question. The model is `$L2D_SMOLLM2_GGUF` or
//! `.models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`. The adapter is `--adapter`, else
//! `runs/smollm2-arithmetic/adapter.safetensors` when it exists (what
//! `l2d train --config fixtures/train/smollm2-arithmetic.toml` writes). Without one, a freshly
//! initialised diffusion path is used: its output gate is zero until trained, so it generates
//! exactly the base model's tokens, which the example says and checks rather than pretends
//! otherwise.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use l2d::models::chat_template::ChatMessage;
use l2d::models::diffusion::{AdapterLoadOptions, DiffusionPath};
use l2d::models::generation::{DiffusionOptions, Flow, GenerationConfig, Generator};
use l2d::models::l2d_config::L2dConfig;
use l2d::models::pretrained::{LoadOptions, Pretrained};

/// The adapter `l2d train --config fixtures/train/smollm2-arithmetic.toml` writes.
const TRAINED_ADAPTER: &str = "runs/smollm2-arithmetic/adapter.safetensors";

/// Diffusion generation on SmolLM2-135M-Instruct next to the base model.
#[derive(Debug, Parser)]
struct Args {
    /// Midpoint steps per token (2·STEPS + 1 NFE).
    #[arg(default_value_t = 7)]
    steps: usize,
    /// The question.
    #[arg(default_value = "What is 17 + 25? Answer with the number.")]
    prompt: String,
    /// A trained adapter for SmolLM2-135M-Instruct.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The most new tokens.
    #[arg(long, default_value_t = 48)]
    max_new_tokens: usize,
    /// Seed of the diffusion noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let gguf = std::env::var_os("L2D_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if !gguf.exists() {
        bail!(
            "SmolLM2 not found at {}: run scripts/fetch-smollm2.sh (or set L2D_SMOLLM2_GGUF)",
            gguf.display()
        );
    }
    let lm = Pretrained::open(
        gguf.to_str().context("a UTF-8 path")?,
        &LoadOptions::default(),
    )?;
    let adapter_file = args.adapter.clone().or_else(|| {
        let p = root.join(TRAINED_ADAPTER);
        p.is_file().then_some(p)
    });
    let (path, trained) = match &adapter_file {
        Some(file) => {
            let p = DiffusionPath::load(file, &lm.model, &AdapterLoadOptions::default())
                .with_context(|| format!("loading the adapter {}", file.display()))?;
            println!("adapter: {} (trained)", file.display());
            (p, true)
        }
        None => {
            println!(
                "No trained adapter (none given, none at {TRAINED_ADAPTER}): using a freshly \
                 initialised diffusion path. Its output gate head(t) - head(0) is zero until it \
                 is trained, so the diffusion run below produces exactly the base model's \
                 tokens while paying the full diffusion cost. Train one with \
                 `l2d train --config fixtures/train/smollm2-arithmetic.toml`."
            );
            (
                DiffusionPath::init(&L2dConfig::default(), &lm.model, 0)?,
                false,
            )
        }
    };

    let prompt = lm.chat_prompt(&[ChatMessage::user(args.prompt.clone())])?;
    let prompts = [prompt];
    let config = GenerationConfig::greedy(args.max_new_tokens);
    println!("question: {}", args.prompt);

    let base = Generator::base_only(&lm.model);
    let options = DiffusionOptions::fixed(args.steps).with_seed(args.seed);
    let diffusion = Generator::new(&lm.model, Some(&path), options)?;
    let mut replies = Vec::new();
    for (name, generator) in [("base model", &base), ("diffusion", &diffusion)] {
        print!("{name}: ");
        std::io::stdout().flush()?;
        let mut step = generator.step();
        let out = lm.generate_with(&mut step, &prompts, &config, |e| {
            print!("{}", e.text);
            let _ = std::io::stdout().flush();
            Flow::Continue
        })?;
        println!();
        let stats = step.stats();
        let calls = stats.tokens.len().max(1) as f64;
        println!(
            "  {} tokens, {:.1} tokens/s, NFE per token {:.1} ({:.1} diffusion forwards per \
             token)",
            out.stats.new_tokens,
            out.stats.tokens_per_second(),
            stats.mean_nfe_per_token(),
            stats.diffusion_forwards() as f64 / calls
        );
        replies.push(out.sequences[0].tokens.clone());
    }
    let same = replies[0] == replies[1];
    if trained {
        println!(
            "the diffusion reply {} the base model's",
            if same { "equals" } else { "differs from" }
        );
    } else {
        println!(
            "the fresh path's reply equals the base model's: {}",
            if same {
                "yes, as it must"
            } else {
                "NO (a bug)"
            }
        );
        if !same {
            bail!("a freshly initialised path changed the output");
        }
    }
    Ok(())
}
