//! Test-time scaling at toy scale, with no download: train a tiny Llama from scratch on a task,
//! freeze it, train its L2D diffusion path (and a plain-LoRA baseline of equal size), and print
//! exact match on held-out problems against the solver's steps: Euler at 1, 2, 4, 8 and 16
//! steps and an adaptive solver, with the NFE per answer token of each.
//!
//! ```text
//! cargo run --release --example test_time_scaling
//! cargo run --release --example test_time_scaling -- --noise-scale 64   # the paper's noise
//! cargo run --release --example test_time_scaling -- --task permutation --digits 5 --layers 1
//! cargo run --release --example test_time_scaling -- --json target/scaling.json
//! ```
//!
//! The tasks (`--task`): `addition` (the quickstart's), `multiplication`, `modular-sum` (the
//! sum of `N` digits modulo 10) and `permutation` (the product of `N` elements of `S₃`). The
//! default is the setting `docs/scaling.md` chose from its search (the quickstart's 6-digit
//! addition and base, the path trained with noise scale σ = 4 instead of the paper's 64); that
//! page has every curve.
//! Writes `test_time_scaling.json` (the full report) and `test_time_scaling.svg` (the plot) to
//! `--out-dir`, and with `--json PATH` the curve alone:
//! `{"curve": [{"steps": k, "accuracy": a, "nfe": n}, ...], ...}`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::Device;
use clap::Parser;
use l2d::demo::TinyLlama;
use l2d::demo::pipeline::{AdaptiveSetting, QuickstartConfig, run_quickstart};
use l2d::demo::scaling::ScalingCurve;
use l2d::demo::task::TaskKind;
use l2d_core::NoiseSchedule;

/// Command-line options (the defaults are the chosen setting).
#[derive(Debug, Parser)]
#[command(about = "L2D test-time scaling on a toy task: accuracy against solver steps")]
struct Args {
    /// The task: addition, multiplication, modular-sum or permutation.
    #[arg(long, default_value = "addition")]
    task: TaskKind,
    /// Digits per operand, or prompt elements of a one-token task.
    #[arg(long, default_value_t = 6)]
    digits: usize,
    /// Hidden size of the base (intermediate: twice it).
    #[arg(long, default_value_t = 48)]
    hidden: usize,
    /// Decoder layers of the base.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Training steps of the base.
    #[arg(long, default_value_t = 400)]
    base_steps: usize,
    /// Training steps of the diffusion path and of the LoRA baseline.
    #[arg(long, default_value_t = 3000)]
    steps: usize,
    /// Skip the LoRA baseline.
    #[arg(long)]
    no_lora: bool,
    /// Euler step counts of the curve.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    euler_steps: Vec<usize>,
    /// The adaptive solver's method (`none`: no adaptive point).
    #[arg(long, default_value = "bosh3")]
    adaptive: String,
    /// The adaptive solver's tolerance (rtol = atol).
    #[arg(long, default_value_t = 1e-3)]
    tolerance: f64,
    /// How training timesteps are drawn (`identity`, `cosmap`, `shifted_<s>`).
    #[arg(long, default_value = "identity")]
    noise_schedule: NoiseSchedule,
    /// The training noise's standard deviation σ (the paper's is 64).
    #[arg(long, default_value_t = 4.0)]
    noise_scale: f64,
    /// Training timesteps are drawn in `[0, 1 - this]`.
    #[arg(long, default_value_t = 0.0)]
    minimum_training_noise: f64,
    /// Use the model of this Hugging Face folder as the frozen base instead of training one
    /// (e.g. the base `scripts/toy_reference.py` trained with the authors' code).
    #[arg(long)]
    base_in: Option<PathBuf>,
    /// Held-out problems.
    #[arg(long, default_value_t = 1000)]
    test_size: usize,
    /// Seed of everything.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the curve as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where to write `test_time_scaling.json` (the full report) and `.svg`.
    #[arg(long, default_value = "target/test_time_scaling")]
    out_dir: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // The demo's stages go out as `tracing` events: show them as lines on standard output.
    l2d::cli::logging::init_with(l2d::cli::logging::LineLayer::stdout(), false);
    let shape = TinyLlama {
        hidden: args.hidden,
        layers: args.layers,
        intermediate: 2 * args.hidden,
        ..TinyLlama::default()
    };
    let mut config = QuickstartConfig::new(args.digits, shape, args.seed);
    config.task = args.task;
    config.base.steps = args.base_steps;
    config = config.with_finetune_steps(args.steps);
    config.extra_lora.clear();
    config.lora_baselines = !args.no_lora;
    config.diffusion.path.noise_schedule = args.noise_schedule;
    config.diffusion.path.noise_scale = args.noise_scale;
    config.diffusion.path.minimum_training_noise = args.minimum_training_noise;
    config.base_in = args.base_in;
    config.test_size = args.test_size;
    config.euler_steps = args.euler_steps;
    config.average_at_temperature_one = false;
    config.adaptive = AdaptiveSetting::from_flag(&args.adaptive, args.tolerance)?;

    // The output folder exists before the training starts.
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    let report = run_quickstart(&config, &Device::flex())?;
    let curve = ScalingCurve::from_report(&report);
    println!(
        "\n{} ({} layers), {} held-out problems\n",
        curve.task, curve.layers, config.test_size
    );
    print!("{}", curve.table());
    if let Some(gain) = curve.gain_2_to_16() {
        println!("\nexact match from 2 to 16 Euler steps: {gain:+.3}");
    }
    let (json, svg) = report.write_named(&args.out_dir, "test_time_scaling")?;
    println!("\nreport: {}\nplot:   {}", json.display(), svg.display());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&curve)? + "\n";
        l2d_models::weights::write_atomically(path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("curve:  {}", path.display());
    }
    println!("total wall time: {:.1} s", report.total_seconds);
    Ok(())
}
