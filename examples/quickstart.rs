//! The embedded demo, with no download: train a tiny Llama from scratch on 6-digit addition,
//! freeze it, finetune it with plain LoRA (the paper's baseline), and compare exact-match
//! accuracy on 1000 held-out problems.
//!
//! ```text
//! cargo run --release --example quickstart
//! cargo run --release --example quickstart -- --base-steps 200 --lora-steps 500 --out plot.svg
//! ```
//!
//! Phase 1 of the demo: the L2D diffusion path (its training and the 1/2/4/8/16-step and
//! adaptive-solver rows) is added when `l2d-train` and diffusion generation land.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use burn::module::Module;
use burn::tensor::Device;
use clap::Parser;
use l2d::demo::lora::{LoraConfig, LoraInit, ToyDiffusionPath};
use l2d::demo::{
    AdditionTask, EvalResult, PretrainConfig, TinyLlama, greedy_exact_match, pretrain, train_lora,
};
use l2d::plot::{LinePlot, Series};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Command-line options (the defaults are the demo).
#[derive(Debug, Parser)]
struct Args {
    /// Digits per operand.
    #[arg(long, default_value_t = 6)]
    digits: usize,
    /// Hidden size of the tiny Llama.
    #[arg(long, default_value_t = 48)]
    hidden: usize,
    /// Decoder layers.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Base-model training steps.
    #[arg(long, default_value_t = 400)]
    base_steps: usize,
    /// LoRA (and, in phase 2, diffusion-path) training steps.
    #[arg(long, default_value_t = 3000)]
    lora_steps: usize,
    /// LoRA rank (default: matched to the diffusion path's parameter count).
    #[arg(long)]
    lora_rank: Option<usize>,
    /// LoRA `A` initialisation: `reference` (N(0,1)/rank, as the diffusion path) or `peft`.
    #[arg(long, default_value = "reference")]
    lora_init: String,
    /// Held-out problems.
    #[arg(long, default_value_t = 1000)]
    test_size: usize,
    /// Seed of everything.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the plot.
    #[arg(long, default_value = "target/quickstart/accuracy_vs_nfe.svg")]
    out: PathBuf,
}

struct Row {
    method: String,
    params: usize,
    nfe: Option<f64>,
    result: EvalResult,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let start = Instant::now();
    let device = Device::flex();
    let task = AdditionTask::new(args.digits)?;
    let shape = TinyLlama {
        hidden: args.hidden,
        layers: args.layers,
        intermediate: 2 * args.hidden,
        ..TinyLlama::default()
    };
    let test = task.test_set(
        args.test_size,
        &mut ChaCha8Rng::seed_from_u64(args.seed + 7),
    )?;
    println!(
        "task: {d}-digit addition `a+b=` (answer {a} digits); held-out set of {n} problems",
        d = args.digits,
        a = task.answer_len(),
        n = test.len()
    );

    let base_config = PretrainConfig {
        model: shape,
        steps: args.base_steps,
        seed: args.seed,
        ..PretrainConfig::default()
    };
    let every = (args.base_steps / 8).max(1);
    println!(
        "\n[1/3] base model: Llama, hidden {}, {} layers, {} heads ({} kv), intermediate {}; \
         {} steps of AdamW lr {} batch {}",
        shape.hidden,
        shape.layers,
        shape.heads,
        shape.kv_heads,
        shape.intermediate,
        base_config.steps,
        base_config.lr,
        base_config.batch_size
    );
    let base = pretrain(&task, &base_config, &device, |step, loss| {
        if (step + 1) % every == 0 {
            println!("  step {:>5}  loss {loss:.4}", step + 1);
        }
    })?;
    let base_params = base.model.num_params();
    println!(
        "  trained in {:.1} s ({base_params} parameters, then frozen)",
        base.seconds
    );
    let base_eval = greedy_exact_match(&base.model, &task, &test, 500);
    println!("  base exact match: {:.3}", base_eval.accuracy);

    let model_config = shape.model_config()?;
    let diffusion = ToyDiffusionPath::default().param_count(&model_config);
    let init = match args.lora_init.as_str() {
        "reference" => LoraInit::Reference,
        "peft" => LoraInit::Peft,
        other => anyhow::bail!("--lora-init: expected `reference` or `peft`, got {other:?}"),
    };
    let lora_config = LoraConfig {
        rank: args.lora_rank,
        init,
        steps: args.lora_steps,
        seed: args.seed + 1,
        ..LoraConfig::default()
    };
    let rank = lora_config.resolved_rank(&model_config);
    println!(
        "\n[2/3] plain-LoRA baseline: rank {rank}, alpha {rank} on q/o/gate/up/down \
         (diffusion path at the L2D config: {} parameters); {} steps of AdamW lr {} β ({}, {})",
        diffusion.total(),
        lora_config.steps,
        lora_config.lr,
        lora_config.beta_1,
        lora_config.beta_2
    );
    let every = (args.lora_steps / 10).max(1);
    let lora = train_lora(&base.model, &task, &lora_config, &device, |step, loss| {
        if (step + 1) % every == 0 {
            println!("  step {:>5}  loss {loss:.4}", step + 1);
        }
    })?;
    println!(
        "  trained in {:.1} s ({} trainable parameters)",
        lora.seconds, lora.trainable_params
    );
    let lora_eval = greedy_exact_match(&lora.model, &task, &test, 500);
    println!("  LoRA exact match: {:.3}", lora_eval.accuracy);

    let rows = [
        Row {
            method: "base (frozen)".into(),
            params: base_params,
            nfe: None,
            result: base_eval,
        },
        Row {
            method: format!("LoRA r{rank}"),
            params: lora.trainable_params,
            nfe: None,
            result: lora_eval,
        },
    ];
    println!(
        "\n[3/3] results on {} held-out problems (greedy)\n",
        test.len()
    );
    println!(
        "| {:<16} | {:>10} | {:>8} | {:>11} | {:>15} |",
        "method", "params", "accuracy", "NFE / token", "time / answer"
    );
    println!(
        "|{:-<18}|{:->12}|{:->10}|{:->13}|{:->17}|",
        "", "", "", "", ""
    );
    for r in &rows {
        println!(
            "| {:<16} | {:>10} | {:>8.3} | {:>11} | {:>12.3} ms |",
            r.method,
            r.params,
            r.result.accuracy,
            r.nfe.map_or("-".to_string(), |n| format!("{n:.1}")),
            r.result.seconds_per_answer * 1e3
        );
    }
    println!("(params: the base's total; for finetuned rows, the trainable ones)");

    let plot = LinePlot::new(
        format!("{}-digit addition, held-out exact match", args.digits),
        "diffusion steps (NFE per token)",
        "exact match",
    )
    .with_log2_x(true)
    .with_x_range(1.0, 16.0)
    .with_y_range(0.0, 1.0)
    .series(Series::horizontal("base", rows[0].result.accuracy))
    .series(Series::horizontal(
        format!("LoRA r{rank}"),
        rows[1].result.accuracy,
    ))
    // Phase 2 adds Series::line("L2D", 1..16 steps) and Series::points("adaptive", ..).
    ;
    plot.write(&args.out)?;
    println!("\nplot: {}", args.out.display());
    println!("total wall time: {:.1} s", start.elapsed().as_secs_f64());
    println!(
        "\nnext (phase 2): train the L2D diffusion path on the same frozen base, same data and \
         steps, and add rows for 1, 2, 4, 8, 16 diffusion steps and an adaptive solver."
    );
    Ok(())
}
