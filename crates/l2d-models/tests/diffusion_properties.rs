//! Properties of the diffusion path that hold for any weights: behaviour preserved at `t = 0`
//! for Llama, Qwen2 and Mistral; a fresh path leaves the base unchanged at every `t`; the
//! diffusion-only forward equals the joint one; the analytic parameter count; gradients reach
//! every diffusion parameter and no base parameter; adapter files round-trip and refuse
//! another base.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Int, Tensor};
use common::{TempDir, tiny_l2d_config};
use l2d_core::HostRng;
use l2d_models::config::ModelConfig;
use l2d_models::decoder::{CausalLm, ForwardOptions};
use l2d_models::diffusion::{
    AdapterLoadOptions, AdapterMetadata, ClassLabels, DiffusionError, DiffusionPath, FlowContext,
    LossInputs, Timesteps, diffusion_param_count,
};
use l2d_models::l2d_config::{FlowSpace, L2dConfig};
use proptest::prelude::*;

fn base_config(arch: &str) -> ModelConfig {
    let extra = match arch {
        "qwen2" => r#", "tie_word_embeddings": true, "rms_norm_eps": 1e-6"#,
        "mistral" => r#", "sliding_window": 3"#,
        _ => r#", "attention_bias": true, "mlp_bias": true"#,
    };
    ModelConfig::from_json_str(&format!(
        r#"{{"model_type": "{arch}", "hidden_size": 24, "intermediate_size": 40,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 37{extra}}}"#
    ))
    .unwrap()
}

fn max_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// At t = 0 the logits are exactly the frozen model's whatever the flow state, for a
    /// randomly initialised, non-zero diffusion path, on all three architectures.
    #[test]
    fn t0_logits_equal_the_frozen_model(seed in 0u64..1000, scale in 0.1f64..200.0, guided in any::<bool>()) {
        for arch in ["llama", "qwen2", "mistral"] {
            let device = Device::flex();
            let cfg = base_config(arch);
            let base = CausalLm::random(&cfg, &device, DType::F32, seed);
            let config = L2dConfig {
                guidance_modulation_num_classes: guided.then_some(3),
                ..tiny_l2d_config()
            };
            let path = DiffusionPath::init(&config, &base, seed).unwrap()
                .with_random_parameters(seed + 1, 0.3);
            let ids = Tensor::<2, Int>::from_ints([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]], &device);
            let x = HostRng::new(seed + 100).normal([2, 5, 8], &device).mul_scalar(scale);
            let classes = guided.then(|| ClassLabels::PerSequence(Tensor::from_ints([0, 2], &device)));
            let opts = ForwardOptions::default();
            let frozen = path.frozen_logits(&base, ids.clone(), &opts);
            let zero = Timesteps::Tensor(Tensor::zeros([2, 5], &device));
            let at0 = path.forward(&base, ids.clone(), &opts, x.clone(), &zero, classes.as_ref()).unwrap();
            prop_assert_eq!(max_diff(at0, frozen.clone()), 0.0, "{}", arch);
            let scalar0 = path.forward(&base, ids.clone(), &opts, x.clone(), &Timesteps::Scalar(0.0), classes.as_ref()).unwrap();
            prop_assert_eq!(max_diff(scalar0, frozen.clone()), 0.0, "{}", arch);
            // ...and the path does change them at t > 0.
            let at_half = path.forward(&base, ids, &opts, x, &Timesteps::Scalar(0.5), classes.as_ref()).unwrap();
            prop_assert!(max_diff(at_half, frozen) > 1e-4, "{} path has no effect", arch);
        }
    }
}

#[test]
fn a_fresh_path_leaves_the_base_unchanged_at_every_t() {
    for arch in ["llama", "qwen2", "mistral"] {
        let device = Device::flex();
        let base = CausalLm::random(&base_config(arch), &device, DType::F32, 4);
        let path = DiffusionPath::init(&tiny_l2d_config(), &base, 5).unwrap();
        let ids = Tensor::<2, Int>::from_ints([[3, 1, 4, 1]], &device);
        let opts = ForwardOptions::default();
        let frozen = path.frozen_logits(&base, ids.clone(), &opts);
        let x = HostRng::new(95).normal([1, 4, 8], &device).mul_scalar(64.0);
        for t in [0.3, 0.9, 1.0] {
            let got = path
                .forward(
                    &base,
                    ids.clone(),
                    &opts,
                    x.clone(),
                    &Timesteps::Scalar(t),
                    None,
                )
                .unwrap();
            assert_eq!(max_diff(got, frozen.clone()), 0.0, "{arch} t={t}");
        }
    }
}

#[test]
fn the_diffusion_only_forward_equals_the_joint_one() {
    let device = Device::flex();
    let base = CausalLm::random(&base_config("mistral"), &device, DType::F32, 8);
    let path = DiffusionPath::init(&tiny_l2d_config(), &base, 9)
        .unwrap()
        .with_random_parameters(10, 0.3);
    let ids = Tensor::<2, Int>::from_ints([[3, 1, 4, 1, 5, 9]], &device);
    let x = HostRng::new(120).normal([1, 6, 8], &device).mul_scalar(8.0);
    let t = HostRng::new(121).uniform([1, 6], &device);
    let opts = ForwardOptions::default();
    let joint = path
        .forward(
            &base,
            ids.clone(),
            &opts,
            x.clone(),
            &Timesteps::Tensor(t.clone()),
            None,
        )
        .unwrap();
    // Incrementally: prefix of 4, then 2 more tokens, querying only the newest positions.
    let frozen = base.frozen_forward(ids.clone().narrow(1, 0, 4), &opts);
    let mut cache = frozen.cache.clone();
    let first = FlowContext::from_frozen(&frozen)
        .narrow_queries(2, 2)
        .unwrap();
    let a = path
        .forward_cached(
            &base,
            &first,
            x.clone().narrow(1, 2, 2),
            &Timesteps::Tensor(t.clone().narrow(1, 2, 2)),
            None,
        )
        .unwrap();
    assert!(max_diff(a, joint.clone().narrow(1, 2, 2)) < 1e-5);
    let (hidden, step) = base.forward_hidden(ids.narrow(1, 4, 2), Some(&mut cache), &opts);
    let ctx = FlowContext::new(hidden, &cache, &step).unwrap();
    let b = path
        .forward_cached(
            &base,
            &ctx,
            x.narrow(1, 4, 2),
            &Timesteps::Tensor(t.narrow(1, 4, 2)),
            None,
        )
        .unwrap();
    assert!(max_diff(b, joint.narrow(1, 4, 2)) < 1e-5);
}

#[test]
fn the_analytic_count_equals_the_built_path() {
    let device = Device::flex();
    let variants = [
        tiny_l2d_config(),
        L2dConfig {
            separate_flow_params_with_lora: false,
            ..tiny_l2d_config()
        },
        L2dConfig {
            separate_flow_params: false,
            separate_flow_params_with_lora: false,
            ..tiny_l2d_config()
        },
        L2dConfig {
            full_dit_modulation: false,
            guidance_modulation_num_classes: Some(4),
            timestep_modulation_num_layers: 3,
            flow_to_lm_translation_depth: 3,
            flow_representation_num_layers: Some(2),
            ..tiny_l2d_config()
        },
        L2dConfig {
            flow_representation_space: FlowSpace::OneHot,
            flow_representation_num_layers: None,
            flow_to_lm_timestep_rescaling: None,
            ..tiny_l2d_config()
        },
        L2dConfig {
            freeze_modulation_at_flow_start: true,
            flow_to_lm_rescale_in_float32: false,
            ..tiny_l2d_config()
        },
        L2dConfig {
            flow_representation_space: FlowSpace::Embedding,
            flow_representation_num_layers: None,
            flow_representation_dim: None,
            flow_to_lm_translation_depth: 0,
            ..tiny_l2d_config()
        },
    ];
    for arch in ["llama", "qwen2", "mistral"] {
        let base = CausalLm::random(&base_config(arch), &device, DType::F32, 1);
        for (i, config) in variants.iter().enumerate() {
            let path = DiffusionPath::init(config, &base, 2).unwrap();
            let count = diffusion_param_count(config, base.config()).unwrap();
            assert_eq!(count.total(), path.num_params(), "{arch} variant {i}");
            // Reference-layout export holds exactly the module's parameters.
            let exported: usize = path
                .reference_tensors()
                .unwrap()
                .iter()
                .map(|(_, d)| d.num_elements())
                .sum();
            assert_eq!(exported, path.num_params(), "{arch} variant {i}");
            // The reference keys name the module's parameters one to one, in its order.
            struct Ids(Vec<burn::module::ParamId>);
            impl ModuleVisitor for Ids {
                fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                    self.0.push(param.id);
                }
            }
            let mut ids = Ids(Vec::new());
            path.visit(&mut ids);
            let keys = path.reference_keys();
            let key_ids: Vec<_> = keys.iter().map(|(id, _, _)| *id).collect();
            assert_eq!(key_ids, ids.0, "{arch} variant {i}");
            for (_, key, is_bias) in &keys {
                assert_eq!(*is_bias, key.ends_with(".bias"), "{key}");
            }
            // Every variant runs, is the base model at t = 0 and differs from it later.
            let path = path.with_random_parameters(3, 0.3);
            let d = path.flow_dim();
            let ids = Tensor::<2, Int>::from_ints([[3, 1, 4]], &device);
            let x = HostRng::new(236).normal([1, 3, d], &device).mul_scalar(4.0);
            let opts = ForwardOptions::default();
            let frozen = path.frozen_logits(&base, ids.clone(), &opts);
            let run = |t: f64| {
                path.forward(
                    &base,
                    ids.clone(),
                    &opts,
                    x.clone(),
                    &Timesteps::Scalar(t),
                    None,
                )
                .unwrap()
            };
            assert_eq!(
                max_diff(run(0.0), frozen.clone()),
                0.0,
                "{arch} variant {i}"
            );
            assert!(max_diff(run(0.6), frozen) > 1e-4, "{arch} variant {i}");
        }
    }
}

#[test]
fn fresh_init_follows_the_reference() {
    let device = Device::flex();
    let base = CausalLm::random(&base_config("llama"), &device, DType::F32, 1);
    let config = L2dConfig {
        flow_lora_rank: 16,
        ..tiny_l2d_config()
    };
    let path = DiffusionPath::init(&config, &base, 3).unwrap();
    let layer = &path.layers[0];
    let lora = layer.q_proj.lora.as_ref().unwrap();
    assert_eq!(lora.b.val().abs().max().into_scalar::<f32>(), 0.0);
    let a: Vec<f32> = lora.a.val().into_data().try_to_vec::<f32>().unwrap();
    let var = a.iter().map(|v| (v * v) as f64).sum::<f64>() / a.len() as f64;
    // A ~ N(0, 1/r²): std 1/16.
    assert!((var.sqrt() - 1.0 / 16.0).abs() < 0.01, "std {}", var.sqrt());
    let last = layer.modulation_head.mlp.layers.last().unwrap();
    assert_eq!(last.weight.val().abs().max().into_scalar::<f32>(), 0.0);
    assert_eq!(lora.scale, 32.0 / 16.0);
    // Full copies start equal to the base projections.
    let full = DiffusionPath::init(
        &L2dConfig {
            separate_flow_params_with_lora: false,
            ..tiny_l2d_config()
        },
        &base,
        3,
    )
    .unwrap();
    let copy = full.layers[1].down_proj.full.as_ref().unwrap();
    let orig = &base.model.layers[1].mlp.down_proj;
    let d = (copy.weight.val() - orig.weight.as_ref().unwrap().val())
        .abs()
        .max()
        .into_scalar::<f32>();
    assert_eq!(d, 0.0);
    assert!(copy.bias.is_some(), "llama mlp_bias copies the bias too");
    // Full copies need the base weights.
    assert!(matches!(
        DiffusionPath::init_without_base(
            &L2dConfig {
                separate_flow_params_with_lora: false,
                ..tiny_l2d_config()
            },
            base.config(),
            &device,
            0
        ),
        Err(DiffusionError::FullCopyNeedsBase)
    ));
}

/// Collects every float parameter's gradient norm.
struct GradNorms<'a> {
    grads: &'a burn::tensor::Gradients,
    norms: Vec<Option<f32>>,
}

impl ModuleVisitor for GradNorms<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.norms.push(
            param
                .val()
                .grad(self.grads)
                .map(|g| g.abs().sum().into_scalar::<f32>()),
        );
    }
}

#[test]
fn gradients_reach_every_diffusion_parameter_and_no_base_parameter() {
    let device = Device::flex().autodiff();
    let base = CausalLm::random(&base_config("qwen2"), &device, DType::F32, 3).no_grad();
    let config = L2dConfig {
        guidance_modulation_num_classes: Some(2),
        ..tiny_l2d_config()
    };
    let path = DiffusionPath::init(&config, &base, 4)
        .unwrap()
        .with_random_parameters(5, 0.3);
    let ids = Tensor::<2, Int>::from_ints([[3, 1, 4, 1, 5]], &device);
    let labels = Tensor::<2, Int>::from_ints([[3, -100, 4, 1, 5]], &device);
    let mut inputs = LossInputs::new(ids, labels);
    inputs.class_labels = Some(ClassLabels::PerSequence(Tensor::from_ints([1], &device)));
    let mut rng = HostRng::new(1);
    let out = path.loss(&base, inputs, Some(&mut rng)).unwrap();
    assert!(out.loss.clone().into_scalar::<f32>().is_finite());
    // Unshifted: targets are labels[1..] = [-100, 4, 1, 5], three scored.
    assert_eq!(out.scored_count.clone().into_scalar::<f32>(), 3.0);
    let grads = out.loss.backward();
    let mut v = GradNorms {
        grads: &grads,
        norms: Vec::new(),
    };
    path.visit(&mut v);
    assert_eq!(v.norms.len(), path.num_params_tensors());
    // The last tensor is the final gate's output bias: with preserve_behavior_at_flow_start
    // the gate is head(c_t) - head(c_0), in which that bias cancels; it is left out of the
    // computation, so it has no gradient (the reference's is exactly zero). Every other
    // tensor gets a non-zero gradient.
    let last = v.norms.len() - 1;
    for (i, n) in v.norms.iter().enumerate() {
        if i == last {
            assert_eq!(
                *n, None,
                "the final gate's bias cancels in head(t) - head(0)"
            );
            continue;
        }
        let n = n.unwrap_or_else(|| panic!("diffusion parameter {i} has no gradient"));
        assert!(n.is_finite(), "diffusion parameter {i}: gradient norm {n}");
        assert!(n > 0.0, "diffusion parameter {i}: zero gradient");
    }
    let mut b = GradNorms {
        grads: &grads,
        norms: Vec::new(),
    };
    base.visit(&mut b);
    assert!(
        b.norms.iter().all(Option::is_none),
        "a base parameter got a gradient"
    );
}

trait CountTensors {
    fn num_params_tensors(&self) -> usize;
}

impl CountTensors for DiffusionPath {
    fn num_params_tensors(&self) -> usize {
        struct C(usize);
        impl ModuleVisitor for C {
            fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<D>>) {
                self.0 += 1;
            }
        }
        let mut c = C(0);
        self.visit(&mut c);
        c.0
    }
}

/// The keys are recorded once, when the path is built; a submodule replaced afterwards has
/// parameters without keys, and saving says so instead of writing an incomplete file.
#[test]
fn a_submodule_replaced_after_building_is_a_typed_error_on_save() {
    let device = Device::flex();
    let base = CausalLm::random(&base_config("llama"), &device, DType::F32, 11);
    let mut path = DiffusionPath::init(&tiny_l2d_config(), &base, 12).unwrap();
    let keys: Vec<String> = path
        .reference_keys()
        .into_iter()
        .map(|(_, k, _)| k)
        .collect();
    assert!(keys.contains(&"model.layers.1.self_attn.flow_q_proj.A".to_string()));
    assert!(keys.contains(&"model.timestep_embedder.mlp.2.bias".to_string()));
    let lora = path.layers[1].q_proj.lora.as_ref().unwrap();
    let (a, b) = (lora.a.val(), lora.b.val());
    path.layers[1].q_proj = l2d_models::diffusion::projection::FlowProjection::lora(a, b, 1.0);
    let dir = TempDir::new();
    let file = dir.path().join("adapter.safetensors");
    let err = path.save(&file, &base).unwrap_err().to_string();
    assert!(err.contains("has no checkpoint key"), "{err}");
    assert!(!file.exists(), "an incomplete adapter was written");
}

#[test]
fn adapter_files_round_trip_and_refuse_another_base() {
    let device = Device::flex();
    let base = CausalLm::random(&base_config("llama"), &device, DType::F32, 11);
    let config = L2dConfig {
        guidance_modulation_num_classes: Some(3),
        nstep_temperature_schedule: "polynomial_1_1.0".parse().unwrap(),
        ..tiny_l2d_config()
    };
    let path = DiffusionPath::init(&config, &base, 12)
        .unwrap()
        .with_random_parameters(13, 0.2);
    let dir = TempDir::new();
    let file = dir.path().join("adapter.safetensors");
    path.save(&file, &base).unwrap();
    // Saving the same adapter again gives the same bytes (sorted header keys).
    let again = dir.path().join("again.safetensors");
    path.save(&again, &base).unwrap();
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(&again).unwrap()
    );
    let meta = AdapterMetadata::read(&file).unwrap();
    assert_eq!(meta.format.as_deref(), Some("l2d-adapter"));
    assert_eq!(meta.config.as_ref(), Some(&config));
    assert_eq!(meta.architecture.as_deref(), Some("llama"));
    assert!(meta.base_fingerprint.unwrap().starts_with("l2d-fp1:"));

    let loaded = DiffusionPath::load(&file, &base, &AdapterLoadOptions::default()).unwrap();
    assert_eq!(loaded.config(), &config);
    for ((ka, va), (kb, vb)) in path
        .reference_tensors()
        .unwrap()
        .into_iter()
        .zip(loaded.reference_tensors().unwrap())
    {
        assert_eq!(ka, kb);
        assert_eq!(va, vb, "{ka}");
    }
    // The same base in bf16 has the same fingerprint.
    let bf16 = base_in(&base, DType::BF16);
    assert!(DiffusionPath::load(&file, &bf16, &AdapterLoadOptions::default()).is_ok());

    // Another base of the same sizes: refused, unless forced.
    let other = CausalLm::random(&base_config("llama"), &device, DType::F32, 99);
    match DiffusionPath::load(&file, &other, &AdapterLoadOptions::default()) {
        Err(DiffusionError::FingerprintMismatch { .. }) => {}
        other => panic!("expected a fingerprint mismatch, got {other:?}"),
    }
    let forced = AdapterLoadOptions {
        force: true,
        ..Default::default()
    };
    assert!(DiffusionPath::load(&file, &other, &forced).is_ok());

    // A base of another architecture (and other sizes): refused even when forced, by the
    // adapter's `architecture` entry before its sizes are compared.
    let small = CausalLm::random(&base_config("qwen2"), &device, DType::F32, 1);
    assert!(matches!(
        DiffusionPath::load(&file, &small, &forced),
        Err(DiffusionError::Metadata { reason, .. }) if reason.contains("architecture")
    ));
}

fn base_in(base: &CausalLm, dtype: DType) -> CausalLm {
    struct Cast(DType);
    impl burn::module::ModuleMapper for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let dtype = self.0;
            param.map(|t| t.cast(dtype))
        }
    }
    base.clone().map(&mut Cast(dtype))
}

#[test]
fn malformed_adapter_files_are_typed_errors() {
    let device = Device::flex();
    let base = CausalLm::random(&base_config("llama"), &device, DType::F32, 11);
    let path = DiffusionPath::init(&tiny_l2d_config(), &base, 12).unwrap();
    let dir = TempDir::new();
    let file = dir.path().join("a.safetensors");
    path.save(&file, &base).unwrap();
    let mut tensors = common::read_all(&file);
    let meta = AdapterMetadata::read(&file).unwrap().raw;

    // Without metadata and without a config: MissingConfig.
    let bare = dir.path().join("bare.safetensors");
    common::write_all(&bare, &tensors);
    assert!(matches!(
        DiffusionPath::load(&bare, &base, &AdapterLoadOptions::default()),
        Err(DiffusionError::MissingConfig { .. })
    ));
    let with_config = AdapterLoadOptions {
        config: Some(tiny_l2d_config()),
        force: false,
    };
    assert!(DiffusionPath::load(&bare, &base, &with_config).is_ok());

    // A missing tensor, an extra tensor, a wrong shape: each named.
    let write = |name: &str, t: &std::collections::BTreeMap<String, common::Raw>| {
        let p = dir.path().join(name);
        safetensors::serialize_to_file(
            t.iter().map(|(k, v)| (k.clone(), v)),
            Some(meta.clone()),
            &p,
        )
        .unwrap();
        p
    };
    let key = "model.layers.1.mlp.flow_up_proj.B".to_string();
    let saved = tensors.remove(&key).unwrap();
    match DiffusionPath::load(
        write("m.safetensors", &tensors),
        &base,
        &AdapterLoadOptions::default(),
    ) {
        Err(DiffusionError::MissingTensor { name, .. }) => assert_eq!(name, key),
        other => panic!("{other:?}"),
    }
    tensors.insert(key.clone(), common::Raw::from_f32(&[0.0; 6], vec![2, 3]));
    match DiffusionPath::load(
        write("s.safetensors", &tensors),
        &base,
        &AdapterLoadOptions::default(),
    ) {
        Err(DiffusionError::TensorShape { name, .. }) => assert_eq!(name, key),
        other => panic!("{other:?}"),
    }
    tensors.insert(key, saved);
    tensors.insert(
        "model.extra.weight".into(),
        common::Raw::from_f32(&[1.0], vec![1]),
    );
    match DiffusionPath::load(
        write("x.safetensors", &tensors),
        &base,
        &AdapterLoadOptions::default(),
    ) {
        Err(DiffusionError::UnexpectedTensors { names, .. }) => {
            assert_eq!(names, vec!["model.extra.weight".to_string()])
        }
        other => panic!("{other:?}"),
    }
    tensors.remove("model.extra.weight");

    // Metadata that cannot belong to an adapter of this base: another format, a future format
    // version, another architecture. Each refused by entry.
    for (entry, value, needle) in [
        ("format", "gguf", "not an L2D adapter"),
        ("format_version", "2", "reads version 1"),
        ("architecture", "qwen2", "the base model is `llama`"),
    ] {
        let mut bad = meta.clone();
        bad.insert(entry.into(), value.into());
        let p = dir.path().join(format!("{entry}.safetensors"));
        safetensors::serialize_to_file(tensors.iter().map(|(k, v)| (k.clone(), v)), Some(bad), &p)
            .unwrap();
        let err = DiffusionPath::load(&p, &base, &AdapterLoadOptions::default()).unwrap_err();
        assert!(
            matches!(&err, DiffusionError::Metadata { .. }) && err.to_string().contains(needle),
            "{entry}: {err}"
        );
    }

    // Metadata sizing a path far beyond anything real (a corrupt `l2d_config`): refused by
    // field before anything is built from it.
    for (field, value) in [
        ("flow_representation_num_layers", 100_000_000u64),
        ("timestep_modulation_num_layers", u64::MAX),
        ("flow_to_lm_translation_depth", 1 << 40),
        ("flow_lora_rank", 1 << 40),
    ] {
        let mut bad = meta.clone();
        let mut config: serde_json::Value = serde_json::from_str(&bad["l2d_config"]).unwrap();
        config[field] = value.into();
        bad.insert("l2d_config".into(), config.to_string());
        let p = dir.path().join(format!("{field}.safetensors"));
        safetensors::serialize_to_file(tensors.iter().map(|(k, v)| (k.clone(), v)), Some(bad), &p)
            .unwrap();
        let start = std::time::Instant::now();
        let err = DiffusionPath::load(&p, &base, &AdapterLoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(field) && err.contains("maximum"),
            "{field}: {err}"
        );
        assert!(
            start.elapsed().as_secs() < 5,
            "{field}: {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn an_f32_path_runs_on_a_bf16_base() {
    let device = Device::flex();
    let base32 = CausalLm::random(&base_config("qwen2"), &device, DType::F32, 21);
    let path = DiffusionPath::init(&tiny_l2d_config(), &base32, 22)
        .unwrap()
        .with_random_parameters(23, 0.3);
    let base = base_in(&base32, DType::BF16);
    let ids = Tensor::<2, Int>::from_ints([[3, 1, 4, 1]], &device);
    let x = HostRng::new(551).normal([1, 4, 8], &device).mul_scalar(4.0);
    let opts = ForwardOptions::default();
    let frozen = path
        .frozen_logits(&base, ids.clone(), &opts)
        .cast(DType::F32);
    let run = |t: f64| {
        path.forward(
            &base,
            ids.clone(),
            &opts,
            x.clone(),
            &Timesteps::Scalar(t),
            None,
        )
        .unwrap()
    };
    let at0 = run(0.0);
    assert_eq!(at0.dtype(), DType::F32);
    assert_eq!(max_diff(at0, frozen.clone()), 0.0);
    // bf16 against the f32 computation: close, not equal.
    let reference = path
        .forward(
            &base32,
            ids.clone(),
            &opts,
            x.clone(),
            &Timesteps::Scalar(0.7),
            None,
        )
        .unwrap();
    let err = max_diff(run(0.7), reference.clone());
    let scale = reference.abs().max().into_scalar::<f32>();
    println!(
        "bf16 against f32 at t = 0.7: relative error {:.4}",
        err / scale
    );
    assert!(err / scale < 0.05, "bf16 error {err} at scale {scale}");
    // The vocabulary table and token representations work too.
    assert_eq!(path.vocabulary_table(&base).dims(), [37, 8]);
    assert_eq!(path.token_representations(&base, ids).dims(), [1, 4, 8]);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let device = Device::flex();
    let base = CausalLm::random(&base_config("llama"), &device, DType::F32, 1);
    let plain = DiffusionPath::init(&tiny_l2d_config(), &base, 2).unwrap();
    let guided = DiffusionPath::init(
        &L2dConfig {
            guidance_modulation_num_classes: Some(2),
            ..tiny_l2d_config()
        },
        &base,
        2,
    )
    .unwrap();
    let ids = Tensor::<2, Int>::from_ints([[3, 1, 4]], &device);
    let opts = ForwardOptions::default();
    let x = Tensor::<3>::zeros([1, 3, 8], &device);
    let t = Timesteps::Scalar(0.5);
    let labels = |v: i64| ClassLabels::PerSequence(Tensor::from_ints([v], &device));
    assert!(matches!(
        plain.forward(&base, ids.clone(), &opts, x.clone(), &t, Some(&labels(0))),
        Err(DiffusionError::ClassLabels(_))
    ));
    assert!(matches!(
        guided.forward(&base, ids.clone(), &opts, x.clone(), &t, Some(&labels(3))),
        Err(DiffusionError::ClassLabels(_))
    ));
    // The null class (2) is a valid label.
    assert!(
        guided
            .forward(&base, ids.clone(), &opts, x.clone(), &t, Some(&labels(2)))
            .is_ok()
    );
    assert!(matches!(
        plain.forward(
            &base,
            ids.clone(),
            &opts,
            Tensor::zeros([1, 3, 7], &device),
            &t,
            None
        ),
        Err(DiffusionError::Shape {
            tensor: "flow state",
            ..
        })
    ));
    let bad_t = Timesteps::Tensor(Tensor::zeros([1, 2], &device));
    assert!(matches!(
        plain.forward(&base, ids.clone(), &opts, x, &bad_t, None),
        Err(DiffusionError::Shape {
            tensor: "timesteps",
            ..
        })
    ));
    // Sampling timesteps or noise needs a generator.
    let inputs = LossInputs::new(ids.clone(), ids);
    assert!(matches!(
        plain.loss(&base, inputs, None),
        Err(DiffusionError::Invalid {
            field: "timesteps",
            ..
        })
    ));
    // A path for another base.
    let other = CausalLm::random(&base_config("qwen2"), &device, DType::F32, 1);
    assert!(matches!(
        plain.check_base(&other),
        Err(DiffusionError::BaseMismatch {
            field: "model_type",
            ..
        })
    ));
}

/// The loss runs the diffusion path on the span of scored targets only; it must equal the
/// cross-entropy of the full forward over every position, scored where labels say, whatever
/// the span (a prompt, padding after it, one scored position, rows scored at different places).
#[test]
fn the_loss_on_the_scored_span_equals_the_full_forward() {
    let device = Device::flex();
    let base = CausalLm::random(&base_config("llama"), &device, DType::F32, 11);
    let path = DiffusionPath::init(&tiny_l2d_config(), &base, 12)
        .unwrap()
        .with_random_parameters(13, 0.3);
    let (b, s, d) = (3usize, 7usize, path.flow_dim());
    let ids = Tensor::<2, Int>::from_ints(
        [
            [1, 4, 2, 8, 5, 7, 3],
            [9, 2, 6, 5, 3, 5, 8],
            [2, 7, 1, 8, 2, 8, 1],
        ],
        &device,
    );
    let mut rng = HostRng::new(14);
    let t = rng.uniform([b, s], &device);
    let noise = rng.normal([b, s, d], &device);
    let label_sets: [[[i64; 7]; 3]; 3] = [
        // Scored from position 2 to 5, one row from 3.
        [
            [-100, -100, 2, 8, 5, 7, -100],
            [-100, -100, -100, 5, 3, 5, -100],
            [-100, -100, 1, 8, 2, 8, -100],
        ],
        // One scored position.
        [
            [-100; 7],
            [-100, -100, -100, -100, 3, -100, -100],
            [-100; 7],
        ],
        // Everything scored.
        [
            [1, 4, 2, 8, 5, 7, 3],
            [9, 2, 6, 5, 3, 5, 8],
            [2, 7, 1, 8, 2, 8, 1],
        ],
    ];
    for labels in label_sets {
        let labels = Tensor::<2, Int>::from_ints(labels, &device);
        let mut inputs = LossInputs::new(ids.clone(), labels.clone());
        inputs.alignment = l2d_models::l2d_config::LabelAlignment::Shifted;
        inputs.timesteps = Some(t.clone());
        inputs.noise = Some(noise.clone());
        let out = path.loss(&base, inputs, None).unwrap();

        // The full forward: every position's flow state, the path on all of them.
        let ignored = labels.clone().equal_elem(-100);
        let targets = labels.clone().mask_fill(ignored.clone(), 0);
        let x1 = path.token_representations(&base, targets.clone());
        let t3 = t.clone().reshape([b, s, 1]);
        let x_t = noise.clone().mul_scalar(path.config().noise_rescaling)
            * t3.clone().neg().add_scalar(1.0)
            + x1 * t3;
        let logits = path
            .forward(
                &base,
                ids.clone(),
                &ForwardOptions::default(),
                x_t,
                &Timesteps::Tensor(t.clone()),
                None,
            )
            .unwrap();
        let picked = burn::tensor::activation::log_softmax(logits, 2)
            .gather(2, targets.reshape([b, s, 1]))
            .reshape([b, s]);
        let weights = ignored.bool_not().float();
        let full = (picked.neg() * weights.clone()).sum() / weights.sum();
        let (a, e) = (out.loss.into_scalar::<f32>(), full.into_scalar::<f32>());
        assert!(
            (a - e).abs() <= 1e-5 * e.abs(),
            "span loss {a}, full forward {e}"
        );
        assert!(e > 0.5, "a random path is far from certain: {e}");
    }
}
