//! The plain-LoRA baseline: parameter-count formulas against the modules and against the
//! published counts, initialisation, and that training leaves the frozen base bit-identical.

use burn::module::Module;
use burn::tensor::{DType, Device, Int, Tensor};
use l2d::demo::lora::{
    LORA_TARGETS, LoraConfig, LoraInit, ToyDiffusionPath, apply_lora, lora_param_count, parameters,
    rank_for_budget, trainable_param_count,
};
use l2d::demo::{DigitTask, TinyLlama, train_lora};
use l2d_models::config::ModelConfig;
use l2d_models::decoder::CausalLm;

fn shape(hidden: usize, layers: usize) -> TinyLlama {
    TinyLlama {
        hidden,
        layers,
        heads: 4,
        kv_heads: 2,
        intermediate: 2 * hidden,
    }
}

#[test]
fn lora_formula_matches_the_adapted_modules_trainable_parameters() {
    let device = Device::flex().autodiff();
    for (t, rank) in [
        (shape(16, 1), 3),
        (shape(32, 2), 8),
        (shape(48, 2), 40),
        (
            TinyLlama {
                hidden: 24,
                layers: 3,
                heads: 6,
                kv_heads: 3,
                intermediate: 40,
            },
            5,
        ),
    ] {
        let config = t.model_config().unwrap();
        let model = CausalLm::random(&config, &device, DType::F32, 0);
        let adapted = apply_lora(model, rank, rank as f64, LoraInit::Reference, 0);
        let params = parameters(&adapted);
        let trainable: Vec<&(String, Tensor<2>, bool)> =
            params.iter().filter(|(_, _, g)| *g).collect();
        assert_eq!(
            trainable_param_count(&adapted),
            lora_param_count(&config, rank),
            "{t:?} rank {rank}"
        );
        // Exactly two factors per adapted projection, and nothing else trains.
        assert_eq!(trainable.len(), 2 * LORA_TARGETS.len() * t.layers);
        for (path, _, _) in &trainable {
            assert!(
                path.contains(".lora.") && LORA_TARGETS.iter().any(|p| path.contains(p)),
                "{path}"
            );
        }
    }
}

#[test]
fn parameter_counts_match_the_toy_reference_and_the_paper() {
    // Toy reference rows (LoRA baselines): 4-digit, H 32, 1 layer, rank 46: 19,136;
    // 2 layers: 38,272; 6-digit, H 48, 2 layers, rank 40: 49,920.
    let c32_1 = shape(32, 1).model_config().unwrap();
    let c32_2 = shape(32, 2).model_config().unwrap();
    let c48_2 = shape(48, 2).model_config().unwrap();
    assert_eq!(lora_param_count(&c32_1, 46), 19_136);
    assert_eq!(lora_param_count(&c32_2, 46), 38_272);
    assert_eq!(lora_param_count(&c48_2, 40), 49_920);
    // The 6-digit row's diffusion path: 58,592 parameters.
    assert_eq!(
        ToyDiffusionPath::default()
            .param_count(&c48_2)
            .unwrap()
            .total(),
        58_592
    );
    // The rank matched to it.
    assert_eq!(rank_for_budget(&c48_2, 58_592), 47);
    assert_eq!(LoraConfig::default().resolved_rank(&c48_2).unwrap(), 47);

    // The paper's configurations (rank 32, mapping/modulation/frequency 256): the
    // breakdown of paper notes §2.7 in millions, and the totals 73M (Llama 3.2 1B) and
    // 281M (Llama 3.1 8B) of the paper.
    let paper = ToyDiffusionPath {
        mapping_dim: 256,
        flow_width: Some(256),
        flow_depth: 2,
        modulation_hidden: Some(256),
        frequency_dim: 256,
        lora_rank: 32,
        ..ToyDiffusionPath::default()
    };
    let llama = |hidden: usize, inter: usize, layers: usize, heads: usize, kv: usize| {
        ModelConfig::from_value(&serde_json::json!({
            "model_type": "llama", "hidden_size": hidden, "intermediate_size": inter,
            "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv, "vocab_size": 128256
        }))
        .unwrap()
    };
    let m = |x: usize| (x as f64 / 1e4).round() / 100.0;
    for (config, expected) in [
        (
            llama(2048, 8192, 16, 32, 8),
            [19.92, 51.58, 0.59, 0.13, 0.52, 0.59, 73.34],
        ),
        (
            llama(4096, 14336, 32, 32, 8),
            [73.40, 204.22, 1.12, 0.13, 1.05, 1.12, 281.04],
        ),
    ] {
        let b = paper.param_count(&config).unwrap();
        let got = [
            m(b.projections),
            m(b.modulation_heads),
            m(b.final_head),
            m(b.timestep_embedder),
            m(b.token_embedder),
            m(b.encoder),
            m(b.total()),
        ];
        assert_eq!(b.class_embedder, 0);
        assert_eq!(got, expected, "hidden {}", config.hidden_size);
    }
}

#[test]
fn adapters_start_at_zero_delta_with_the_chosen_initialisation() {
    let device = Device::flex();
    let config = shape(16, 2).model_config().unwrap();
    let base = CausalLm::random(&config, &device, DType::F32, 2);
    let ids = Tensor::<2, Int>::from_ints([[12, 1, 2, 10, 3, 4, 11]], &device);
    let rank = 4;
    for init in [LoraInit::Reference, LoraInit::Peft] {
        let adapted = apply_lora(base.clone(), rank, 4.0, init, 9);
        let diff = (base.forward(ids.clone(), None) - adapted.forward(ids.clone(), None))
            .abs()
            .max()
            .into_scalar::<f32>();
        assert_eq!(diff, 0.0, "B = 0 at start: the adapted model is the base");
        let mut a_values = Vec::new();
        let mut saw_a = 0;
        for (path, value, _) in parameters(&adapted) {
            let v: Vec<f32> = value.into_data().iter::<f32>().collect();
            if path.ends_with(".lora.a") {
                saw_a += 1;
                if init == LoraInit::Peft {
                    // Kaiming-uniform on [-1/sqrt(d_in), 1/sqrt(d_in)]; the largest of 64+
                    // draws is near the bound.
                    let d_in = if path.contains("down_proj") { 32 } else { 16 };
                    let bound = 1.0 / (d_in as f32).sqrt();
                    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
                    assert!(
                        max <= bound && max > 0.8 * bound,
                        "{path}: {max} vs {bound}"
                    );
                }
                a_values.extend(v);
            } else if path.ends_with(".lora.b") {
                assert!(v.iter().all(|&x| x == 0.0), "{path}");
            }
        }
        assert_eq!(saw_a, 10);
        if init == LoraInit::Reference {
            // N(0, 1) / rank over 2 layers x (16+32+16+16+32... ) x 4 values.
            let n = a_values.len() as f64;
            let mean = a_values.iter().map(|&x| x as f64).sum::<f64>() / n;
            let std = (a_values
                .iter()
                .map(|&x| (x as f64 - mean).powi(2))
                .sum::<f64>()
                / n)
                .sqrt();
            let target = 1.0 / rank as f64;
            assert!(mean.abs() < 0.1 * target, "mean {mean}");
            assert!((std / target - 1.0).abs() < 0.1, "std {std} vs {target}");
        }
    }
}

#[test]
fn training_moves_only_the_adapters_and_keeps_the_frozen_base_bit_identical() {
    let task = DigitTask::addition(2).unwrap();
    let device = Device::flex();
    let config = shape(16, 1).model_config().unwrap();
    let base = CausalLm::random(&config, &device, DType::F32, 4);
    let before = parameters(&base);
    let lora_config = LoraConfig {
        rank: Some(4),
        steps: 5,
        batch_size: 16,
        lr: 1e-2,
        ..LoraConfig::default()
    };
    let run = train_lora(&base, &task, &lora_config, &device, |_, _| {}).unwrap();
    assert_eq!(run.rank, 4);
    assert_eq!(run.trainable_params, lora_param_count(&config, 4));
    assert_eq!(run.losses.len(), 5);

    let after = parameters(&run.model);
    let frozen: Vec<_> = after
        .iter()
        .filter(|(p, _, _)| !p.contains(".lora."))
        .collect();
    assert_eq!(frozen.len(), before.len());
    for ((p0, t0, _), (p1, t1, _)) in before.iter().zip(frozen) {
        assert_eq!(p0, p1);
        let a: Vec<u32> = t0
            .clone()
            .into_data()
            .iter::<f32>()
            .map(f32::to_bits)
            .collect();
        let b: Vec<u32> = t1
            .clone()
            .into_data()
            .iter::<f32>()
            .map(f32::to_bits)
            .collect();
        assert_eq!(a, b, "{p0} changed");
    }
    // The factors B moved off zero (so the model changed), and the base passed in is intact.
    for (path, value, _) in after.iter().filter(|(p, _, _)| p.ends_with(".lora.b")) {
        let norm = value.clone().abs().sum().into_scalar::<f32>();
        assert!(norm > 0.0, "{path} did not train");
    }
    let ids = Tensor::<2, Int>::from_ints([[12, 1, 2, 10, 3, 4, 11]], &device);
    let diff = (base.forward(ids.clone(), None) - run.model.forward(ids, None))
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(diff > 0.0);

    // The frozen base model's parameters do not require gradients at all.
    let frozen_base = base.clone().fork(&Device::flex().autodiff()).no_grad();
    assert_eq!(trainable_param_count(&frozen_base), 0);
}

#[test]
fn invalid_lora_settings_are_typed_errors() {
    let task = DigitTask::addition(2).unwrap();
    let device = Device::flex();
    let base = CausalLm::random(
        &shape(16, 1).model_config().unwrap(),
        &device,
        DType::F32,
        0,
    );
    for (config, field) in [
        (
            LoraConfig {
                rank: Some(0),
                ..LoraConfig::default()
            },
            "rank",
        ),
        (
            LoraConfig {
                alpha: Some(-1.0),
                ..LoraConfig::default()
            },
            "alpha",
        ),
        (
            LoraConfig {
                lr: f64::NAN,
                ..LoraConfig::default()
            },
            "lr",
        ),
    ] {
        let err = train_lora(&base, &task, &config, &device, |_, _| {}).unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn the_toy_path_is_the_reference_configuration_and_counts_as_its_rows() {
    use l2d_models::diffusion::diffusion_param_count;
    use l2d_models::l2d_config::L2dConfig;
    // The toy reference's L2D configuration, in the diffusion path's own terms.
    for (t, digits_row) in [(shape(48, 2), 58_592), (shape(32, 1), 19_136)] {
        let base = t.model_config().unwrap();
        let config = L2dConfig {
            flow_representation_dim: Some(32),
            flow_to_lm_hidden_size: Some(t.hidden),
            timestep_modulation_hidden_size: Some(t.hidden),
            timestep_modulation_freq_embedding_size: Some(64),
            flow_lora_rank: 8,
            flow_lora_alpha: Some(8.0),
            ..L2dConfig::default()
        };
        let theirs = diffusion_param_count(&config, &base).unwrap();
        let ours = ToyDiffusionPath::default().param_count(&base).unwrap();
        assert_eq!(theirs, ours, "{t:?}");
        assert_eq!(ours.total(), digits_row);
    }
}
