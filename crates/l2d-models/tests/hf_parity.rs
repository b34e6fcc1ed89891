//! Parity with Hugging Face transformers 4.46 on the tiny models of `fixtures/hf/` (made by
//! `scripts/make_hf_fixtures.py`) and on the `base` case of `fixtures/reference/*`.

mod common;

use burn::tensor::{DType, Device, Int, Tensor};
use common::*;
use l2d_models::config::ModelConfig;
use l2d_models::decoder::{CausalLm, ForwardOptions, KvCache};
use l2d_models::weights::SafetensorsSource;

/// Every Hugging Face fixture; all are compared in f32.
const FIXTURES: [&str; 5] = [
    "llama3-tied",
    "qwen2-bias",
    "mistral-swa",
    "llama-sharded",
    "qwen2-bf16",
];
const TOL: f32 = 1e-4;

fn load(name: &str) -> (CausalLm, Cases, Device) {
    let device = Device::flex();
    let dir = hf_fixture(name);
    let model =
        CausalLm::from_dir(&dir, &device, DType::F32).unwrap_or_else(|e| panic!("{name}: {e}"));
    (model, Cases::open(&dir.join("cases.safetensors")), device)
}

#[test]
fn full_sequence_logits_match_transformers() {
    for name in FIXTURES {
        let (model, cases, device) = load(name);
        let (want, shape) = cases.f32("logits");
        let got = model.forward(cases.ids("input_ids", &device), None);
        assert_eq!(got.dims().to_vec(), shape, "{name}");
        let err = max_abs_diff(&to_vec(got), &want);
        println!(
            "{name}: max |logits - transformers| = {err:.2e} (max |logit| {:.2})",
            max_abs(&want)
        );
        assert!(
            err < TOL,
            "{name}: logits differ from transformers by {err}"
        );
    }
}

fn cached_logits(model: &CausalLm, ids: &Tensor<2, Int>, chunks: &[usize]) -> Tensor<3> {
    let mut cache = KvCache::new();
    let mut outs = Vec::new();
    let mut start = 0;
    for &len in chunks {
        outs.push(model.forward(ids.clone().narrow(1, start, len), Some(&mut cache)));
        start += len;
        assert_eq!(cache.seq_len(), start);
    }
    assert_eq!(start, ids.dims()[1]);
    Tensor::cat(outs, 1)
}

#[test]
fn cached_decoding_equals_full_sequence() {
    for name in FIXTURES {
        let (model, cases, device) = load(name);
        let ids = cases.ids("input_ids", &device);
        let seq = ids.dims()[1];
        let (want, _) = cases.f32("logits");
        let full = to_vec(model.forward(ids.clone(), None));
        let one_by_one = vec![1; seq];
        let chunked = [3, 1, 4, seq - 8];
        for chunks in [&one_by_one[..], &chunked[..]] {
            let got = to_vec(cached_logits(&model, &ids, chunks));
            let vs_full = max_abs_diff(&got, &full);
            let vs_hf = max_abs_diff(&got, &want);
            println!(
                "{name} chunks {chunks:?}: vs full {vs_full:.2e}, vs transformers {vs_hf:.2e}"
            );
            assert!(
                vs_full < TOL && vs_hf < TOL,
                "{name} {chunks:?}: {vs_full} / {vs_hf}"
            );
        }
    }
}

#[test]
fn left_padded_batch_matches_transformers() {
    for name in FIXTURES {
        let (model, cases, device) = load(name);
        let ids = cases.ids("padded.input_ids", &device);
        let mask = cases.ids("padded.attention_mask", &device);
        let mask_vec = cases.ids_vec("padded.attention_mask");
        let (want, shape) = cases.f32("padded.logits");
        let opts = ForwardOptions {
            attention_mask: Some(mask),
            position_ids: None,
        };
        let got = to_vec(model.forward_with(ids, None, &opts));
        let (seq, vocab) = (shape[1], shape[2]);
        let mut err = 0f32;
        let mut compared = 0;
        for (pos, &m) in mask_vec.iter().enumerate() {
            if m == 1 {
                let r = pos * vocab..(pos + 1) * vocab;
                err = err.max(max_abs_diff(&got[r.clone()], &want[r]));
                compared += 1;
            }
        }
        assert_eq!(compared, 2 * seq - 3);
        println!("{name}: padded batch max error {err:.2e}");
        assert!(err < TOL, "{name}: padded logits differ by {err}");
    }
}

#[test]
fn greedy_continuations_match_transformers() {
    for name in FIXTURES {
        let (model, cases, device) = load(name);
        let prompt = cases.ids("greedy.prompt", &device);
        let want = cases.ids_vec("greedy.tokens");
        let mut cache = KvCache::new();
        let mut logits = model.forward(prompt, Some(&mut cache));
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let s = logits.dims()[1];
            let next = logits.narrow(1, s - 1, 1).argmax(2).reshape([1, 1]);
            got.push(
                next.clone()
                    .into_data()
                    .convert::<i64>()
                    .try_to_vec::<i64>()
                    .unwrap()[0],
            );
            logits = model.forward(next, Some(&mut cache));
        }
        println!("{name}: greedy {got:?}");
        assert_eq!(
            got, want,
            "{name}: greedy continuation differs from transformers"
        );
    }
}

#[test]
fn mistral_sliding_window_matters_and_matches() {
    let (windowed, cases, device) = load("mistral-swa");
    assert_eq!(
        windowed.config().layer_sliding_windows,
        vec![Some(4), Some(4)]
    );
    let ids = cases.ids("input_ids", &device);
    let dir = hf_fixture("mistral-swa");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    json["sliding_window"] = serde_json::Value::Null;
    let config = ModelConfig::from_value(&json).unwrap();
    let source = SafetensorsSource::open(&dir).unwrap();
    let full = CausalLm::load(&source, &config, &device, DType::F32).unwrap();
    let (no_window_hf, shape) = cases.f32("logits_no_window");
    let (windowed_hf, _) = cases.f32("logits");
    let no_window = to_vec(full.forward(ids.clone(), None));
    let with_window = to_vec(windowed.forward(ids, None));
    assert!(max_abs_diff(&no_window, &no_window_hf) < TOL);
    // Positions < window see the same keys either way; later ones differ.
    let (seq, vocab) = (shape[1], shape[2]);
    for b in 0..2 {
        for pos in 0..seq {
            let r = (b * seq + pos) * vocab..(b * seq + pos + 1) * vocab;
            let d = max_abs_diff(&no_window[r.clone()], &with_window[r.clone()]);
            if pos < 4 {
                assert!(d < 1e-5, "pos {pos}: window must not matter, got {d}");
            } else {
                assert!(d > 1e-2, "pos {pos}: window must matter, got {d}");
            }
            assert!(max_abs_diff(&with_window[r.clone()], &windowed_hf[r]) < TOL);
        }
    }
}

#[test]
fn reference_fixture_base_case() {
    let device = Device::flex();
    for name in ["llama-tiny", "qwen2-tiny"] {
        let dir = reference_fixture(name);
        let config = ModelConfig::from_file(dir.join("config.json")).unwrap();
        let source = SafetensorsSource::from_file(dir.join("base.safetensors")).unwrap();
        let model = CausalLm::load(&source, &config, &device, DType::F32).unwrap();
        let cases = Cases::open(&dir.join("cases.safetensors"));
        let (want, _) = cases.f32("base.logits");
        let got = to_vec(model.forward(cases.ids("base.input_ids", &device), None));
        let err = max_abs_diff(&got, &want);
        println!("reference {name}: base logits max error {err:.2e}");
        assert!(err < TOL, "{name}: {err}");
    }
}

#[test]
fn bf16_checkpoint_runs_in_bf16_close_to_f32() {
    let device = Device::flex();
    let dir = hf_fixture("qwen2-bf16");
    let model = CausalLm::from_dir(&dir, &device, DType::BF16).unwrap();
    assert!(
        model
            .parameter_dtypes()
            .iter()
            .all(|(_, d)| *d == DType::BF16)
    );
    let cases = Cases::open(&dir.join("cases.safetensors"));
    let (want, _) = cases.f32("logits");
    let got = model.forward(cases.ids("input_ids", &device), None);
    assert_eq!(got.dtype(), DType::BF16);
    let got = to_vec(got);
    let err = max_abs_diff(&got, &want);
    let rel = err / max_abs(&want);
    println!("qwen2-bf16 computed in bf16: max error {err:.3} ({rel:.2e} of max |logit|)");
    // bf16 keeps 8 significant bits: a few percent of the largest logit after two layers.
    assert!(
        rel < 0.05,
        "bf16 logits too far from f32 transformers: {rel}"
    );
}
