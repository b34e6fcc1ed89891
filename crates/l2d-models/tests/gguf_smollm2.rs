//! SmolLM2-135M-Instruct (Q4_1 GGUF, fetched by `scripts/fetch-smollm2.sh`): the config,
//! the dequantised tensors (against the `gguf` package) and the un-permuted q/k projections
//! (against transformers 4.46.3's GGUF loader), from `fixtures/smollm2/gguf_reference.*`.

mod tokenizer_support;

use std::sync::Arc;

use l2d_models::gguf::{GgmlType, GgufFile, GgufWeights};
use l2d_models::weights::WeightSource;
use tokenizer_support::{fixtures, read_json, safetensors, smollm2_gguf};

fn file() -> Arc<GgufFile> {
    Arc::new(GgufFile::open(smollm2_gguf()).unwrap())
}

#[test]
fn config_matches_transformers() {
    let file = file();
    let config = file.config_json().unwrap();
    let reference = read_json(fixtures().join("smollm2/gguf_reference.json"));
    let mut compared = 0;
    for (key, value) in reference["config"].as_object().unwrap() {
        if key == "_model_name_or_path" || key == "unk_token_id" {
            continue;
        }
        assert_eq!(&config[key], value, "{key}");
        compared += 1;
    }
    assert!(compared >= 13);
    // What transformers leaves implicit: no `output.weight`, so the head is tied.
    assert!(file.tensor_info("output.weight").is_none());
    assert_eq!(config["tie_word_embeddings"], true);
    assert_eq!(config["hidden_size"], 576);
    assert_eq!(config["head_dim"], 64);
    assert_eq!(config["rope_theta"], 100000.0);
}

#[test]
fn dequantised_tensors_equal_the_gguf_package() {
    let file = file();
    let reference = read_json(fixtures().join("smollm2/gguf_reference.json"));
    let values = safetensors(fixtures().join("smollm2/gguf_reference.safetensors"));
    assert_eq!(file.version(), 3);
    assert_eq!(file.tensor_infos().len(), 272);
    for (name, info) in reference["tensors"].as_object().unwrap() {
        let t = file.tensor_info(name).unwrap();
        assert_eq!(t.ggml_type.to_string(), info["type"].as_str().unwrap());
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape(), shape, "{name}");
        let x = file.dequantize(name).unwrap();
        let sum: f64 = x.iter().map(|&v| f64::from(v)).sum();
        let abs_sum: f64 = x.iter().map(|&v| f64::from(v).abs()).sum();
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1.0);
        assert!(
            rel(sum, info["sum"].as_f64().unwrap()) < 1e-9,
            "{name}: sum {sum}"
        );
        assert!(
            rel(abs_sum, info["abs_sum"].as_f64().unwrap()) < 1e-9,
            "{name}: |sum| {abs_sum}"
        );
        match info["rows"].as_array() {
            None => {
                let got: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
                assert_eq!(got, values[&format!("{name}.values")].1, "{name}");
            }
            Some(rows) => {
                let cols = shape[1];
                let want = &values[&format!("{name}.rows")].1;
                for (k, r) in rows.iter().enumerate() {
                    let r = r.as_u64().unwrap() as usize;
                    let got: Vec<f64> = x[r * cols..(r + 1) * cols]
                        .iter()
                        .map(|&v| f64::from(v))
                        .collect();
                    assert_eq!(
                        got,
                        want[k * cols..(k + 1) * cols],
                        "{name} row {r}: bit-exact"
                    );
                }
            }
        }
    }
    assert_eq!(
        file.tensor_info("token_embd.weight").unwrap().ggml_type,
        GgmlType::Q8_0
    );
    assert_eq!(
        file.tensor_info("blk.0.attn_q.weight").unwrap().ggml_type,
        GgmlType::Q4_1
    );
}

#[test]
fn q_k_projections_equal_transformers_layout() {
    let weights = GgufWeights::new(file()).unwrap();
    let values = safetensors(fixtures().join("smollm2/gguf_reference.safetensors"));
    assert_eq!(weights.names().len(), 272);
    assert!(!weights.names().contains(&"lm_head.weight".to_string()));
    for layer in [0, 29] {
        for (proj, rows) in [("q_proj", 576), ("k_proj", 192)] {
            let name = format!("model.layers.{layer}.self_attn.{proj}.weight");
            let data = weights.tensor_data(&name).unwrap();
            assert_eq!(data.shape().to_vec(), vec![rows, 576], "{name}");
            let x: Vec<f32> = data.iter::<f32>().collect();
            let row_sums: Vec<f64> = x
                .chunks(576)
                .map(|r| r.iter().map(|&v| f64::from(v)).sum())
                .collect();
            let want = &values[&format!("hf.{name}.row_sums")].1;
            for (r, (a, b)) in row_sums.iter().zip(want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-9,
                    "{name} row {r}: sum {a} vs transformers {b}"
                );
            }
            if layer == 0 {
                let head0: Vec<f64> = x[..64 * 576].iter().map(|&v| f64::from(v)).collect();
                assert_eq!(
                    head0,
                    values[&format!("hf.{name}.rows")].1,
                    "{name}: first head"
                );
            }
            // The stored rows are permuted: their row sums are in another order.
            let raw = weights
                .file()
                .dequantize(weights.gguf_name(&name).unwrap())
                .unwrap();
            let raw_sums: Vec<f64> = raw
                .chunks(576)
                .map(|r| r.iter().map(|&v| f64::from(v)).sum())
                .collect();
            assert_ne!(raw_sums, row_sums, "{name}");
        }
    }
}
