//! LoRA of the decoder against Hugging Face PEFT 0.13 (`fixtures/lora/`, made by
//! `scripts/make_lora_reference.py` on the tiny Llama of `fixtures/hf/llama3-tied`): PEFT's
//! own files load, the adapted forward and the merged weights give PEFT's logits, our files
//! round-trip, and bad files are refused with errors that name the tensor or the file.

mod common;

use std::collections::BTreeMap;

use burn::tensor::{DType, Device, Tensor};
use common::*;
use l2d_models::config::ModelConfig;
use l2d_models::decoder::{CausalLm, ForwardOptions, Projection};
use l2d_models::lora::{DecoderLora, LoraConfig, LoraError};

const TOL: f32 = 1e-4;

fn lora_fixture() -> std::path::PathBuf {
    repo_root().join("fixtures/lora")
}

fn base(device: &Device) -> CausalLm {
    CausalLm::from_dir(&hf_fixture("llama3-tied"), device, DType::F32).unwrap()
}

/// An integer tensor stored as f32 in the reference file.
fn int_tensor(cases: &Cases, name: &str, device: &Device) -> Tensor<2, burn::tensor::Int> {
    let (values, shape) = cases.f32(name);
    let ints: Vec<i64> = values.iter().map(|&v| v as i64).collect();
    Tensor::from_data(
        burn::tensor::TensorData::new(ints, [shape[0], shape[1]]),
        device,
    )
}

fn reference_logits(model: &CausalLm, lora: Option<&DecoderLora>, device: &Device) -> f32 {
    let cases = Cases::open(&lora_fixture().join("reference.safetensors"));
    let options = ForwardOptions {
        attention_mask: Some(int_tensor(&cases, "attention_mask", device)),
        position_ids: None,
    };
    let (hidden, _) = model.forward_hidden_adapted(
        int_tensor(&cases, "input_ids", device),
        None,
        &options,
        lora.map(|l| l as &dyn l2d_models::decoder::DecoderDelta),
    );
    let got = to_vec(model.logits(hidden));
    let (want, _) = cases.f32("logits");
    // Only the unpadded positions: row 1 is padded from position 5.
    let vocab = model.config().vocab_size;
    let keep = |i: usize| {
        let (row, pos) = (i / (7 * vocab), (i / vocab) % 7);
        row == 0 || pos < 5
    };
    let (g, w): (Vec<f32>, Vec<f32>) = got
        .iter()
        .zip(&want)
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, (g, w))| (*g, *w))
        .unzip();
    max_abs_diff(&g, &w)
}

#[test]
fn peft_files_load_and_give_peft_logits() {
    let device = Device::flex();
    let model = base(&device);
    let lora = DecoderLora::load(
        lora_fixture().join("adapter_model.safetensors"),
        &model,
        false,
    )
    .unwrap();
    assert_eq!(lora.config().rank, 4);
    assert_eq!(lora.config().alpha, 8.0);
    assert_eq!(lora.config().targets.len(), 7);
    let adapted = reference_logits(&model, Some(&lora), &device);
    println!("adapted forward vs PEFT: {adapted:.2e}");
    assert!(
        adapted < TOL,
        "adapted logits differ from PEFT's by {adapted}"
    );
    // The merged model computes the same function through its own weights.
    let merged = lora.merge_into(&model);
    let via_merge = reference_logits(&merged, None, &device);
    println!("merged weights vs PEFT: {via_merge:.2e}");
    assert!(
        via_merge < TOL,
        "merged logits differ from PEFT's by {via_merge}"
    );
    // And the updates matter: the base alone is far from PEFT's adapted logits.
    let plain = reference_logits(&model, None, &device);
    assert!(plain > 100.0 * TOL, "the adapter changes nothing ({plain})");
}

#[test]
fn a_fresh_adapter_is_the_base_model() {
    let device = Device::flex();
    let model = base(&device);
    let config = LoraConfig::new(3, 6.0, vec![Projection::Q, Projection::Down]);
    let lora = DecoderLora::init(&config, &model, 5).unwrap();
    let ids = Tensor::<2, burn::tensor::Int>::from_data([[3, 9, 27, 81, 50]], &device);
    let options = ForwardOptions::default();
    let (plain, _) = model.forward_hidden_adapted(ids.clone(), None, &options, None);
    let (adapted, _) = model.forward_hidden_adapted(ids, None, &options, Some(&lora));
    assert_eq!(to_vec(plain), to_vec(adapted));
    // A drawn in ±1/sqrt(d_in), B zero (PEFT's initialisation).
    let q = lora.layers[0].get(Projection::Q).unwrap();
    let bound = 1.0 / (model.config().hidden_size as f32).sqrt();
    let a = to_vec(q.a.val());
    assert!(a.iter().all(|v| v.abs() <= bound) && a.iter().any(|v| v.abs() > bound / 2.0));
    assert!(to_vec(q.b.val()).iter().all(|v| *v == 0.0));
    assert!(lora.layers[0].get(Projection::K).is_none());
    // A rank beyond every target's size is refused before anything is allocated.
    let huge = LoraConfig::new(1 << 40, 1.0, vec![Projection::Q]);
    let err = DecoderLora::init(&huge, &model, 5).unwrap_err();
    assert!(
        matches!(err, LoraError::Config { field: "rank", .. }),
        "{err}"
    );
}

#[test]
fn a_gaussian_adapter_draws_a_with_std_one_over_rank_and_keeps_its_init_in_the_file() {
    use l2d_models::lora::LoraInit;
    let device = Device::flex();
    let model = base(&device);
    let rank = 4;
    let config = LoraConfig::new(rank, 4.0, Projection::ALL.to_vec()).with_init(LoraInit::Gaussian);
    let lora = DecoderLora::init(&config, &model, 9).unwrap();
    let ids = Tensor::<2, burn::tensor::Int>::from_data([[3, 9, 27, 81, 50]], &device);
    let options = ForwardOptions::default();
    let (plain, _) = model.forward_hidden_adapted(ids.clone(), None, &options, None);
    let (adapted, _) = model.forward_hidden_adapted(ids, None, &options, Some(&lora));
    assert_eq!(
        to_vec(plain),
        to_vec(adapted),
        "B = 0: the adapted model is the base"
    );
    // N(0, 1) / rank (the authors' LoRA module; PEFT's "gaussian"): mean and std over every A.
    let a: Vec<f64> = lora
        .deltas()
        .flat_map(|(_, _, d)| to_vec(d.a.val()))
        .map(f64::from)
        .collect();
    let n = a.len() as f64;
    let mean = a.iter().sum::<f64>() / n;
    let std = (a.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let target = 1.0 / rank as f64;
    // n is in the thousands: the sample std is within a few percent of its target.
    assert!(n > 2000.0, "{n}");
    assert!(mean.abs() < 0.1 * target, "mean {mean}");
    assert!((std / target - 1.0).abs() < 0.05, "std {std} vs {target}");
    // The file keeps the initialisation (PEFT's `init_lora_weights`).
    let dir = TempDir::new();
    let file = dir.path().join("lora.safetensors");
    lora.save(&file, &model).unwrap();
    assert_eq!(
        DecoderLora::load(&file, &model, false)
            .unwrap()
            .config()
            .init,
        LoraInit::Gaussian
    );
    assert_eq!(config.to_json()["init_lora_weights"], "gaussian");
    // PEFT's values: `true` is the default, absent means it, others are refused by name.
    let mut json = config.to_json();
    json["init_lora_weights"] = serde_json::Value::Bool(true);
    assert_eq!(
        LoraConfig::from_json(&json).unwrap().init,
        LoraInit::KaimingUniform
    );
    json.as_object_mut().unwrap().remove("init_lora_weights");
    assert_eq!(
        LoraConfig::from_json(&json).unwrap().init,
        LoraInit::KaimingUniform
    );
    json["init_lora_weights"] = "pissa".into();
    let err = LoraConfig::from_json(&json).unwrap_err();
    assert!(
        matches!(
            err,
            LoraError::Config {
                field: "init_lora_weights",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!("gaussian".parse::<LoraInit>().unwrap(), LoraInit::Gaussian);
    assert_eq!(
        LoraInit::KaimingUniform
            .to_string()
            .parse::<LoraInit>()
            .unwrap(),
        LoraInit::KaimingUniform
    );
    assert!("peft".parse::<LoraInit>().is_err());
    // One spelling: flags, Display and serde (the training config's `[lora] init`).
    for init in LoraInit::ALL {
        assert_eq!(serde_json::to_value(init).unwrap(), init.name());
        assert_eq!(init.name().parse::<LoraInit>().unwrap(), init);
    }
}

#[test]
fn own_files_round_trip_with_peft_names() {
    let device = Device::flex();
    let model = base(&device);
    let lora = DecoderLora::load(
        lora_fixture().join("adapter_model.safetensors"),
        &model,
        false,
    )
    .unwrap();
    let dir = TempDir::new();
    let file = dir.path().join("lora.safetensors");
    lora.save(&file, &model).unwrap();
    let saved = read_all(&file);
    let peft = read_all(&lora_fixture().join("adapter_model.safetensors"));
    assert_eq!(
        saved.keys().collect::<Vec<_>>(),
        peft.keys().collect::<Vec<_>>(),
        "PEFT's key names"
    );
    for (k, v) in &peft {
        assert_eq!(saved[k].f32(), v.f32(), "{k}");
    }
    // Our file needs no adapter_config.json beside it: the configuration is in its metadata.
    let again = DecoderLora::load(&file, &model, false).unwrap();
    assert_eq!(again.config(), lora.config());
    assert_eq!(
        reference_logits(&model, Some(&again), &device),
        reference_logits(&model, Some(&lora), &device)
    );
}

#[test]
fn rank_for_equal_parameters() {
    // SmolLM2-135M: 30 layers, hidden 576, 9 heads of 64, 3 key/value heads, MLP 1536.
    let config = ModelConfig::from_json_str(
        r#"{"model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
            "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
            "num_key_value_heads": 3, "tie_word_embeddings": true}"#,
    )
    .unwrap();
    let all = Projection::ALL.to_vec();
    // Per layer and rank: q 576+576, k and v 576+192, o 576+576, gate and up 576+1536,
    // down 1536+576 = 10,176.
    assert_eq!(
        LoraConfig::new(1, 1.0, all.clone()).num_params(&config),
        30 * 10_176
    );
    // The released L2D configuration has 37,620,864 parameters on this base.
    let rank = LoraConfig::rank_for_params(&config, &all, 37_620_864);
    assert_eq!(rank, 123);
    assert_eq!(
        LoraConfig::new(rank, 1.0, all).num_params(&config),
        37_549_440
    );
}

/// Rewrites the fixture's adapter with `edit` applied to its tensors, beside a copy of its
/// `adapter_config.json`, and tries to load it.
fn load_edited(edit: impl FnOnce(&mut BTreeMap<String, Raw>)) -> Result<DecoderLora, LoraError> {
    let device = Device::flex();
    let model = base(&device);
    let dir = TempDir::new();
    let mut tensors = read_all(&lora_fixture().join("adapter_model.safetensors"));
    edit(&mut tensors);
    let file = dir.path().join("adapter_model.safetensors");
    write_all(&file, &tensors);
    std::fs::copy(
        lora_fixture().join("adapter_config.json"),
        dir.path().join("adapter_config.json"),
    )
    .unwrap();
    DecoderLora::load(&file, &model, false)
}

#[test]
fn bad_files_are_refused_with_the_tensor_named() {
    let key = "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight";
    let err = load_edited(|t| {
        t.remove(key);
    })
    .unwrap_err();
    assert!(
        matches!(&err, LoraError::Tensor { name, .. } if key.ends_with(name.as_str())),
        "{err}"
    );
    assert!(err.to_string().contains("missing"), "{err}");

    let err = load_edited(|t| {
        let v = t[key].f32();
        t.insert(key.into(), Raw::from_f32(&v[..v.len() - 4], vec![95, 4]));
    })
    .unwrap_err();
    assert!(err.to_string().contains("shape [95, 4]"), "{err}");

    let err = load_edited(|t| {
        let mut v = t[key].f32();
        v[3] = f32::NAN;
        t.insert(key.into(), Raw::from_f32(&v, vec![96, 4]));
    })
    .unwrap_err();
    assert!(err.to_string().contains("non-finite"), "{err}");

    let err = load_edited(|t| {
        let extra = t[key].clone();
        t.insert(
            "base_model.model.model.layers.7.mlp.up_proj.lora_B.weight".into(),
            extra,
        );
    })
    .unwrap_err();
    assert!(err.to_string().contains("layers.7"), "{err}");
}

#[test]
fn a_file_for_another_base_or_without_a_configuration_is_refused() {
    let device = Device::flex();
    let model = base(&device);
    // Our own file remembers its base: another base's weights are refused unless forced.
    let lora = DecoderLora::load(
        lora_fixture().join("adapter_model.safetensors"),
        &model,
        false,
    )
    .unwrap();
    let dir = TempDir::new();
    let file = dir.path().join("lora.safetensors");
    lora.save(&file, &model).unwrap();
    let other = CausalLm::random(model.config(), &device, DType::F32, 99);
    let err = DecoderLora::load(&file, &other, false).unwrap_err();
    assert!(
        matches!(err, LoraError::FingerprintMismatch { .. }),
        "{err}"
    );
    assert!(DecoderLora::load(&file, &other, true).is_ok());
    // A PEFT file alone, without its adapter_config.json, has no rank or alpha.
    let lone = dir.path().join("adapter_model.safetensors");
    std::fs::copy(lora_fixture().join("adapter_model.safetensors"), &lone).unwrap();
    let err = DecoderLora::load(&lone, &model, false).unwrap_err();
    assert!(err.to_string().contains("adapter_config.json"), "{err}");
    // A diffusion adapter is not a LoRA file.
    let config = tiny_l2d_config();
    let path = l2d_models::diffusion::DiffusionPath::init(&config, &model, 0).unwrap();
    let diffusion = dir.path().join("path.safetensors");
    path.save(&diffusion, &model).unwrap();
    let err = DecoderLora::load(&diffusion, &model, false).unwrap_err();
    assert!(err.to_string().contains("not a LoRA adapter"), "{err}");
}
