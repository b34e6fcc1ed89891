//! Bad input never crashes: 2,000 seeded mutations per format of the files a user hands to
//! l2d (GGUF headers and metadata, loaded in f32 and with blocks kept; safetensors headers,
//! `config.json` values, an adapter's metadata), each loaded the way `l2d` loads it. Every one must end in `Ok` or a typed error: no
//! panic, no abort, no single allocation above 1 GiB (a counting allocator refuses it, which
//! aborts the test loudly), and no case slower than 5 s.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::tensor::{DType, Device};
use common::*;
use l2d_models::config::ModelConfig;
use l2d_models::decoder::CausalLm;
use l2d_models::diffusion::{AdapterLoadOptions, DiffusionPath};
use l2d_models::gguf::{GgufFile, GgufWeights};
use l2d_models::l2d_config::L2dConfig;
use l2d_models::loading::WeightFormat;
use l2d_models::weights::SafetensorsSource;
use l2d_quant::BlockFormat;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

#[path = "support/mutation.rs"]
mod harness;

use harness::{Bounded, run_cases};

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

/// Values that break parsers: zero, one, negatives, type boundaries, huge counts.
const EXTREMES: [u64; 10] = [
    0,
    1,
    2,
    255,
    65_535,
    1 << 31,
    1 << 32,
    1 << 40,
    u64::MAX / 2,
    u64::MAX,
];

/// Flips bytes and overwrites 8-byte words with extremes in `bytes[..end]`.
fn mutate_bytes(bytes: &mut [u8], end: usize, rng: &mut ChaCha8Rng) {
    let end = end.min(bytes.len());
    for _ in 0..rng.random_range(1..4) {
        let at = rng.random_range(0..end);
        if rng.random_bool(0.5) && at + 8 <= end {
            let v = EXTREMES[rng.random_range(0..EXTREMES.len())];
            bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
        } else {
            bytes[at] = rng.random();
        }
    }
}

/// A JSON value that no well-formed config holds at `field`.
fn odd_value(rng: &mut ChaCha8Rng) -> Value {
    let pool = [
        json!(0),
        json!(-1),
        json!(1),
        json!(3),
        json!(u64::MAX),
        json!(1u64 << 40),
        json!(100_000_000),
        json!(1e308),
        json!(-1e308),
        json!(0.5),
        json!(1e-300),
        json!("x"),
        json!(""),
        json!(null),
        json!([]),
        json!([1, 2]),
        json!({}),
        json!(true),
    ];
    pool[rng.random_range(0..pool.len())].clone()
}

#[test]
fn mutated_gguf_files_load_or_fail_cleanly() {
    let good = std::fs::read(repo_root().join("fixtures/gguf/tiny-llama.gguf")).unwrap();
    let header_end = GgufFile::from_bytes(good.clone(), "tiny.gguf")
        .unwrap()
        .data_offset() as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(0x6767_7566);
    run_cases("GGUF", |_| {
        let mut bytes = good.clone();
        mutate_bytes(&mut bytes, header_end, &mut rng);
        let file =
            Arc::new(GgufFile::from_bytes(bytes, "mutated.gguf").map_err(|e| e.to_string())?);
        let config = ModelConfig::from_value(&file.config_json().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let tokenizer = file.tokenizer().map_err(|e| e.to_string())?;
        let _ = file.chat_template();
        let _ = file.stop_set();
        let weights = GgufWeights::new(file).map_err(|e| e.to_string())?;
        let model = CausalLm::load(&weights, &config, &Device::flex(), DType::F32)
            .map_err(|e| e.to_string())?;
        // And with its blocks kept (`--dtype q8_0`): the block path reads the same header.
        CausalLm::load_as(
            &weights,
            &config,
            &Device::flex(),
            WeightFormat::Quantized(BlockFormat::Q8_0),
        )
        .map_err(|e| e.to_string())?;
        let ids = tokenizer
            .encode("Hello world", true)
            .map_err(|e| e.to_string())?;
        if ids.iter().all(|&id| (id as usize) < config.vocab_size) && !ids.is_empty() {
            let _ = model.forward(
                burn::tensor::Tensor::from_data(
                    burn::tensor::TensorData::new(
                        ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>(),
                        [1, ids.len()],
                    ),
                    &Device::flex(),
                ),
                None,
            );
        }
        Ok(())
    });
}

#[test]
fn mutated_safetensors_headers_load_or_fail_cleanly() {
    let dir = hf_fixture("qwen2-bias");
    let good = std::fs::read(dir.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let config = ModelConfig::from_file(dir.join("config.json")).unwrap();
    let tmp = TempDir::new();
    let mut rng = ChaCha8Rng::seed_from_u64(0x7361_6665);
    run_cases("safetensors", |i| {
        let mut bytes = good.clone();
        if i % 4 == 0 {
            // The length prefix itself.
            let v = EXTREMES[rng.random_range(0..EXTREMES.len())];
            bytes[..8].copy_from_slice(&v.to_le_bytes());
        } else {
            mutate_bytes(&mut bytes[8..], header_len, &mut rng);
        }
        let path = tmp.path().join("model.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let source = SafetensorsSource::open(&path).map_err(|e| e.to_string())?;
        CausalLm::load(&source, &config, &Device::flex(), DType::F32)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
}

#[test]
fn mutated_config_values_load_or_fail_cleanly() {
    let dir = hf_fixture("llama3-tied");
    let good: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let fields: Vec<String> = good.as_object().unwrap().keys().cloned().collect();
    let source = SafetensorsSource::open(dir.join("model.safetensors")).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0x636f_6e66);
    run_cases("config.json", |_| {
        let mut config = good.clone();
        for _ in 0..rng.random_range(1..3) {
            let field = &fields[rng.random_range(0..fields.len())];
            if rng.random_bool(0.2) {
                config.as_object_mut().unwrap().remove(field);
            } else {
                config[field] = odd_value(&mut rng);
            }
        }
        let config = ModelConfig::from_value(&config).map_err(|e| e.to_string())?;
        CausalLm::load(&source, &config, &Device::flex(), DType::F32)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
}

#[test]
fn mutated_adapter_metadata_loads_or_fails_cleanly() {
    let device = Device::flex();
    let base = CausalLm::from_dir(&hf_fixture("llama3-tied"), &device, DType::F32).unwrap();
    let config = L2dConfig {
        flow_representation_dim: Some(8),
        flow_to_lm_hidden_size: Some(16),
        timestep_modulation_hidden_size: Some(16),
        timestep_modulation_freq_embedding_size: Some(16),
        flow_lora_rank: 2,
        guidance_modulation_num_classes: Some(2),
        ..L2dConfig::default()
    };
    let tmp = TempDir::new();
    let file = tmp.path().join("adapter.safetensors");
    DiffusionPath::init(&config, &base, 1)
        .unwrap()
        .save(&file, &base)
        .unwrap();
    let tensors = read_all(&file);
    let meta = l2d_models::diffusion::AdapterMetadata::read(&file)
        .unwrap()
        .raw;
    let l2d: Value = serde_json::from_str(&meta["l2d_config"]).unwrap();
    let fields: Vec<String> = l2d.as_object().unwrap().keys().cloned().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0x6164_6170);
    run_cases("adapter metadata", |i| {
        let mut meta: BTreeMap<String, String> = meta.clone().into_iter().collect();
        let mut l2d = l2d.clone();
        for _ in 0..rng.random_range(1..3) {
            let field = &fields[rng.random_range(0..fields.len())];
            l2d[field] = odd_value(&mut rng);
        }
        meta.insert("l2d_config".into(), l2d.to_string());
        if i % 5 == 0 {
            let key =
                ["format", "format_version", "architecture", "base_model"][rng.random_range(0..4)];
            meta.insert(key.into(), odd_value(&mut rng).to_string());
        }
        let path = tmp.path().join("mutated.safetensors");
        safetensors::serialize_to_file(
            tensors.iter().map(|(k, v)| (k.clone(), v)),
            Some(meta.into_iter().collect()),
            &path,
        )
        .unwrap();
        DiffusionPath::load(&path, &base, &AdapterLoadOptions::default())
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
}
