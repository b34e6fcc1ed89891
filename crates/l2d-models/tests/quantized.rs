//! Frozen projections kept in GGUF blocks (`WeightFormat::Quantized`) on the tiny llama of
//! `fixtures/gguf/tiny-llama.*` (its tensors are Q8_0, Q4_0, Q4_1, F16, BF16 and F32):
//! the kept blocks against transformers' dequantisation, the quantized model against its
//! float twin (the same weights, dequantized) in decoding, prompts, batches, the diffusion
//! path's forward and its training gradients, and typed refusals.

mod common;
mod tokenizer_support;

use burn::module::Param;
use burn::tensor::{DType, Device, Int, Tensor};
use l2d_core::HostRng;
use l2d_models::config::ModelConfig;
use l2d_models::decoder::{CausalLm, ForwardOptions, FrozenLinear, KvCache};
use l2d_models::diffusion::{DiffusionPath, LossInputs, Timesteps, base_fingerprint};
use l2d_models::gguf::GgufWeights;
use l2d_models::loading::{LoadError, WeightFormat};
use l2d_models::weights::{SafetensorsSource, WeightSource};
use l2d_quant::BlockFormat;
use tokenizer_support::{fixtures, safetensors, temp_dir};

fn weights() -> GgufWeights {
    GgufWeights::open(fixtures().join("gguf/tiny-llama.gguf")).unwrap()
}

fn load(format: WeightFormat, device: &Device) -> CausalLm {
    let w = weights();
    let config = ModelConfig::from_value(&w.file().config_json().unwrap()).unwrap();
    CausalLm::load_as(&w, &config, device, format).unwrap()
}

/// The same model with every projection's weights dequantized into float tensors.
fn float_twin(model: &CausalLm) -> CausalLm {
    let (device, dtype) = (model.device(), model.dtype());
    let float = |l: &FrozenLinear| {
        FrozenLinear::new(
            l.weight_tensor(&device, dtype),
            l.bias.as_ref().map(|b| b.val()),
        )
    };
    let mut twin = model.clone();
    for layer in &mut twin.model.layers {
        let a = &mut layer.self_attn;
        (a.q_proj, a.k_proj, a.v_proj, a.o_proj) = (
            float(&a.q_proj),
            float(&a.k_proj),
            float(&a.v_proj),
            float(&a.o_proj),
        );
        let m = &mut layer.mlp;
        (m.gate_proj, m.up_proj, m.down_proj) =
            (float(&m.gate_proj), float(&m.up_proj), float(&m.down_proj));
    }
    twin.lm_head = twin.lm_head.as_ref().map(float);
    twin
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

fn max_abs<const D: usize>(a: Tensor<D>) -> f32 {
    a.abs().max().into_scalar::<f32>()
}

const Q8: WeightFormat = WeightFormat::Quantized(BlockFormat::Q8_0);

#[test]
fn kept_blocks_equal_transformers_dequantisation() {
    let w = weights();
    let reference = safetensors(fixtures().join("gguf/tiny-llama.safetensors"));
    let mut kept = Vec::new();
    for name in w.names() {
        let Some(q) = w.quantized(&name).unwrap() else {
            continue;
        };
        let (shape, want) = &reference[&format!("hf.{name}")];
        assert_eq!(vec![q.rows(), q.cols()], *shape, "{name}");
        let got: Vec<f64> = q.dequantize().into_iter().map(f64::from).collect();
        // q (Q4_1) and k (Q4_0) rows were permuted by llama.cpp: blocks move with them.
        assert_eq!(&got, want, "{name}");
        kept.push(name);
    }
    // Per layer q (Q4_1), k (Q4_0), gate (Q8_0), down (Q4_1); the embedding (Q8_0).
    assert_eq!(kept.len(), 2 * 4 + 1, "{kept:?}");
    assert!(
        w.quantized("model.layers.0.self_attn.v_proj.weight")
            .unwrap()
            .is_none()
    ); // F16
}

#[test]
fn a_quantized_model_holds_blocks_and_equals_its_float_twin() {
    let device = Device::flex();
    let model = load(Q8, &device);
    let layer = &model.model.layers[0];
    // The file's blocks are kept; its float projections and the F16 head become Q8_0.
    assert_eq!(
        layer.self_attn.q_proj.block_format(),
        Some(BlockFormat::Q4_1)
    );
    assert_eq!(
        layer.self_attn.k_proj.block_format(),
        Some(BlockFormat::Q4_0)
    );
    assert_eq!(
        layer.self_attn.v_proj.block_format(),
        Some(BlockFormat::Q8_0)
    );
    assert_eq!(layer.mlp.up_proj.block_format(), Some(BlockFormat::Q8_0));
    assert_eq!(
        model.lm_head.as_ref().unwrap().block_format(),
        Some(BlockFormat::Q8_0)
    );
    assert!(layer.self_attn.q_proj.weight.is_none());
    let float = load(WeightFormat::default(), &device);
    assert!(
        (model.weight_bytes() as f64) < 0.45 * float.weight_bytes() as f64,
        "{} vs {}",
        model.weight_bytes(),
        float.weight_bytes()
    );

    let twin = float_twin(&model);
    // Blocks are fingerprinted as their float expansion: adapters move between the two.
    assert_eq!(base_fingerprint(&model), base_fingerprint(&twin));
    assert_ne!(base_fingerprint(&model), base_fingerprint(&float));
    // A 20-token prompt (more rows than the fused product takes: the dequantized fallback),
    // then decoding one token at a time (the fused product), in a batch of two rows.
    let ids = Tensor::<2, Int>::from_ints(
        [
            [
                5, 17, 300, 2, 44, 9, 610, 3, 77, 120, 8, 1, 99, 250, 31, 6, 400, 12, 55, 70,
            ],
            [
                1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
            ],
        ],
        &device,
    );
    let full_q = model.forward(ids.clone(), None);
    let full_t = twin.forward(ids.clone(), None);
    let scale = max_abs(full_t.clone());
    assert!(max_abs_diff(full_q.clone(), full_t) <= 1e-5 * scale.max(1.0));
    let (mut cq, mut ct) = (KvCache::new(), KvCache::new());
    let _ = model.forward(ids.clone().narrow(1, 0, 15), Some(&mut cq));
    let _ = twin.forward(ids.clone().narrow(1, 0, 15), Some(&mut ct));
    for p in 15..20 {
        let step = ids.clone().narrow(1, p, 1);
        let q = model.forward(step.clone(), Some(&mut cq));
        let t = twin.forward(step, Some(&mut ct));
        assert!(
            max_abs_diff(q.clone(), t) <= 1e-5 * scale.max(1.0),
            "position {p}"
        );
        // And the same as the full pass.
        let f = full_q.clone().narrow(1, p, 1);
        assert!(max_abs_diff(q, f) <= 1e-4 * scale.max(1.0), "position {p}");
    }
    // Against the float model of the file's own values, the only difference is the Q8_0
    // rounding of the file's F32/F16/BF16 projections and head.
    let err = max_abs_diff(model.forward(ids.clone(), None), float.forward(ids, None));
    println!(
        "tiny llama, q8_0 against the file's float values: max |Δlogit| {err:.2e} of {scale:.2}"
    );
    assert!(err < 0.05 * scale, "{err} of {scale}");
}

#[test]
fn the_diffusion_path_runs_and_trains_on_a_quantized_base() {
    // Inference: the path's LoRA projections add to the quantized frozen ones.
    let device = Device::flex();
    let model = load(Q8, &device);
    let twin = float_twin(&model);
    let path = DiffusionPath::init(&common::tiny_l2d_config(), &model, 1)
        .unwrap()
        .with_random_parameters(2, 0.3);
    let ids = Tensor::<2, Int>::from_ints([[3, 1, 4, 1, 5, 9, 2, 6]], &device);
    let x = HostRng::new(3).normal([1, 8, 8], &device).mul_scalar(8.0);
    let run = |base: &CausalLm| {
        path.forward(
            base,
            ids.clone(),
            &ForwardOptions::default(),
            x.clone(),
            &Timesteps::Scalar(0.4),
            None,
        )
        .unwrap()
    };
    let (q, t) = (run(&model), run(&twin));
    assert!(max_abs_diff(q, t.clone()) <= 1e-5 * max_abs(t).max(1.0));

    // Training: the loss and every gradient of the path equal the float twin's.
    let device = Device::flex().autodiff();
    let model = load(Q8, &device);
    let twin = float_twin(&model);
    let path = DiffusionPath::init(&common::tiny_l2d_config(), &model, 1)
        .unwrap()
        .with_random_parameters(2, 0.3);
    let ids = Tensor::<2, Int>::from_ints([[3, 1, 4, 1, 5, 9, 2, 6]], &device);
    let grads_of = |base: &CausalLm| {
        let mut inputs = LossInputs::new(ids.clone(), ids.clone());
        inputs.timesteps = Some(HostRng::new(4).uniform([1, 8], &device));
        inputs.noise = Some(HostRng::new(5).normal([1, 7, 8], &device));
        let out = path.loss(base, inputs, None).unwrap();
        let loss = out.loss.clone().into_scalar::<f32>();
        let grads = out.loss.backward();
        let layer = &path.layers[0];
        let lora = layer.q_proj.lora.as_ref().unwrap();
        let g: Vec<Tensor<2>> = [&lora.a, &lora.b, &layer.down_proj.lora.as_ref().unwrap().a]
            .iter()
            .map(|p: &&Param<Tensor<2>>| p.val().grad(&grads).expect("a gradient").cast(DType::F32))
            .collect();
        (loss, g)
    };
    let ((lq, gq), (lt, gt)) = (grads_of(&model), grads_of(&twin));
    assert!((lq - lt).abs() <= 1e-5 * lt.abs(), "{lq} vs {lt}");
    for (a, b) in gq.into_iter().zip(gt) {
        let scale = max_abs(b.clone());
        assert!(scale > 0.0);
        assert!(max_abs_diff(a, b) <= 1e-4 * scale);
    }
}

/// A llama whose hidden size (48) is not a whole number of 32-weight blocks.
fn narrow_config() -> ModelConfig {
    ModelConfig::from_json_str(
        r#"{"model_type": "llama", "hidden_size": 48, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 40}"#,
    )
    .unwrap()
}

#[test]
fn quantize_on_load_refuses_widths_that_are_not_whole_blocks() {
    let config = narrow_config();
    let device = Device::flex();
    let model = CausalLm::random(&config, &device, DType::F32, 0);
    let dir = temp_dir("quantize-48");
    model
        .save_safetensors(dir.join("model.safetensors"))
        .unwrap();
    let source = SafetensorsSource::open(&dir).unwrap();
    let err = CausalLm::load_as(&source, &config, &device, Q8).unwrap_err();
    match &err {
        LoadError::Quantize { name, .. } => {
            assert_eq!(name, "model.layers.0.self_attn.q_proj.weight")
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("divisible by 32"), "{err}");
    // The same folder loads in f32.
    CausalLm::load_as(&source, &config, &device, WeightFormat::default()).unwrap();
}

#[test]
fn quantizing_a_tied_model_in_memory_matches_its_float_twin() {
    let config = ModelConfig::from_json_str(
        r#"{"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 50, "tie_word_embeddings": true}"#,
    )
    .unwrap();
    let device = Device::flex();
    let float = CausalLm::random(&config, &device, DType::F32, 3);
    for format in [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1] {
        let model = float.clone().quantize(format).unwrap();
        assert!(model.lm_head.is_none(), "the head stays tied");
        assert!(model.weight_bytes() < float.weight_bytes());
        // The twin: float projections of the blocks, and the tied head made an untied one
        // holding the dequantized embedding blocks.
        let mut twin = float_twin(&model);
        let blocks_head =
            FrozenLinear::new(float.model.embed_tokens.weight.val().transpose(), None)
                .quantize(format)
                .unwrap();
        twin.lm_head = Some(FrozenLinear::new(
            blocks_head.weight_tensor(&device, DType::F32),
            None,
        ));
        let ids = Tensor::<2, Int>::from_ints([[1, 7, 3, 9]], &device);
        let (mut cq, mut ct) = (KvCache::new(), KvCache::new());
        for p in 0..4 {
            let step = ids.clone().narrow(1, p, 1);
            let q = model.forward(step.clone(), Some(&mut cq));
            let t = twin.forward(step, Some(&mut ct));
            let scale = max_abs(t.clone());
            assert!(
                max_abs_diff(q, t) <= 1e-5 * scale.max(1.0),
                "{format} position {p}"
            );
        }
    }
    // Widths that are not whole blocks are refused.
    let narrow = narrow_config();
    let err = CausalLm::random(&narrow, &device, DType::F32, 0)
        .quantize(BlockFormat::Q8_0)
        .unwrap_err();
    assert!(err.to_string().contains("divisible by 32"), "{err}");
}

#[test]
fn random_blocks_build_a_model_without_float_projections() {
    let config = ModelConfig::from_json_str(
        r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 96}"#,
    )
    .unwrap();
    let device = Device::flex();
    for format in [BlockFormat::Q8_0, BlockFormat::Q4_1] {
        let model = CausalLm::random_as(&config, &device, WeightFormat::Quantized(format), 1);
        assert!(
            model
                .frozen_linears()
                .all(|l| l.block_format() == Some(format))
        );
        // Weights spread like the float draw (std 0.02).
        let w = model.model.layers[0]
            .mlp
            .up_proj
            .weight_tensor(&device, DType::F32);
        let std = w
            .clone()
            .powf_scalar(2.0)
            .mean()
            .sqrt()
            .into_scalar::<f32>();
        assert!((0.015..0.025).contains(&std), "{format}: std {std}");
        let logits = model.forward(Tensor::<2, Int>::from_ints([[1, 2, 3]], &device), None);
        assert!(logits.is_finite().all().into_scalar::<bool>());
    }
}
