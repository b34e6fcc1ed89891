//! The plain-LoRA baseline: parameter counts against the adapter and against the published
//! counts, and that training moves only the adapters and leaves the frozen base bit-identical.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Int, Tensor};
use l2d::demo::lora::{LORA_TARGETS, LoraConfig};
use l2d::demo::{DigitTask, TinyLlama, ToyDiffusionPath, train_lora};
use l2d_models::config::ModelConfig;
use l2d_models::decoder::CausalLm;
use l2d_models::lora::{DecoderLora, LoraInit};

fn shape(hidden: usize, layers: usize) -> TinyLlama {
    TinyLlama {
        hidden,
        layers,
        heads: 4,
        kv_heads: 2,
        intermediate: 2 * hidden,
    }
}

/// Every float parameter of `module` as the bits of its values, in visiting order.
fn parameter_bits(module: &impl Module) -> Vec<Vec<u32>> {
    struct Collect(Vec<Vec<u32>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = param.val().into_data();
            self.0
                .push(values.iter::<f32>().map(f32::to_bits).collect());
        }
    }
    let mut c = Collect(Vec::new());
    module.visit(&mut c);
    c.0
}

#[test]
fn the_adapter_covers_the_targets_of_every_layer_and_counts_as_its_formula() {
    let device = Device::flex();
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
        let base = CausalLm::random(&config, &device, DType::F32, 0);
        let settings = LoraConfig {
            rank: Some(rank),
            ..LoraConfig::default()
        };
        let adapter = settings.adapter_config(&config).unwrap();
        assert_eq!((adapter.rank, adapter.alpha), (rank, rank as f64));
        assert_eq!(
            adapter.init,
            LoraInit::Gaussian,
            "the authors' draw by default"
        );
        let lora = DecoderLora::init(&adapter, &base, 0).unwrap();
        assert_eq!(
            lora.num_params(),
            adapter.num_params(&config),
            "{t:?} rank {rank}"
        );
        // One update per target projection of every layer, and nothing else.
        let deltas: Vec<_> = lora.deltas().map(|(layer, p, _)| (layer, p)).collect();
        let expected: Vec<_> = (0..t.layers)
            .flat_map(|layer| {
                let mut targets = LORA_TARGETS.to_vec();
                targets.sort();
                targets.into_iter().map(move |p| (layer, p))
            })
            .collect();
        let mut sorted = deltas.clone();
        sorted.sort();
        assert_eq!(sorted, expected);
    }
}

#[test]
fn parameter_counts_match_the_toy_reference_and_the_paper() {
    // Toy reference rows (LoRA baselines): 4-digit, H 32, 1 layer, rank 46: 19,136;
    // 2 layers: 38,272; 6-digit, H 48, 2 layers, rank 40: 49,920.
    let c32_1 = shape(32, 1).model_config().unwrap();
    let c32_2 = shape(32, 2).model_config().unwrap();
    let c48_2 = shape(48, 2).model_config().unwrap();
    let count = |config: &ModelConfig, rank: usize| {
        let settings = LoraConfig {
            rank: Some(rank),
            ..LoraConfig::default()
        };
        settings.adapter_config(config).unwrap().num_params(config)
    };
    assert_eq!(count(&c32_1, 46), 19_136);
    assert_eq!(count(&c32_2, 46), 38_272);
    assert_eq!(count(&c48_2, 40), 49_920);
    // The 6-digit row's diffusion path: 58,592 parameters.
    assert_eq!(
        ToyDiffusionPath::default()
            .param_count(&c48_2)
            .unwrap()
            .total(),
        58_592
    );
    // The rank matched to it.
    let matched = LoraConfig::default().adapter_config(&c48_2).unwrap();
    assert_eq!((matched.rank, matched.num_params(&c48_2)), (47, 58_656));

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
fn training_moves_only_the_adapters_and_keeps_the_frozen_base_bit_identical() {
    let task = DigitTask::addition(2).unwrap();
    let device = Device::flex();
    let config = shape(16, 1).model_config().unwrap();
    let base = CausalLm::random(&config, &device, DType::F32, 4);
    let before = parameter_bits(&base);
    let lora_config = LoraConfig {
        rank: Some(4),
        steps: 5,
        batch_size: 16,
        lr: 1e-2,
        ..LoraConfig::default()
    };
    let run = train_lora(&base, &task, &lora_config, &device, |_, _| {}).unwrap();
    let adapter = lora_config.adapter_config(&config).unwrap();
    assert_eq!(run.lora.config(), &adapter);
    assert_eq!(run.trainable_params, adapter.num_params(&config));
    assert_eq!(run.losses.len(), 5);
    assert!(run.losses.iter().all(|l| l.is_finite()));
    // The base passed in is bit-identical after training.
    assert_eq!(parameter_bits(&base), before);
    // Every B moved off zero (so the model changed), and the merged model is what scores.
    for (layer, p, delta) in run.lora.deltas() {
        let norm = delta.b.val().abs().sum().into_scalar::<f32>();
        assert!(norm > 0.0, "layer {layer} {p:?} did not train");
    }
    let ids = Tensor::<2, Int>::from_ints([[12, 1, 2, 10, 3, 4, 11]], &device);
    let diff = (base.forward(ids.clone(), None) - run.model.forward(ids, None))
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(diff > 0.0);
    let merged = run.lora.merge_into(&base);
    assert_eq!(parameter_bits(&merged), parameter_bits(&run.model));
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
