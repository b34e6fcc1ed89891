//! A model too large for a 24 GB machine in f32 (Llama-3.1-8B sizes: 32 GB of f32 weights)
//! built and run with its projections in blocks: random blocks drawn directly (no f32 copy
//! ever exists), a prompt, then greedy decoding, with the process's peak resident memory.
//!
//! ```text
//! cargo run --release -p l2d-models --example quantized_memory -- --format q4_0
//! ```
//!
//! Flags: `--size` (a preset of `l2d_models::presets`, default `llama-3.1-8b`), `--format`
//! (`q4_0` by default; `q8_0`, `q4_1`), `--prompt 32` (prompt tokens), `--tokens 8` (decoded
//! tokens). Prints one JSON line: weights held, peak RSS (Linux `VmHWM`), times.

use std::process::ExitCode;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use l2d_models::decoder::{CausalLm, KvCache};
use l2d_models::loading::WeightFormat;

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn main() -> ExitCode {
    let (mut size, mut format, mut prompt, mut tokens) = (
        "llama-3.1-8b".to_string(),
        "q4_0".to_string(),
        32usize,
        8usize,
    );
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match flag.as_str() {
            "--size" => size = value(),
            "--format" => format = value(),
            "--prompt" => prompt = value().parse().unwrap_or(0),
            "--tokens" => tokens = value().parse().unwrap_or(0),
            other => {
                eprintln!("unknown flag {other}");
                return ExitCode::FAILURE;
            }
        }
    }
    let Some(config) = l2d_models::presets::preset(&size) else {
        eprintln!("--size: one of {}", l2d_models::presets::PRESETS.join(", "));
        return ExitCode::FAILURE;
    };
    let format: WeightFormat = match format.parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("--format: {e}");
            return ExitCode::FAILURE;
        }
    };
    if prompt == 0 || tokens == 0 {
        eprintln!("--prompt and --tokens: positive integers");
        return ExitCode::FAILURE;
    }
    let device = Device::flex();
    let t = Instant::now();
    let model = CausalLm::random_as(&config, &device, format, 0);
    let build = t.elapsed().as_secs_f64();
    let ids = Tensor::<1, Int>::arange(0..prompt as i64, &device).reshape([1, prompt]);
    let mut cache = KvCache::new();
    let t = Instant::now();
    let logits = model.forward(ids, Some(&mut cache));
    let mut next = logits
        .narrow(1, prompt - 1, 1)
        .argmax(2)
        .into_scalar::<i64>();
    let prefill = t.elapsed().as_secs_f64();
    let mut times = Vec::new();
    for _ in 0..tokens {
        let t = Instant::now();
        let step = Tensor::<2, Int>::from_ints([[next]], &device);
        next = model
            .forward(step, Some(&mut cache))
            .argmax(2)
            .into_scalar::<i64>();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    // Float parameters (embedding, norms) plus every projection's weights.
    let params = model.num_params()
        + model
            .frozen_linears()
            .map(|l| l.d_in() * l.d_out())
            .sum::<usize>();
    let gib = |b: f64| b / (1u64 << 30) as f64;
    println!(
        "{{\"size\": \"{size}\", \"format\": \"{format}\", \"params\": {}, \
         \"weights_held_gib\": {:.2}, \"f32_weights_would_be_gib\": {:.2}, \
         \"peak_rss_gib\": {:.2}, \"build_s\": {build:.1}, \"prefill_tokens\": {prompt}, \
         \"prefill_s\": {prefill:.1}, \"decode_ms_median\": {:.0}}}",
        params,
        gib(model.weight_bytes() as f64),
        gib(params as f64 * 4.0),
        peak_rss_bytes().map_or(f64::NAN, |b| gib(b as f64)),
        times[times.len() / 2] * 1e3,
    );
    ExitCode::SUCCESS
}
