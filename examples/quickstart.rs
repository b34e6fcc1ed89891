//! The embedded demo, with no download: train a tiny Llama from scratch on 6-digit addition,
//! freeze it, train its L2D diffusion path and (the paper's baseline) a plain LoRA of equal
//! trainable-parameter count on the same problems for the same steps, then compare greedy
//! exact match on 1000 held-out problems: the base, LoRA, L2D with Euler at 1, 2, 4, 8, 16
//! steps (NFE = steps + 1 per answer digit), and an adaptive solver (bosh3).
//!
//! ```text
//! cargo run --release --example quickstart
//! cargo run --release --example quickstart -- --lora-steps 6000 --diffusion-steps 6000
//! cargo run --release --example quickstart -- --lora-inits gaussian    # one LoRA baseline
//! ```
//!
//! Prints the table and writes `quickstart.json` and `quickstart.svg` to `--out-dir`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Parser;
use l2d::demo::TinyLlama;
use l2d::demo::lora::LoraConfig;
use l2d::demo::pipeline::{AdaptiveSetting, QuickstartConfig, QuickstartReport, run_quickstart};
use l2d_models::lora::LoraInit;

/// Command-line options (the defaults are the demo).
#[derive(Debug, Parser)]
#[command(about = "L2D on a laptop: tiny Llama, addition, base vs LoRA vs diffusion steps")]
struct Args {
    /// Digits per operand.
    #[arg(long, default_value_t = 6)]
    digits: usize,
    /// Hidden size of the tiny Llama (intermediate = 2 × hidden).
    #[arg(long, default_value_t = 48)]
    hidden: usize,
    /// Decoder layers.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Base-model training steps.
    #[arg(long, default_value_t = 400)]
    base_steps: usize,
    /// Plain-LoRA training steps.
    #[arg(long, default_value_t = 3000)]
    lora_steps: usize,
    /// Diffusion-path training steps.
    #[arg(long, default_value_t = 3000)]
    diffusion_steps: usize,
    /// Seed of the diffusion path's initial weights and noise (default: seed + 2).
    #[arg(long)]
    diffusion_seed: Option<u64>,
    /// LoRA rank (default: the diffusion path's parameter count, matched).
    #[arg(long)]
    lora_rank: Option<usize>,
    /// LoRA baselines to train, by their `A` initialisation: `gaussian` (the authors'
    /// `N(0, 1/rank²)`, as the diffusion path) and/or `kaiming-uniform` (PEFT's default).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "gaussian,kaiming-uniform"
    )]
    lora_inits: Vec<String>,
    /// Euler step counts (grid intervals) to evaluate, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    euler_steps: Vec<usize>,
    /// Adaptive solver (`bosh3`, `dopri5`, `fehlberg2`, `adaptive_heun`, or `none`).
    #[arg(long, default_value = "bosh3")]
    adaptive: String,
    /// Relative and absolute tolerance of the adaptive solver.
    #[arg(long, default_value_t = 1e-5)]
    tolerance: f64,
    /// Leave out the `average` x1 estimate at temperature 1.
    #[arg(long)]
    no_average: bool,
    /// Held-out problems.
    #[arg(long, default_value_t = 1000)]
    test_size: usize,
    /// Seed of everything.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also run the diagnostics (teacher-forced accuracy against t, other noise seeds).
    #[arg(long)]
    analysis: bool,
    /// Use this adapter file as the diffusion path instead of training one (it must come from
    /// `--save-adapter` of a run with the same seed and base settings).
    #[arg(long)]
    load_adapter: Option<PathBuf>,
    /// Use the model of this Hugging Face folder as the frozen base instead of training one
    /// (e.g. the base `scripts/toy_reference.py` trained with the authors' code).
    #[arg(long)]
    base_in: Option<PathBuf>,
    /// Write the frozen base to this folder as a Hugging Face model.
    #[arg(long)]
    base_out: Option<PathBuf>,
    /// Start the diffusion path from the weights of this file instead of the seeded
    /// initialisation (an adapter, or the authors' key names).
    #[arg(long)]
    path_init: Option<PathBuf>,
    /// Write the diffusion path's initial weights (the authors' key names) to this file.
    #[arg(long)]
    path_init_out: Option<PathBuf>,
    /// Save the trained diffusion path as an adapter file.
    #[arg(long)]
    save_adapter: Option<PathBuf>,
    /// Only redraw the plot (and reprint the table) of a saved `quickstart.json` into
    /// `--out-dir`.
    #[arg(long)]
    replot: Option<PathBuf>,
    /// Where to write `quickstart.json` and `quickstart.svg`.
    #[arg(long, default_value = "target/quickstart")]
    out_dir: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // The demo's stages go out as `tracing` events: show them as lines on standard output.
    l2d::cli::logging::init_with(l2d::cli::logging::LineLayer::stdout(), false);
    if let Some(file) = &args.replot {
        let report: QuickstartReport = serde_json::from_str(&std::fs::read_to_string(file)?)?;
        print!("{}", report.table());
        let (json, svg) = report.write(&args.out_dir)?;
        println!("report: {}\nplot:   {}", json.display(), svg.display());
        return Ok(());
    }
    let shape = TinyLlama {
        hidden: args.hidden,
        layers: args.layers,
        intermediate: 2 * args.hidden,
        ..TinyLlama::default()
    };
    let mut config = QuickstartConfig::new(args.digits, shape, args.seed);
    config.base.steps = args.base_steps;
    config.lora.steps = args.lora_steps;
    config.lora.rank = args.lora_rank;
    let inits = args
        .lora_inits
        .iter()
        .map(|name| {
            name.parse::<LoraInit>()
                .map_err(|e| anyhow::anyhow!("--lora-inits: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let Some((&first, rest)) = inits.split_first() else {
        bail!("--lora-inits: name at least one initialisation");
    };
    config.lora.init = first;
    config.extra_lora = rest
        .iter()
        .map(|&init| LoraConfig {
            init,
            ..config.lora.clone()
        })
        .collect();
    config.diffusion.steps = args.diffusion_steps;
    if let Some(seed) = args.diffusion_seed {
        config.diffusion.seed = seed;
    }
    config.test_size = args.test_size;
    config.euler_steps = args.euler_steps;
    config.average_at_temperature_one = !args.no_average;
    config.analysis = args.analysis;
    config.adapter_in = args.load_adapter;
    config.base_in = args.base_in;
    config.base_out = args.base_out;
    config.diffusion.init_from = args.path_init;
    config.diffusion.init_out = args.path_init_out;
    config.adapter_out = args.save_adapter;
    config.adaptive = AdaptiveSetting::from_flag(&args.adaptive, args.tolerance)?;

    // The output folder exists before the training starts (a path that cannot be written
    // fails now, not after ten minutes).
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    let report = run_quickstart(&config, &Device::flex())?;
    println!(
        "\nresults on {} held-out problems (greedy over the answer digits; steps = Euler grid \
         intervals, NFE = steps + 1 per digit as the paper counts, of which the first is the \
         frozen pass's logits; forwards = diffusion-path forwards actually run)\n",
        config.test_size
    );
    print!("{}", report.table());
    println!("(params: the base's total; for finetuned rows, the trainable ones)\n");
    for t in &report.training {
        println!(
            "training: {:<36} {:>7} params, {:>5} steps, loss {:.4} -> {:.4}, {:.1} s",
            t.what, t.trainable_params, t.steps, t.loss_start, t.loss_end, t.seconds
        );
    }
    let (json, svg) = report.write(&args.out_dir)?;
    println!("\nreport: {}\nplot:   {}", json.display(), svg.display());
    println!("total wall time: {:.1} s", report.total_seconds);
    Ok(())
}
