//! SmolLM2-135M-Instruct (Q4_1 GGUF fetched by `scripts/fetch-smollm2.sh`) through the
//! decoder: logits of a chat prompt against transformers 4.46 loading the same GGUF with the
//! head tied by hand (`fixtures/smollm2/logits.safetensors`, `scripts/make_smollm2_reference.py`).

mod common;

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use common::*;
use l2d_models::config::ModelConfig;
use l2d_models::decoder::{CausalLm, KvCache};
use l2d_models::gguf::GgufWeights;

#[path = "../../../tests/support/smollm2.rs"]
mod smollm2;
use smollm2::smollm2_gguf as gguf_path;

#[test]
fn smollm2_gguf_logits_match_transformers() {
    let weights = GgufWeights::open(gguf_path()).unwrap();
    let config = ModelConfig::from_value(&weights.file().config_json().unwrap()).unwrap();
    assert!(config.tie_word_embeddings);
    let device = Device::flex();
    let model = CausalLm::load(&weights, &config, &device, DType::F32).unwrap();

    let cases = Cases::open(&repo_root().join("fixtures/smollm2/logits.safetensors"));
    let ids = cases.raw("input_ids").i64();
    let seq = ids.len();
    let input = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, seq]), &device);
    let logits = model.forward(input.clone(), None);
    let vocab = config.vocab_size;

    let (last_want, _) = cases.f32("logits_last");
    let got = to_vec(logits.clone());
    let last = &got[(seq - 1) * vocab..];
    let err_last = max_abs_diff(last, &last_want);
    let positions = cases.raw("positions").i64();
    let (pos_want, _) = cases.f32("logits_positions");
    let mut err_pos = 0f32;
    for (k, &p) in positions.iter().enumerate() {
        let p = p as usize;
        err_pos = err_pos.max(max_abs_diff(
            &got[p * vocab..(p + 1) * vocab],
            &pos_want[k * vocab..(k + 1) * vocab],
        ));
    }
    println!(
        "SmolLM2 {seq} tokens: last-position max error {err_last:.2e}, earlier positions \
         {err_pos:.2e} (max |logit| {:.1})",
        max_abs(&last_want)
    );
    assert!(err_last < 1e-3 && err_pos < 1e-3, "{err_last} / {err_pos}");

    // Incremental decoding gives the same last-position logits.
    let mut cache = KvCache::new();
    let _ = model.forward(input.clone().narrow(1, 0, seq - 1), Some(&mut cache));
    let step = to_vec(model.forward(input.narrow(1, seq - 1, 1), Some(&mut cache)));
    assert!(max_abs_diff(&step, &last_want) < 1e-3);
}

/// The GGUF's own blocks kept (Q4_1 projections, the Q8_0 embedding for the tied head) give
/// transformers' logits (which dequantise to f32) within the f32 tolerance above.
#[test]
fn smollm2_logits_with_kept_blocks_match_transformers() {
    use l2d_models::loading::WeightFormat;
    let weights = GgufWeights::open(gguf_path()).unwrap();
    let config = ModelConfig::from_value(&weights.file().config_json().unwrap()).unwrap();
    let device = Device::flex();
    let format: WeightFormat = "q4_1".parse().unwrap();
    let model = CausalLm::load_as(&weights, &config, &device, format).unwrap();
    let cases = Cases::open(&repo_root().join("fixtures/smollm2/logits.safetensors"));
    let ids = cases.raw("input_ids").i64();
    let seq = ids.len();
    let input = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, seq]), &device);
    let (last_want, _) = cases.f32("logits_last");
    // The prompt through the dequantized fallback, then the last token decoded in blocks.
    let full = to_vec(model.forward(input.clone(), None));
    let err_full = max_abs_diff(&full[(seq - 1) * config.vocab_size..], &last_want);
    let mut cache = KvCache::new();
    let _ = model.forward(input.clone().narrow(1, 0, seq - 1), Some(&mut cache));
    let step = to_vec(model.forward(input.narrow(1, seq - 1, 1), Some(&mut cache)));
    let err_step = max_abs_diff(&step, &last_want);
    println!(
        "SmolLM2 kept blocks: last-position max error {err_full:.2e} (prompt), {err_step:.2e} (decoded)"
    );
    assert!(
        err_full < 1e-3 && err_step < 1e-3,
        "{err_full} / {err_step}"
    );
}
