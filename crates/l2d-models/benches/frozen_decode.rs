//! The frozen decoder's decode step against the memory floor, per weight format, in one run:
//! SmolLM2-135M sizes (random weights), 256 cached positions, `Device::flex()`.
//!
//! For each of f32, q8_0, q4_0 and q4_1 (projections and head in blocks, the rest f32) it
//! measures the median decode step (one new token, logits, argmax read back) and, interleaved
//! with it, the **byte floor**: streaming as many bytes as the step reads from the weights
//! ([`CausalLm::weight_bytes_per_token`]) once, summed by the same threads. The ratio
//! step / floor is what is left to gain in the kernels; the goals are ≤ 1.5 for f32,
//! and for Q4 ≤ 1.5 × llama.cpp's step on this machine.
//!
//! `cargo bench -p l2d-models --bench frozen_decode` prints the table, then divan's timings.
//! `L2D_BENCH_FORMATS=f32,q4_1` restricts the formats.

mod support;

use std::time::Instant;

use burn::tensor::{Device, Int, Tensor};
use l2d_models::decoder::{CausalLm, KvCache};
use l2d_models::loading::WeightFormat;
use rayon::prelude::*;

const CONTEXT: usize = 256;
const FORMATS: [&str; 4] = ["f32", "q8_0", "q4_0", "q4_1"];

fn formats() -> Vec<&'static str> {
    support::env_filter("L2D_BENCH_FORMATS", &FORMATS)
}

/// The model in `format` and a cache holding `CONTEXT` positions.
fn setup(format: &str, device: &Device) -> (CausalLm, KvCache) {
    let config = l2d_models::presets::preset("smollm2-135m").expect("a preset");
    let format: WeightFormat = format.parse().expect("a weight format");
    let model = CausalLm::random_as(&config, device, format, 0);
    let prompt = Tensor::<1, Int>::arange(0..CONTEXT as i64, device).reshape([1, CONTEXT]);
    let mut cache = KvCache::new();
    let _ = model.forward(prompt, Some(&mut cache));
    (model, cache)
}

/// One decode step: logits of one new token, argmax read back (as a generator would).
fn step(model: &CausalLm, cache: &mut KvCache, device: &Device) -> i64 {
    let logits = model.forward(Tensor::<2, Int>::from_ints([[42]], device), Some(cache));
    logits.argmax(2).into_scalar::<i64>()
}

/// Streams `buffer` once on rayon's threads (16 independent sums per chunk, so the adds
/// keep up with memory); returns the sum so nothing is optimised away.
fn stream(buffer: &[f32]) -> f32 {
    buffer
        .par_chunks(1 << 16)
        .map(|c| {
            let mut acc = [0f32; 16];
            for b in c.chunks_exact(16) {
                for l in 0..16 {
                    acc[l] += b[l];
                }
            }
            acc.iter().sum::<f32>()
        })
        .sum()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn summary() {
    let device = Device::flex();
    println!(
        "SmolLM2-135M sizes, random weights, flex, context {CONTEXT}, {} threads",
        rayon::current_num_threads()
    );
    println!(
        "| format | weights held (MiB) | read per token (MiB) | byte floor (ms) | decode step (ms) | step / floor |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for format in formats() {
        let (model, cache) = setup(format, &device);
        let bytes = model.weight_bytes_per_token();
        let buffer = vec![1.0f32; bytes / 4];
        let (mut steps, mut floors) = (Vec::new(), Vec::new());
        step(&model, &mut cache.clone(), &device);
        for _ in 0..15 {
            let mut c = cache.clone();
            let t = Instant::now();
            std::hint::black_box(step(&model, &mut c, &device));
            steps.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            std::hint::black_box(stream(&buffer));
            floors.push(t.elapsed().as_secs_f64());
        }
        let (s, f) = (median(steps), median(floors));
        let mib = |b: usize| b as f64 / (1 << 20) as f64;
        println!(
            "| {format} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} |",
            mib(model.weight_bytes()),
            mib(bytes),
            f * 1e3,
            s * 1e3,
            s / f
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--bench") {
        summary();
    }
    divan::main();
}

#[divan::bench(args = formats(), sample_count = 10, sample_size = 1)]
fn decode_step(bencher: divan::Bencher, format: &str) {
    let device = Device::flex();
    let (model, cache) = setup(format, &device);
    bencher
        .with_inputs(|| cache.clone())
        .bench_local_values(|mut c| step(&model, &mut c, &device));
}
