//! Base-model decode step at SmolLM2-135M sizes: one new token with a key/value cache holding
//! 256 positions, random f32 weights, on `Device::flex()` (CPU).
//!
//! `cargo bench -p l2d-models --bench base_decode` prints divan's timing of one step and, first,
//! a summary line with tokens/s (median of timed steps) and the bytes of weights + cache held.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{DType, Device, Int, Tensor};
use l2d_models::config::ModelConfig;
use l2d_models::decoder::{CausalLm, KvCache};

const CONTEXT: usize = 256;

fn smollm2_135m() -> ModelConfig {
    ModelConfig::from_json_str(
        r#"{"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
            "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
            "head_dim": 64, "vocab_size": 49152, "tie_word_embeddings": true,
            "rope_theta": 100000.0, "rms_norm_eps": 1e-5, "max_position_embeddings": 8192}"#,
    )
    .expect("valid config")
}

/// The model and a cache holding `CONTEXT` positions.
fn setup(device: &Device) -> (CausalLm, KvCache, Tensor<2, Int>) {
    let config = smollm2_135m();
    let model = CausalLm::random(&config, device, DType::F32, 0);
    let prompt = Tensor::<1, Int>::arange(0..CONTEXT as i64, device).reshape([1, CONTEXT]);
    let mut cache = KvCache::new();
    let _ = model.forward(prompt, Some(&mut cache));
    let next = Tensor::<2, Int>::from_ints([[42]], device);
    (model, cache, next)
}

/// One decode step: logits of one new token, argmax read back (as a generator would).
fn step(model: &CausalLm, cache: &mut KvCache, token: Tensor<2, Int>) -> i64 {
    let logits = model.forward(token, Some(cache));
    logits.argmax(2).into_scalar::<i64>()
}

fn main() {
    if std::env::args().any(|a| a == "--bench") {
        let device = Device::flex();
        let (model, cache, next) = setup(&device);
        let mut times = Vec::new();
        for _ in 0..12 {
            let mut c = cache.clone();
            let t = Instant::now();
            step(&model, &mut c, next.clone());
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let mut c = cache.clone();
        step(&model, &mut c, next);
        let (w, kv) = (model.weight_bytes(), c.size_bytes());
        println!(
            "SmolLM2-135M sizes, f32, flex, context {CONTEXT}: {:.1} tokens/s (median step {:.1} ms); \
             weights {:.1} MiB ({} params) + KV cache {:.2} MiB = {:.1} MiB",
            1.0 / median,
            median * 1e3,
            w as f64 / (1 << 20) as f64,
            model.num_params(),
            kv as f64 / (1 << 20) as f64,
            (w + kv) as f64 / (1 << 20) as f64,
        );
    }
    divan::main();
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn decode_step_context_256(bencher: divan::Bencher) {
    let device = Device::flex();
    let (model, cache, next) = setup(&device);
    bencher
        .with_inputs(|| (cache.clone(), next.clone()))
        .bench_local_values(|(mut c, t)| step(&model, &mut c, t));
}
