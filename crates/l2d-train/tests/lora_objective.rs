//! The LoRA baseline's training objective against Hugging Face PEFT 0.13
//! (`fixtures/lora/`, made by `scripts/make_lora_reference.py`): on the tiny Llama of
//! `fixtures/hf/llama3-tied` with PEFT's adapter, one micro-batch gives PEFT's loss and the
//! gradient of every LoRA factor, and no gradient reaches the base.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Device, Tensor};
use l2d_core::HostRng;
use l2d_models::decoder::CausalLm;
use l2d_models::lora::DecoderLora;
use l2d_models::weights::{SafetensorsSource, WeightSource};
use l2d_train::data::{TokenizedExample, collate};
use l2d_train::objective::Objective;
use l2d_train::step::trainable;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every tensor of a safetensors file as `(shape, f64 values)`.
fn read(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    let source = SafetensorsSource::from_file(path).unwrap();
    source
        .names()
        .into_iter()
        .map(|n| {
            let data = source.tensor_data(&n).unwrap();
            let shape = data.shape().to_vec();
            let values = data
                .convert::<f64>()
                .try_to_vec::<f64>()
                .unwrap_or_default();
            (n, (shape, values))
        })
        .collect()
}

/// The module with each parameter replaced by its gradient (zeros where it has none).
fn gradients_of(lora: &DecoderLora, grads: &burn::tensor::Gradients) -> DecoderLora {
    struct ToGrad<'a>(&'a burn::tensor::Gradients);
    impl ModuleMapper for ToGrad<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, t, mapper) = param.consume();
            let g = t.grad(self.0).unwrap_or_else(|| t.inner().zeros_like());
            Param::from_mapped_value(id, g, mapper)
        }
    }
    lora.clone().map(&mut ToGrad(grads))
}

#[test]
fn one_micro_batch_gives_peft_loss_and_gradients() {
    let device = Device::flex();
    let base =
        CausalLm::from_dir(&root().join("fixtures/hf/llama3-tied"), &device, DType::F32).unwrap();
    let lora = DecoderLora::load(
        root().join("fixtures/lora/adapter_model.safetensors"),
        &base,
        false,
    )
    .unwrap();
    let lora = trainable(lora, &device);
    let reference = read(&root().join("fixtures/lora/reference.safetensors"));
    let (ids, mask, labels) = (
        &reference["input_ids"].1,
        &reference["attention_mask"].1,
        &reference["labels"].1,
    );
    let s = reference["input_ids"].0[1];
    let examples: Vec<TokenizedExample> = (0..2)
        .map(|r| {
            let len = (0..s).filter(|&j| mask[r * s + j] == 1.0).count();
            TokenizedExample {
                input_ids: (0..len).map(|j| ids[r * s + j] as u32).collect(),
                labels: (0..len).map(|j| labels[r * s + j] as i64).collect(),
                class_id: None,
                conversation: r,
            }
        })
        .collect();
    let refs: Vec<&TokenizedExample> = examples.iter().collect();
    let batch = collate(&refs, 0, &device);
    let scored = labels.iter().filter(|&&l| l != -100.0).count();
    assert_eq!(batch.num_scored, scored);

    let out = lora
        .micro_step(&base, &batch, &mut HostRng::new(0), 1.0)
        .unwrap();
    let want = reference["loss"].1[0];
    println!("loss {} (PEFT {want})", out.loss);
    assert!(
        (out.loss - want).abs() < 1e-5 * want.abs(),
        "loss {} vs {want}",
        out.loss
    );
    assert_eq!(out.scored, scored);

    let grads = out.grads.expect("a finite loss is backpropagated");
    // No parameter of the base is tracked, so none has a gradient.
    struct AnyGrad<'a>(&'a burn::tensor::Gradients, usize);
    impl burn::module::ModuleVisitor for AnyGrad<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.1 += usize::from(param.val().grad(self.0).is_some());
        }
    }
    let mut any = AnyGrad(&grads, 0);
    base.visit(&mut any);
    assert_eq!(any.1, 0, "the frozen base got gradients");

    let mut worst = 0.0f64;
    let ours = gradients_of(&lora, &grads).tensors();
    assert_eq!(ours.len(), 28);
    for (name, data) in ours {
        let (shape, want) = &reference[&format!("grad.{name}")];
        assert_eq!(data.shape().to_vec(), *shape, "{name}");
        let got = data.convert::<f64>().try_to_vec::<f64>().unwrap();
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(want)
            .fold(0.0f64, |m, (g, w)| m.max((g - w).abs()));
        assert!(scale > 0.0, "{name}: PEFT's gradient is zero");
        worst = worst.max(err / scale);
        assert!(
            err <= 1e-4 * scale,
            "{name}: gradient differs by {err} (scale {scale})"
        );
    }
    println!("worst gradient error relative to its tensor's largest value: {worst:.2e}");
}
