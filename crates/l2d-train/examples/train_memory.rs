//! Peak memory of L2D training steps on SmolLM2-135M-Instruct: batch 4 × sequence 256, the
//! released diffusion-path configuration, f32 (or `--bf16` for the base).
//!
//! ```text
//! scripts/fetch-smollm2.sh
//! cargo run --release -p l2d-train --example train_memory [-- --bf16 --batch 4 --seq 256]
//! cargo run --release -p l2d-train --example train_memory -- --forward-only
//! ```
//!
//! Prints the resident set (`VmRSS`) after each stage, the peak (`VmHWM`) after two optimizer
//! steps, and the analytic breakdown of what a step holds; `--forward-only` stops after one
//! forward, to measure the graph it keeps for backward.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::DType;
use l2d_core::HostRng;
use l2d_models::diffusion::DiffusionPath;
use l2d_models::l2d_config::L2dConfig;
use l2d_models::pretrained::{LoadOptions, Pretrained};
use l2d_train::data::{TokenizedExample, collate};
use l2d_train::memory::{MemoryBreakdown, current_rss, peak_rss};
use l2d_train::optim::{AdamW, AdamWConfig, GradientBuffer};
use l2d_train::step::{forward_backward, loss_inputs, sample_noise, trainable};

fn mib(b: Option<u64>) -> String {
    b.map_or("n/a".into(), |b| {
        format!("{:8.1} MiB", b as f64 / 1048576.0)
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name);
    let value = |name: &str, default: usize| {
        flag(name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (batch, seq) = (value("--batch", 4), value("--seq", 256));
    let dtype = if flag("--bf16").is_some() {
        DType::BF16
    } else {
        DType::F32
    };
    let gguf = std::env::var_os("L2D_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../.models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    println!("batch {batch} x seq {seq}, base {dtype:?}");
    println!("start            RSS {}", mib(current_rss()));
    let device = burn::tensor::Device::flex();
    let lm = Pretrained::open(
        gguf.to_str().unwrap_or_default(),
        &LoadOptions::new(device.clone(), dtype),
    )?;
    let base = lm.model;
    println!(
        "base loaded      RSS {}   (peak {})",
        mib(current_rss()),
        mib(peak_rss())
    );
    let path = DiffusionPath::init(&L2dConfig::default(), &base, 0)?;
    let path = trainable(path, &device);
    println!(
        "path built       RSS {}   ({} trainable parameters)",
        mib(current_rss()),
        path.num_params()
    );
    let vocab = base.config().vocab_size as u64;
    let mut rng = HostRng::new(1);
    let examples: Vec<TokenizedExample> = (0..batch)
        .map(|i| {
            let ids: Vec<u32> = (0..=seq).map(|_| (rng.next_u64() % vocab) as u32).collect();
            TokenizedExample {
                input_ids: ids[..seq].to_vec(),
                labels: ids[1..].iter().map(|&t| i64::from(t)).collect(),
                class_id: None,
                conversation: i,
            }
        })
        .collect();
    let refs: Vec<&TokenizedExample> = examples.iter().collect();
    let batch_t = collate(&refs, 0, &device);
    let mut adam = AdamW::new(AdamWConfig::default());
    let mut buffer = GradientBuffer::new();
    let mut path = path;
    for step in 0..2 {
        let start = Instant::now();
        let noise = sample_noise(&path, &batch_t, &mut rng, &device);
        if flag("--forward-only").is_some() {
            // The graph a forward keeps for backward, measured alone.
            let _held = path.loss(&base, loss_inputs(&batch_t, noise), None)?;
            println!(
                "forward          RSS {}   (peak {})",
                mib(current_rss()),
                mib(peak_rss())
            );
            return Ok(());
        }
        let out = forward_backward(&path, &base, loss_inputs(&batch_t, noise), 1.0)?;
        let grads = out.grads.expect("finite loss");
        buffer.accumulate(&path, &grads, 1.0);
        drop(grads);
        let norm = buffer.clip_global_norm(1.0);
        path = adam.step(path, 1e-4, &mut buffer);
        println!(
            "step {}           RSS {}   (peak {}), loss {:.4}, |g| {:.3e}, {:.1} s",
            step + 1,
            mib(current_rss()),
            mib(peak_rss()),
            out.loss,
            norm,
            start.elapsed().as_secs_f64()
        );
    }
    let m = MemoryBreakdown::estimate(&base, &path, batch, seq);
    println!("\nanalytic breakdown of a step (MiB):");
    for (name, b) in [
        ("base weights", m.base_weights),
        ("diffusion params (f32)", m.diffusion_params),
        ("gradients (f32)", m.gradients),
        ("AdamW moments (f32)", m.adam_states),
        ("frozen K/V + hidden", m.frozen_cache),
        ("path activations (est.)", m.activations),
        ("logits + softmax (f32)", m.logits),
        ("total", m.total()),
    ] {
        println!("  {name:<26} {:9.1}", b as f64 / 1048576.0);
    }
    println!("measured peak RSS (VmHWM): {}", mib(peak_rss()));
    println!(
        "optimizer state elements: {} (diffusion path only)",
        adam.state_elements()
    );
    Ok(())
}
