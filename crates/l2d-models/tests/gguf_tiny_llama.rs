//! A tiny random llama written the way llama.cpp's converter writes one
//! (`fixtures/gguf/tiny-llama.*`): config, tensor names, dtypes and values equal to what
//! transformers 4.46.3's GGUF loader returns, the q/k rows back in the Hugging Face layout
//! they had before llama.cpp permuted them, and the rebuilt tokenizer equal to transformers'.

mod tokenizer_support;

use std::sync::Arc;

use burn::tensor::DType;
use l2d_models::gguf::{GgufError, GgufFile, GgufWeights, unpermute_rows};
use l2d_models::weights::{WeightError, WeightSource};
use tokenizer_support::{fixtures, ids, read_json, safetensors};

fn file() -> Arc<GgufFile> {
    Arc::new(GgufFile::open(fixtures().join("gguf/tiny-llama.gguf")).unwrap())
}

#[test]
fn config_matches_transformers() {
    let config = file().config_json().unwrap();
    let reference = read_json(fixtures().join("gguf/tiny-llama.json"));
    for (key, value) in reference["config"].as_object().unwrap() {
        if key == "_model_name_or_path" {
            continue;
        }
        assert_eq!(&config[key], value, "{key}");
    }
    assert_eq!(
        config["tie_word_embeddings"], false,
        "output.weight is present"
    );
    assert_eq!(config["model_type"], "llama");
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    assert_eq!(config["rope_scaling"], serde_json::Value::Null);
    assert_eq!(config["attention_bias"], false);
}

#[test]
fn tensors_equal_transformers_gguf_loader() {
    let weights = GgufWeights::new(file()).unwrap();
    let reference = safetensors(fixtures().join("gguf/tiny-llama.safetensors"));
    let mut hf_names: Vec<String> = reference
        .keys()
        .filter_map(|k| k.strip_prefix("hf.").map(str::to_string))
        .collect();
    hf_names.sort();
    assert_eq!(weights.names(), hf_names, "the same Hugging Face names");
    for name in &hf_names {
        let (shape, want) = &reference[&format!("hf.{name}")];
        assert_eq!(weights.shape(name).as_ref(), Some(shape), "{name}");
        let data = weights.tensor_data(name).unwrap();
        assert_eq!(data.shape().to_vec(), *shape, "{name}");
        let got: Vec<f64> = data.iter::<f32>().map(f64::from).collect();
        assert_eq!(&got, want, "{name}: values");
        assert!(weights.location(name).contains("tiny-llama.gguf"));
    }
    // Stored dtypes survive: v_proj is F16, o_proj BF16, the quantised ones are dequantised.
    let dtype = |n: &str| weights.tensor_data(n).unwrap().dtype();
    assert_eq!(dtype("model.layers.0.self_attn.v_proj.weight"), DType::F16);
    assert_eq!(dtype("model.layers.0.self_attn.o_proj.weight"), DType::BF16);
    assert_eq!(dtype("model.layers.0.self_attn.q_proj.weight"), DType::F32);
    assert_eq!(dtype("lm_head.weight"), DType::F16);
    assert_eq!(
        weights.gguf_name("model.layers.1.mlp.down_proj.weight"),
        Some("blk.1.ffn_down.weight")
    );
}

#[test]
fn q_and_k_rows_are_back_in_hugging_face_layout() {
    let weights = GgufWeights::new(file()).unwrap();
    let reference = safetensors(fixtures().join("gguf/tiny-llama.safetensors"));
    let mut checked = 0;
    for layer in 0..2 {
        for proj in ["q_proj", "k_proj"] {
            let name = format!("model.layers.{layer}.self_attn.{proj}.weight");
            let (_, original) = &reference[&format!("orig.{name}")];
            let got: Vec<f64> = weights
                .tensor_data(&name)
                .unwrap()
                .iter::<f32>()
                .map(f64::from)
                .collect();
            assert_eq!(
                &got, original,
                "{name}: the weights before llama.cpp's permutation"
            );
            // ... and not what the file stores.
            let raw = weights
                .file()
                .dequantize(weights.gguf_name(&name).unwrap())
                .unwrap();
            assert_ne!(raw.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(), got);
            checked += 1;
        }
    }
    assert_eq!(checked, 4);
}

#[test]
fn unpermute_inverts_llama_cpp_permute() {
    // llama.cpp: w.reshape(n_head, 2, d/2, cols).swapaxes(1, 2): row h·d + 2i + s holds
    // Hugging Face row h·d + s·d/2 + i.
    let (n_head, d, cols) = (3, 8, 2);
    let rows = n_head * d;
    let hf: Vec<usize> = (0..rows * cols).collect();
    let mut gguf = vec![0; rows * cols];
    for h in 0..n_head {
        for i in 0..d / 2 {
            for s in 0..2 {
                let (dst, src) = (h * d + 2 * i + s, h * d + s * d / 2 + i);
                gguf[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&hf[src * cols..(src + 1) * cols]);
            }
        }
    }
    assert_eq!(unpermute_rows(&gguf, rows, cols, n_head), hf);
}

#[test]
fn tokenizer_matches_transformers_gguf_tokenizer() {
    let tokenizer = file().tokenizer().unwrap();
    let reference = read_json(fixtures().join("gguf/tiny-llama.json"));
    assert!(tokenizer.adds_bos(), "tokenizer.ggml.add_bos_token = true");
    assert_eq!(tokenizer.bos_token().unwrap().content, "<|im_start|>");
    assert_eq!(tokenizer.eos_token().unwrap().content, "<|im_end|>");
    for rec in reference["encode"].as_array().unwrap() {
        let text = rec["text"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode(text, false).unwrap(),
            ids(&rec["ids"]),
            "{text:?}"
        );
        assert_eq!(
            tokenizer.encode(text, true).unwrap(),
            ids(&rec["ids_with_special_tokens"]),
            "{text:?}"
        );
    }
    // The same vocabulary as the qwen2 fixture's tokenizer.json gives the same ids.
    let qwen =
        l2d_models::tokenizer::Tokenizer::from_dir(tokenizer_support::tokenizer_dir("qwen2"))
            .unwrap();
    for rec in reference["encode"].as_array().unwrap() {
        let text = rec["text"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode(text, false).unwrap(),
            qwen.encode(text, false).unwrap()
        );
    }
}

#[test]
fn unsupported_models_are_typed_errors() {
    let all_types = Arc::new(GgufFile::open(fixtures().join("gguf/all-types.gguf")).unwrap());
    let err = all_types.config_json().unwrap_err();
    assert!(matches!(err, GgufError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("testarch"), "{err}");
    assert!(GgufWeights::new(all_types.clone()).is_err());
    let err = all_types.tokenizer().unwrap_err();
    assert!(err.to_string().contains("tokenizer model"), "{err}");
    let err = all_types.chat_template().unwrap_err();
    assert!(err.to_string().contains("no chat template"), "{err}");

    let weights = GgufWeights::new(file()).unwrap();
    let err = weights
        .tensor_data("model.layers.9.mlp.up_proj.weight")
        .unwrap_err();
    assert!(matches!(err, WeightError::Missing { .. }), "{err}");
}

/// The bytes of the tiny GGUF with the f32 metadata value of `key` replaced by `value`.
fn with_f32_metadata(key: &str, value: f32) -> Vec<u8> {
    let mut b = std::fs::read(fixtures().join("gguf/tiny-llama.gguf")).unwrap();
    let needle = [&(key.len() as u64).to_le_bytes()[..], key.as_bytes()].concat();
    let at = b
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .unwrap_or_else(|| panic!("{key} is not in the fixture"))
        + needle.len();
    assert_eq!(
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap()),
        6,
        "{key}: f32"
    );
    b[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
    b
}

/// JSON cannot hold NaN or infinity: without a check such a value would silently become the
/// architecture's default.
#[test]
fn non_finite_metadata_is_an_error_naming_the_key() {
    for key in [
        "llama.attention.layer_norm_rms_epsilon",
        "llama.rope.freq_base",
    ] {
        for value in [f32::NAN, f32::INFINITY] {
            let file = GgufFile::from_bytes(with_f32_metadata(key, value), "bad.gguf").unwrap();
            let err = file.config_json().unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("not a finite"), "{err}");
        }
    }
}
