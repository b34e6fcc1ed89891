//! One training step on the `llama-tiny` reference fixture (weights and the `loss` case's
//! noise and timesteps, produced by the authors' code): the training pipeline's loss equals
//! the reference loss, no frozen tensor gets a gradient, every diffusion-path tensor gets a
//! finite non-zero one, and the optimizer holds state for exactly the diffusion path. On
//! `llama-tiny` and `qwen2-tiny`, every diffusion-path gradient equals the one the authors'
//! code computes (`scripts/make_grad_reference.py`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use l2d_models::config::ModelConfig;
use l2d_models::decoder::{CausalLm, ForwardOptions};
use l2d_models::diffusion::{AdapterLoadOptions, DiffusionPath, LossInputs};
use l2d_models::l2d_config::{L2dConfig, LabelAlignment};
use l2d_models::weights::SafetensorsSource;
use l2d_train::data::encode::IGNORE_INDEX;
use l2d_train::data::{TokenizedExample, collate};
use l2d_train::optim::{AdamW, AdamWConfig, GradientBuffer, parameter_names};
use l2d_train::step::{MicroNoise, forward_backward, loss_inputs, trainable};

fn fixture_named(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/reference")
        .join(name)
}

/// `(shape, values)` of every tensor of a safetensors file, as f64.
fn read_cases(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let d = view.data();
            let values: Vec<f64> = match view.dtype() {
                safetensors::Dtype::F32 => d
                    .chunks_exact(4)
                    .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                    .collect(),
                safetensors::Dtype::I64 => d
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                other => panic!("{name}: {other:?}"),
            };
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

fn load(device: &Device) -> (CausalLm, DiffusionPath) {
    load_named("llama-tiny", device)
}

fn load_named(name: &str, device: &Device) -> (CausalLm, DiffusionPath) {
    let dir = fixture_named(name);
    let config = ModelConfig::from_file(dir.join("config.json")).unwrap();
    let source = SafetensorsSource::open(dir.join("base.safetensors")).unwrap();
    let base = CausalLm::load(&source, &config, device, DType::F32).unwrap();
    let l2d = L2dConfig::from_file(dir.join("l2d_config.json")).unwrap();
    let path = DiffusionPath::load(
        dir.join("adapter.safetensors"),
        &base,
        &AdapterLoadOptions {
            config: Some(l2d),
            force: false,
        },
    )
    .unwrap();
    (base, path)
}

/// Names of the float parameters of `module` that have a gradient in `grads`.
fn with_grad<M: Module>(module: &M, grads: &burn::tensor::Gradients) -> Vec<(String, f64, bool)> {
    struct V<'a> {
        stack: Vec<String>,
        grads: &'a burn::tensor::Gradients,
        out: Vec<(String, f64, bool)>,
    }
    impl ModuleVisitor for V<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.stack.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = param.val().grad(self.grads) {
                let v: Vec<f32> = g.into_data().convert::<f32>().try_to_vec().unwrap();
                let finite = v.iter().all(|x| x.is_finite());
                let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
                self.out.push((self.stack.join("."), norm, finite));
            }
        }
    }
    let mut v = V {
        stack: Vec::new(),
        grads,
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

struct LossCase {
    ids: Vec<i64>,
    labels: Vec<i64>,
    noise: (Vec<usize>, Vec<f64>),
    timesteps: Vec<f64>,
    loss: f64,
    b: usize,
    s: usize,
}

fn loss_case() -> LossCase {
    loss_case_named("llama-tiny")
}

fn loss_case_named(name: &str) -> LossCase {
    let cases = read_cases(&fixture_named(name).join("cases.safetensors"));
    let (shape, ids) = cases["loss.input_ids"].clone();
    LossCase {
        ids: ids.iter().map(|&x| x as i64).collect(),
        labels: cases["loss.labels"].1.iter().map(|&x| x as i64).collect(),
        noise: cases["loss.noise"].clone(),
        timesteps: cases["loss.timesteps"].1.clone(),
        loss: cases["loss.loss"].1[0],
        b: shape[0],
        s: shape[1],
    }
}

/// The case as the training pipeline sees it: shifted labels (`labels[i+1]` at `i`, the last
/// position unscored), noise padded with a zero row for the last position.
fn shifted_batch(case: &LossCase, device: &Device) -> (l2d_train::data::Batch, MicroNoise) {
    let (b, s) = (case.b, case.s);
    let examples: Vec<TokenizedExample> = (0..b)
        .map(|r| {
            let row = &case.ids[r * s..(r + 1) * s];
            let lab = &case.labels[r * s..(r + 1) * s];
            let mut shifted: Vec<i64> = lab[1..].to_vec();
            shifted.push(IGNORE_INDEX);
            TokenizedExample {
                input_ids: row.iter().map(|&t| t as u32).collect(),
                labels: shifted,
                class_id: None,
                conversation: r,
            }
        })
        .collect();
    let refs: Vec<&TokenizedExample> = examples.iter().collect();
    let batch = collate(&refs, 0, device);
    let d = case.noise.0[2];
    let mut padded = Vec::with_capacity(b * s * d);
    for r in 0..b {
        padded.extend_from_slice(&case.noise.1[r * (s - 1) * d..(r + 1) * (s - 1) * d]);
        padded.extend(std::iter::repeat_n(0.0, d));
    }
    let noise = MicroNoise {
        timesteps: Tensor::from_data(TensorData::new(case.timesteps.clone(), [b, s]), device),
        noise: Tensor::from_data(TensorData::new(padded, [b, s, d]), device),
        classes: None,
    };
    (batch, noise)
}

#[test]
fn one_training_step_reproduces_the_reference_loss_and_trains_only_the_diffusion_path() {
    let device = Device::flex();
    let case = loss_case();
    let (base, path) = load(&device);
    let path = trainable(path, &device);

    // The reference's own alignment (unshifted labels, given noise), through the path.
    let unshifted = path
        .loss(
            &base,
            LossInputs {
                input_ids: Tensor::<2, Int>::from_data(
                    TensorData::new(case.ids.clone(), [case.b, case.s]),
                    &device,
                ),
                labels: Tensor::<2, Int>::from_data(
                    TensorData::new(case.labels.clone(), [case.b, case.s]),
                    &device,
                ),
                alignment: LabelAlignment::Unshifted,
                timesteps: Some(Tensor::from_data(
                    TensorData::new(case.timesteps.clone(), [case.b, case.s]),
                    &device,
                )),
                noise: Some(Tensor::from_data(
                    TensorData::new(case.noise.1.clone(), case.noise.0.clone()),
                    &device,
                )),
                class_labels: None,
                options: ForwardOptions::default(),
            },
            None,
        )
        .unwrap()
        .loss
        .into_scalar::<f32>();
    let rel = |x: f64| (x - case.loss).abs() / case.loss.abs();
    assert!(
        rel(f64::from(unshifted)) < 1e-5,
        "{unshifted} vs {}",
        case.loss
    );

    // The training pipeline: shifted labels, a collated batch with its attention mask.
    let (batch, noise) = shifted_batch(&case, &device);
    let outcome = forward_backward(&path, &base, loss_inputs(&batch, noise), 1.0).unwrap();
    println!(
        "pipeline loss {} reference {} (rel {:.2e})",
        outcome.loss,
        case.loss,
        rel(outcome.loss)
    );
    assert!(
        rel(outcome.loss) < 1e-5,
        "{} vs {}",
        outcome.loss,
        case.loss
    );
    let scored = case
        .labels
        .iter()
        .enumerate()
        .filter(|(i, l)| i % case.s != 0 && **l != IGNORE_INDEX)
        .count();
    assert_eq!(outcome.scored, scored);
    let grads = outcome.grads.expect("a finite loss is backpropagated");

    // No gradient on any frozen tensor.
    assert!(with_grad(&base, &grads).is_empty());
    // A finite, non-zero gradient on every diffusion-path tensor but the final gate's bias.
    let names = gated_names(&path);
    let got = with_grad(&path, &grads);
    assert_eq!(
        got.iter().map(|g| g.0.clone()).collect::<Vec<_>>(),
        names.iter().map(|n| n.0.clone()).collect::<Vec<_>>(),
        "every diffusion-path tensor but the final gate's bias has a gradient"
    );
    for (name, norm, finite) in &got {
        assert!(
            *finite && *norm > 0.0,
            "{name}: norm {norm}, finite {finite}"
        );
    }
    println!(
        "{} diffusion-path tensors, all with finite non-zero gradients",
        got.len()
    );

    // One optimizer step: state for exactly the diffusion path's tensors.
    let mut buffer = GradientBuffer::new();
    assert_eq!(buffer.accumulate(&path, &grads, 1.0), names.len());
    let mut adam = AdamW::new(AdamWConfig::default());
    let before = path.clone().valid();
    let after = adam.step(path, 1e-3, &mut buffer);
    let mut expected: Vec<String> = names.iter().map(|n| n.0.clone()).collect();
    expected.sort();
    assert_eq!(adam.state_names(), expected);
    assert_eq!(
        adam.state_elements(),
        2 * names
            .iter()
            .map(|n| n.1.iter().product::<usize>())
            .sum::<usize>()
    );
    // Every tensor moved but the final gate's bias, which has no gradient.
    let a = before.reference_tensors().unwrap();
    let b = after.valid().reference_tensors().unwrap();
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        if name == "model.modulation_head.mlp.2.bias" {
            assert_eq!(x.as_bytes(), y.as_bytes(), "{name} changed");
        } else {
            assert_ne!(x.as_bytes(), y.as_bytes(), "{name} did not change");
        }
    }
}

#[test]
fn a_base_on_the_autodiff_device_with_gradients_off_gets_none_either() {
    let device = Device::flex();
    let case = loss_case();
    let (base, path) = load(&device);
    let ad = device.clone().autodiff();
    // Every base weight becomes an autodiff tensor that does not require a gradient.
    struct OnAutodiff;
    impl burn::module::ModuleMapper for OnAutodiff {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, t, mapper) = param.consume();
            Param::from_mapped_value(id, Tensor::from_inner(t), mapper)
        }
    }
    let base = base.map(&mut OnAutodiff);
    assert!(base.model.embed_tokens.weight.val().is_autodiff());
    assert!(!base.model.embed_tokens.weight.val().is_require_grad());
    let path = trainable(path, &device);
    let (batch, noise) = shifted_batch(&case, &ad);
    let outcome = forward_backward(&path, &base, loss_inputs(&batch, noise), 1.0).unwrap();
    assert!((outcome.loss - case.loss).abs() / case.loss < 1e-5);
    let grads = outcome.grads.unwrap();
    assert!(with_grad(&base, &grads).is_empty());
    assert_eq!(with_grad(&path, &grads).len(), gated_names(&path).len());
}

/// The name of the final gate's output bias, which cancels in `head(c_t) - head(c_0)` and so
/// is left out of the computation (the reference's gradient for it is exactly zero).
const FINAL_GATE_BIAS: &str = "modulation_head.mlp.layers.1.bias";

/// [`parameter_names`] of `path` without [`FINAL_GATE_BIAS`] (which must be among them).
fn gated_names(path: &DiffusionPath) -> Vec<(String, Vec<usize>, bool)> {
    let all = parameter_names(path);
    assert!(
        all.iter().any(|n| n.0 == FINAL_GATE_BIAS),
        "no `{FINAL_GATE_BIAS}` in {:?}",
        all.iter().map(|n| &n.0).collect::<Vec<_>>()
    );
    all.into_iter().filter(|n| n.0 != FINAL_GATE_BIAS).collect()
}

/// The reference excludes parameters whose name contains `bias`, `ln` or `LayerNorm` from
/// weight decay; of the diffusion path's parameters exactly the biases match.
#[test]
fn weight_decay_exclusions_are_exactly_the_biases() {
    let (_base, path) = load(&Device::flex());
    let config = AdamWConfig::default();
    let names = parameter_names(&path);
    for (name, shape, _) in &names {
        let is_bias = name.ends_with("bias");
        assert_eq!(!config.decays(name), is_bias, "{name} {shape:?}");
        if is_bias {
            assert_eq!(shape.len(), 1, "{name}");
        }
    }
    assert!(names.iter().any(|n| n.0.ends_with("bias")));
}

/// The reference loss through the path, with the reference's own (unshifted) alignment and
/// the case's noise and timesteps.
fn reference_loss_inputs(case: &LossCase, device: &Device) -> LossInputs {
    let (b, s) = (case.b, case.s);
    LossInputs {
        input_ids: Tensor::<2, Int>::from_data(TensorData::new(case.ids.clone(), [b, s]), device),
        labels: Tensor::<2, Int>::from_data(TensorData::new(case.labels.clone(), [b, s]), device),
        alignment: LabelAlignment::Unshifted,
        timesteps: Some(Tensor::from_data(
            TensorData::new(case.timesteps.clone(), [b, s]),
            device,
        )),
        noise: Some(Tensor::from_data(
            TensorData::new(case.noise.1.clone(), case.noise.0.clone()),
            device,
        )),
        class_labels: None,
        options: ForwardOptions::default(),
    }
}

/// Every parameter of `path` replaced by its gradient (zero where it has none), so that
/// [`DiffusionPath::reference_tensors`] names and lays the gradients out as the reference.
fn gradients_as_path(path: &DiffusionPath, grads: &burn::tensor::Gradients) -> DiffusionPath {
    struct ToGrad<'a>(&'a burn::tensor::Gradients);
    impl burn::module::ModuleMapper for ToGrad<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, t, mapper) = param.consume();
            let g = t.grad(self.0).unwrap_or_else(|| t.inner().zeros_like());
            Param::from_mapped_value(id, g, mapper)
        }
    }
    path.clone().map(&mut ToGrad(grads))
}

/// The gradient of the training loss on every diffusion-path tensor equals the authors'
/// code's (`scripts/make_grad_reference.py` replays the `loss` case through the reference's
/// own training forward and backpropagates it), for both architectures: a loss that matches
/// but trains differently would show here.
#[test]
fn gradients_match_the_reference_code_on_every_diffusion_tensor() {
    let device = Device::flex();
    for name in ["llama-tiny", "qwen2-tiny"] {
        let case = loss_case_named(name);
        let (base, path) = load_named(name, &device);
        let path = trainable(path, &device);
        let out = path
            .loss(&base, reference_loss_inputs(&case, &device), None)
            .unwrap();
        let grads = out.loss.backward();
        let ours = gradients_as_path(&path, &grads)
            .reference_tensors()
            .unwrap();
        let reference = read_cases(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/reference-grads")
                .join(format!("{name}.safetensors")),
        );
        assert_eq!(
            ours.len() + 1,
            reference.len(),
            "{name}: every reference gradient (and the loss) is compared"
        );
        let mut worst = (0.0f64, String::new());
        for (key, data) in &ours {
            let (shape, want) = reference
                .get(key)
                .unwrap_or_else(|| panic!("{name}: no reference gradient for {key}"));
            assert_eq!(&data.shape().to_vec(), shape, "{name} {key}");
            let got: Vec<f32> = data.clone().convert::<f32>().try_to_vec().unwrap();
            let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
            let diff = got
                .iter()
                .zip(want)
                .fold(0f64, |m, (g, w)| m.max((f64::from(*g) - w).abs()));
            // Relative to the tensor's largest gradient; an all-zero reference gradient must
            // be all zero here too.
            let rel = if scale > 0.0 { diff / scale } else { diff };
            assert!(
                rel < 1e-4,
                "{name} {key}: gradient differs by {rel:.3e} (largest |g| {scale:.3e})"
            );
            if rel > worst.0 {
                worst = (rel, key.clone());
            }
        }
        println!(
            "{name}: {} gradients match the reference; worst {:.2e} at {}",
            ours.len(),
            worst.0,
            worst.1
        );
    }
}
