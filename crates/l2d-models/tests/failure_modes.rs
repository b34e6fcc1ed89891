//! user-needs.md §5.2 items 5–8 for the frozen decoder: RoPE scaling variants, tied/untied
//! heads, head-count and shape mismatches, dtypes after load, and broken sharded checkpoints.
//! Bad checkpoints are built in temporary folders from the good fixtures.

mod common;

use std::collections::BTreeMap;

use burn::tensor::{DType, Device};
use common::*;
use l2d_models::config::{ConfigError, ModelConfig};
use l2d_models::decoder::CausalLm;
use l2d_models::loading::{LoadError, ResolveError, expected_tensors, resolve_model_dir_in};
use l2d_models::weights::{SafetensorsSource, WeightError, WeightSource};
use safetensors::Dtype;

fn device() -> Device {
    Device::flex()
}

/// Logits of `input_ids` of `fixture`'s cases for a model loaded from `dir`.
fn logits_of(dir: &std::path::Path, fixture: &str) -> Result<Vec<f32>, LoadError> {
    let model = CausalLm::from_dir(dir, &device(), DType::F32)?;
    let cases = Cases::open(&hf_fixture(fixture).join("cases.safetensors"));
    Ok(to_vec(
        model.forward(cases.ids("input_ids", &device()), None),
    ))
}

fn expected_logits(fixture: &str) -> Vec<f32> {
    Cases::open(&hf_fixture(fixture).join("cases.safetensors"))
        .f32("logits")
        .0
}

// ---- item 5: RoPE scaling ----

#[test]
fn rope_inverse_frequencies_match_transformers() {
    let dir = hf_fixture("llama3-tied");
    let cases = Cases::open(&dir.join("cases.safetensors"));
    let variants: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("rope_variants.json")).unwrap())
            .unwrap();
    assert!(variants.len() >= 7);
    let mut checks: Vec<(String, ModelConfig)> = variants
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                ModelConfig::from_value(v).unwrap_or_else(|e| panic!("{k}: {e}")),
            )
        })
        .collect();
    checks.push((
        "model".into(),
        ModelConfig::from_file(dir.join("config.json")).unwrap(),
    ));
    for (name, config) in checks {
        let want = cases.f32(&format!("inv_freq.{name}")).0;
        let got = config.rope_inv_freq();
        assert_eq!(got.len(), want.len(), "{name}");
        let rel = got
            .iter()
            .zip(&want)
            .map(|(g, w)| ((g - w) / w).abs())
            .fold(0.0f32, f32::max);
        println!(
            "{name}: {:?}, max relative error {rel:.1e}",
            config.rope_scaling
        );
        assert!(
            rel < 1e-6,
            "{name}: inverse frequencies differ by {rel} relative"
        );
    }
}

#[test]
fn unknown_rope_type_is_an_error_naming_it() {
    let dir = hf_fixture("llama3-tied");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    json["rope_scaling"]["rope_type"] = "dynamic".into();
    let err = ModelConfig::from_value(&json).unwrap_err();
    assert!(matches!(&err, ConfigError::UnknownRopeType { found, .. } if found == "dynamic"));
    assert!(err.to_string().contains("rope_scaling"), "{err}");
    // Through the loader too.
    let tmp = copy_to_temp(&dir);
    edit_json(&tmp.path().join("config.json"), |v| {
        v["rope_scaling"]["rope_type"] = "yarn".into()
    });
    let err = CausalLm::from_dir(tmp.path(), &device(), DType::F32).unwrap_err();
    assert!(
        matches!(err, LoadError::Config(ConfigError::UnknownRopeType { .. })),
        "{err}"
    );
}

// ---- item 6: tied / untied heads ----

#[test]
fn tied_head_absent_from_file_uses_embeddings() {
    let dir = hf_fixture("llama3-tied");
    let source = SafetensorsSource::open(&dir).unwrap();
    assert!(source.shape("lm_head.weight").is_none());
    let model = CausalLm::from_dir(&dir, &device(), DType::F32).unwrap();
    assert!(model.lm_head.is_none());
    let err = max_abs_diff(
        &logits_of(&dir, "llama3-tied").unwrap(),
        &expected_logits("llama3-tied"),
    );
    assert!(err < 1e-4);
}

#[test]
fn tied_head_present_in_file_is_ignored_like_transformers() {
    let tmp = copy_to_temp(&hf_fixture("llama3-tied"));
    let file = tmp.path().join("model.safetensors");
    let mut t = read_all(&file);
    let shape = t["model.embed_tokens.weight"].shape.clone();
    let junk: Vec<f32> = (0..shape[0] * shape[1]).map(|i| (i % 7) as f32).collect();
    t.insert("lm_head.weight".into(), Raw::from_f32(&junk, shape));
    write_all(&file, &t);
    let err = max_abs_diff(
        &logits_of(tmp.path(), "llama3-tied").unwrap(),
        &expected_logits("llama3-tied"),
    );
    assert!(
        err < 1e-4,
        "tied: the embedding must be the head, got error {err}"
    );
}

#[test]
fn untied_head_present_is_used() {
    let tmp = copy_to_temp(&hf_fixture("llama3-tied"));
    let file = tmp.path().join("model.safetensors");
    let mut t = read_all(&file);
    let embed = t["model.embed_tokens.weight"].clone();
    t.insert("lm_head.weight".into(), embed.clone());
    write_all(&file, &t);
    edit_json(&tmp.path().join("config.json"), |v| {
        v["tie_word_embeddings"] = false.into()
    });
    let model = CausalLm::from_dir(tmp.path(), &device(), DType::F32).unwrap();
    assert!(model.lm_head.is_some());
    // A head equal to the embeddings reproduces the tied logits...
    let err = max_abs_diff(
        &logits_of(tmp.path(), "llama3-tied").unwrap(),
        &expected_logits("llama3-tied"),
    );
    assert!(err < 1e-4);
    // ...and a different head changes them: the file's head is what is used.
    let mut scaled = embed.f32();
    scaled.iter_mut().for_each(|x| *x *= 2.0);
    t.insert(
        "lm_head.weight".into(),
        Raw::from_f32(&scaled, embed.shape.clone()),
    );
    write_all(&file, &t);
    let doubled = logits_of(tmp.path(), "llama3-tied").unwrap();
    let want: Vec<f32> = expected_logits("llama3-tied")
        .iter()
        .map(|x| 2.0 * x)
        .collect();
    assert!(max_abs_diff(&doubled, &want) < 2e-4);
}

#[test]
fn untied_head_absent_is_an_error_naming_it() {
    let tmp = copy_to_temp(&hf_fixture("llama3-tied"));
    edit_json(&tmp.path().join("config.json"), |v| {
        v["tie_word_embeddings"] = false.into()
    });
    let err = CausalLm::from_dir(tmp.path(), &device(), DType::F32).unwrap_err();
    match &err {
        LoadError::MissingTensor { name, location } => {
            assert_eq!(name, "lm_head.weight");
            assert!(location.contains("model.safetensors"), "{location}");
        }
        other => panic!("expected MissingTensor, got {other}"),
    }
    assert!(err.to_string().contains("lm_head.weight"));
}

// ---- item 7: head counts and shapes ----

#[test]
fn wrong_kv_heads_is_a_shape_error_on_k_proj_before_compute() {
    let tmp = copy_to_temp(&hf_fixture("qwen2-bias"));
    edit_json(&tmp.path().join("config.json"), |v| {
        v["num_key_value_heads"] = 4.into()
    });
    let err = CausalLm::from_dir(tmp.path(), &device(), DType::F32).unwrap_err();
    match &err {
        LoadError::ShapeMismatch {
            name,
            location,
            expected,
            found,
            why,
        } => {
            assert!(!why.contains("default"), "{why}");
            assert_eq!(name, "model.layers.0.self_attn.k_proj.weight");
            assert!(location.contains("model.safetensors"));
            assert_eq!(
                (expected.clone(), found.clone()),
                (vec![64, 64], vec![32, 64])
            );
            assert!(why.contains("num_key_value_heads"));
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
    // A kv head count that does not divide the heads fails at config time, naming the field.
    edit_json(&tmp.path().join("config.json"), |v| {
        v["num_key_value_heads"] = 3.into()
    });
    let err = CausalLm::from_dir(tmp.path(), &device(), DType::F32).unwrap_err();
    assert!(
        matches!(&err, LoadError::Config(ConfigError::Invalid { field, .. }) if field == "num_key_value_heads"),
        "{err}"
    );
}

#[test]
fn wrong_head_dim_or_sizes_are_shape_errors_naming_the_tensor() {
    let tmp = copy_to_temp(&hf_fixture("mistral-swa"));
    edit_json(&tmp.path().join("config.json"), |v| {
        v["head_dim"] = 8.into()
    });
    let err = CausalLm::from_dir(tmp.path(), &device(), DType::F32).unwrap_err();
    assert!(
        matches!(&err, LoadError::ShapeMismatch { name, .. } if name == "model.layers.0.self_attn.q_proj.weight"),
        "{err}"
    );
    edit_json(&tmp.path().join("config.json"), |v| {
        v["head_dim"] = 16.into();
        v["intermediate_size"] = 100.into();
    });
    let err = CausalLm::from_dir(tmp.path(), &device(), DType::F32).unwrap_err();
    assert!(
        matches!(&err, LoadError::ShapeMismatch { name, .. } if name == "model.layers.0.mlp.gate_proj.weight"),
        "{err}"
    );
    // A transposed tensor in the file.
    let tmp = copy_to_temp(&hf_fixture("mistral-swa"));
    let file = tmp.path().join("model.safetensors");
    let mut t = read_all(&file);
    t.get_mut("model.layers.1.mlp.down_proj.weight")
        .unwrap()
        .shape
        .reverse();
    write_all(&file, &t);
    let err = CausalLm::from_dir(tmp.path(), &device(), DType::F32).unwrap_err();
    assert!(
        err.to_string()
            .contains("model.layers.1.mlp.down_proj.weight"),
        "{err}"
    );
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn missing_and_unexpected_tensors_are_named() {
    let tmp = copy_to_temp(&hf_fixture("qwen2-bias"));
    let file = tmp.path().join("model.safetensors");
    let good = read_all(&file);
    let mut t = good.clone();
    t.remove("model.layers.1.self_attn.v_proj.bias");
    write_all(&file, &t);
    let err = CausalLm::from_dir(tmp.path(), &device(), DType::F32).unwrap_err();
    assert!(
        matches!(&err, LoadError::MissingTensor { name, .. } if name == "model.layers.1.self_attn.v_proj.bias"),
        "{err}"
    );
    let mut t = good.clone();
    t.insert(
        "model.layers.0.self_attn.o_proj.bias".into(),
        Raw::from_f32(&[0.0; 64], vec![64]),
    );
    write_all(&file, &t);
    let err = CausalLm::from_dir(tmp.path(), &device(), DType::F32).unwrap_err();
    match &err {
        LoadError::UnexpectedTensors { names, location } => {
            assert_eq!(names, &["model.layers.0.self_attn.o_proj.bias"]);
            assert!(location.contains("model.safetensors"));
        }
        other => panic!("expected UnexpectedTensors, got {other}"),
    }
    // An integer tensor where a float is expected.
    let mut t = good;
    let norm = t.get_mut("model.norm.weight").unwrap();
    norm.dtype = Dtype::I32;
    write_all(&file, &t);
    let err = CausalLm::from_dir(tmp.path(), &device(), DType::F32).unwrap_err();
    assert!(
        matches!(&err, LoadError::Weight(WeightError::UnsupportedDType { name, .. }) if name == "model.norm.weight"),
        "{err}"
    );
}

#[test]
fn parameter_paths_are_hugging_face_names() {
    for fixture in ["llama3-tied", "qwen2-bias", "llama-sharded"] {
        let model = CausalLm::from_dir(&hf_fixture(fixture), &device(), DType::F32).unwrap();
        let mut got: Vec<String> = model
            .parameter_dtypes()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let mut want: Vec<String> = expected_tensors(model.config())
            .into_iter()
            .map(|s| s.name)
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{fixture}");
    }
}

// ---- item 8: dtypes and sharded checkpoints ----

#[test]
fn bf16_checkpoint_loaded_as_f32_is_f32() {
    let dir = hf_fixture("qwen2-bf16");
    let source = SafetensorsSource::open(&dir).unwrap();
    assert_eq!(
        source.tensor_data("model.norm.weight").unwrap().dtype(),
        DType::BF16
    );
    let model = CausalLm::from_dir(&dir, &device(), DType::F32).unwrap();
    let dtypes = model.parameter_dtypes();
    assert_eq!(dtypes.len(), expected_tensors(model.config()).len());
    assert!(dtypes.iter().all(|(_, d)| *d == DType::F32), "{dtypes:?}");
    assert_eq!(model.dtype(), DType::F32);
    // An f32 checkpoint loads as bf16 too.
    let model = CausalLm::from_dir(&hf_fixture("llama3-tied"), &device(), DType::BF16).unwrap();
    assert!(
        model
            .parameter_dtypes()
            .iter()
            .all(|(_, d)| *d == DType::BF16)
    );
    let err = CausalLm::from_dir(&dir, &device(), DType::I32).unwrap_err();
    assert!(matches!(err, LoadError::UnsupportedDType(DType::I32)));
}

#[test]
fn sharded_checkpoint_reads_each_tensor_from_its_shard() {
    let dir = hf_fixture("llama-sharded");
    let source = SafetensorsSource::open(&dir).unwrap();
    assert_eq!(source.files().len(), 2);
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    for (name, file) in index["weight_map"].as_object().unwrap() {
        assert!(
            source.location(name).contains(file.as_str().unwrap()),
            "{name}"
        );
    }
}

const SHARD1: &str = "model-00001-of-00002.safetensors";
const SHARD2: &str = "model-00002-of-00002.safetensors";

#[test]
fn missing_shard_is_an_error_naming_it() {
    let tmp = copy_to_temp(&hf_fixture("llama-sharded"));
    std::fs::remove_file(tmp.path().join(SHARD2)).unwrap();
    let err = CausalLm::from_dir(tmp.path(), &device(), DType::F32).unwrap_err();
    match &err {
        LoadError::Weight(WeightError::MissingShard { shard, index }) => {
            assert!(shard.ends_with(SHARD2));
            assert!(index.ends_with("model.safetensors.index.json"));
        }
        other => panic!("expected MissingShard, got {other}"),
    }
}

#[test]
fn stray_tensor_not_in_index_is_an_error() {
    let tmp = copy_to_temp(&hf_fixture("llama-sharded"));
    let file = tmp.path().join(SHARD2);
    let mut t = read_all(&file);
    t.insert(
        "model.layers.9.extra.weight".into(),
        Raw::from_f32(&[1.0, 2.0], vec![2]),
    );
    write_all(&file, &t);
    let err = SafetensorsSource::open(tmp.path()).unwrap_err();
    match &err {
        WeightError::NotInIndex { name, file, index } => {
            assert_eq!(name, "model.layers.9.extra.weight");
            assert!(file.ends_with(SHARD2));
            assert!(index.ends_with("model.safetensors.index.json"));
        }
        other => panic!("expected NotInIndex, got {other}"),
    }
}

#[test]
fn duplicate_tensor_across_shards_is_an_error_listing_files() {
    let tmp = copy_to_temp(&hf_fixture("llama-sharded"));
    let first = read_all(&tmp.path().join(SHARD1));
    let (name, raw) = first
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    let file = tmp.path().join(SHARD2);
    let mut t = read_all(&file);
    t.insert(name.clone(), raw);
    write_all(&file, &t);
    let err = CausalLm::from_dir(tmp.path(), &device(), DType::F32).unwrap_err();
    match &err {
        LoadError::Weight(WeightError::Duplicate { name: n, files }) => {
            assert_eq!(n, &name);
            assert_eq!(files.len(), 2);
            assert!(
                files[0].ends_with(SHARD1) && files[1].ends_with(SHARD2),
                "{files:?}"
            );
        }
        other => panic!("expected Duplicate, got {other}"),
    }
    assert!(err.to_string().contains(SHARD1) && err.to_string().contains(SHARD2));
}

#[test]
fn index_naming_the_wrong_shard_is_an_error() {
    let tmp = copy_to_temp(&hf_fixture("llama-sharded"));
    edit_json(&tmp.path().join("model.safetensors.index.json"), |v| {
        v["weight_map"]["lm_head.weight"] = SHARD1.into();
    });
    let err = SafetensorsSource::open(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, WeightError::IndexMismatch { name, listed, found: Some(f), .. }
            if name == "lm_head.weight" && listed.ends_with(SHARD1) && f.ends_with(SHARD2)),
        "{err}"
    );
    // A tensor listed but stored nowhere.
    let tmp = copy_to_temp(&hf_fixture("llama-sharded"));
    edit_json(&tmp.path().join("model.safetensors.index.json"), |v| {
        v["weight_map"]["model.layers.5.mlp.up_proj.weight"] = SHARD1.into();
    });
    let err = SafetensorsSource::open(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, WeightError::IndexMismatch { name, found: None, .. } if name == "model.layers.5.mlp.up_proj.weight"),
        "{err}"
    );
}

// ---- model lookup ----

#[test]
fn hf_cache_layout_is_resolved_offline() {
    let root = TempDir::new();
    let repo = root.path().join("models--tiny-org--llama3-tied");
    let snap = repo.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "0123abcd\n").unwrap();
    // An older snapshot that refs/main does not point to.
    std::fs::create_dir_all(repo.join("snapshots").join("old")).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(hf_fixture("llama3-tied").join(f), snap.join(f)).unwrap();
    }
    let roots = vec![root.path().join("elsewhere"), root.path().to_path_buf()];
    let dir = resolve_model_dir_in("tiny-org/llama3-tied", &roots).unwrap();
    assert_eq!(dir, snap);
    let err = max_abs_diff(
        &logits_of(&dir, "llama3-tied").unwrap(),
        &expected_logits("llama3-tied"),
    );
    assert!(err < 1e-4);
    // A path wins over the cache.
    let fixture = hf_fixture("qwen2-bias");
    assert_eq!(
        resolve_model_dir_in(fixture.to_str().unwrap(), &roots).unwrap(),
        fixture
    );
    // Without refs/main, two snapshots are ambiguous.
    std::fs::remove_file(repo.join("refs").join("main")).unwrap();
    let err = resolve_model_dir_in("tiny-org/llama3-tied", &roots).unwrap_err();
    assert!(matches!(err, ResolveError::Ambiguous { .. }), "{err}");
    // A missing model names the repo and every place searched.
    let err = resolve_model_dir_in("nobody/nothing", &roots).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("nobody/nothing"), "{msg}");
    assert!(
        msg.contains("elsewhere") && msg.contains("models--nobody--nothing"),
        "{msg}"
    );
    match err {
        ResolveError::NotFound { searched, .. } => assert_eq!(searched.len(), 3),
        other => panic!("{other}"),
    }
}

/// Sizes in `config.json` far beyond any model (a corrupt or hostile file) are refused by name
/// before anything is allocated from them; so are non-finite numbers.
#[test]
fn sizes_beyond_the_supported_maxima_and_non_finite_numbers_are_refused_by_name() {
    for (field, value) in [
        ("num_hidden_layers", serde_json::json!(100_000_000u64)),
        ("num_hidden_layers", serde_json::json!(u64::MAX)),
        ("hidden_size", serde_json::json!(1u64 << 40)),
        ("vocab_size", serde_json::json!(1u64 << 33)),
        ("max_position_embeddings", serde_json::json!(1u64 << 40)),
        ("head_dim", serde_json::json!(1u64 << 20)),
    ] {
        let tmp = copy_to_temp(&hf_fixture("llama3-tied"));
        edit_json(&tmp.path().join("config.json"), |c| {
            c[field] = value.clone()
        });
        let start = std::time::Instant::now();
        let err = CausalLm::from_dir(tmp.path(), &device(), DType::F32).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(field) && msg.contains("supported maximum"),
            "{field} = {value}: {msg}"
        );
        assert!(
            start.elapsed().as_secs() < 5,
            "{field}: {:?}",
            start.elapsed()
        );
    }
    // JSON has no NaN or infinity: a number beyond f64 is already a parse error naming the
    // file (GGUF metadata can hold them: `gguf_tiny_llama.rs` checks those).
    for field in ["rope_theta", "rms_norm_eps"] {
        let tmp = copy_to_temp(&hf_fixture("llama3-tied"));
        let path = tmp.path().join("config.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
        value.as_object_mut().unwrap().remove(field);
        let mut text = serde_json::to_string(&value).unwrap();
        text.insert_str(1, &format!("\"{field}\": 1e999, "));
        std::fs::write(&path, text).unwrap();
        let err = ModelConfig::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("out of range"),
            "{field}: {err}"
        );
    }
}

/// A tensor removed from a safetensors header (its bytes left in place) is reported as a gap
/// before the next tensor, not as a bad offset of an innocent one.
#[test]
fn a_tensor_removed_from_the_header_is_reported_as_a_gap() {
    let tmp = copy_to_temp(&hf_fixture("qwen2-bias"));
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let first = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .min_by_key(|(_, v)| v["data_offsets"][0].as_u64().unwrap())
        .map(|(k, _)| k.clone())
        .unwrap();
    header.as_object_mut().unwrap().remove(&first);
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&path, out).unwrap();
    let err = SafetensorsSource::open(&path).unwrap_err().to_string();
    assert!(
        err.contains("gap or overlap") && err.contains("model.safetensors"),
        "{err}"
    );
}

/// A `config.json` that omits a size takes transformers' default; when the weights then
/// disagree, the error says the size was defaulted, not only that a tensor has a wrong shape.
#[test]
fn a_defaulted_size_is_named_when_the_weights_disagree() {
    let tmp = copy_to_temp(&hf_fixture("llama3-tied"));
    edit_json(&tmp.path().join("config.json"), |c| {
        c.as_object_mut().unwrap().remove("hidden_size");
    });
    let err = CausalLm::from_dir(tmp.path(), &device(), DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has no `hidden_size`") && err.contains("default"),
        "{err}"
    );
}

/// A model written with `save_safetensors` loads back with the same weights and logits (and
/// the file is what transformers reads: Hugging Face names, `[out, in]` projections).
#[test]
fn saved_models_load_back_identical() {
    for fixture in ["llama3-tied", "qwen2-bias", "mistral-swa"] {
        let model = CausalLm::from_dir(&hf_fixture(fixture), &device(), DType::F32).unwrap();
        let tmp = copy_to_temp(&hf_fixture(fixture));
        let file = tmp.path().join("model.safetensors");
        std::fs::remove_file(&file).unwrap();
        model.save_safetensors(&file).unwrap();
        let back = CausalLm::from_dir(tmp.path(), &device(), DType::F32).unwrap();
        let a = model.hf_tensors();
        let b = back.hf_tensors();
        assert_eq!(a.len(), b.len(), "{fixture}");
        for ((na, da), (nb, db)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert_eq!(da.as_bytes(), db.as_bytes(), "{fixture}: {na}");
        }
        let (a, b) = (
            logits_of(tmp.path(), fixture).unwrap(),
            logits_of(&hf_fixture(fixture), fixture).unwrap(),
        );
        assert!(
            a == b,
            "{fixture}: the logits changed by {}",
            max_abs_diff(&a, &b)
        );
    }
}
