//! The demo's diffusion path: its training examples score the answer digits only, training
//! reduces the loss (deterministically), and the evaluation through the diffusion `Generator`
//! reproduces the base model exactly for a fresh (gated-off) path.

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use l2d::demo::ToyDiffusionPath;
use l2d::demo::diffusion::{diffusion_answers, diffusion_exact_match};
use l2d::demo::{
    DiffusionTrainConfig, DigitTask, PretrainConfig, TinyLlama, greedy_answers, pretrain,
    train_diffusion,
};
use l2d_core::HostRng;
use l2d_models::decoder::CausalLm;
use l2d_models::diffusion::{DiffusionPath, diffusion_param_count};
use l2d_models::generation::DiffusionOptions;
use l2d_solvers::Method;
use l2d_train::data::collate;
use l2d_train::step::{loss_inputs, sample_noise};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn tiny() -> TinyLlama {
    TinyLlama {
        hidden: 16,
        layers: 1,
        heads: 2,
        kv_heads: 1,
        intermediate: 32,
    }
}

fn tiny_path() -> ToyDiffusionPath {
    ToyDiffusionPath {
        mapping_dim: 8,
        lora_rank: 2,
        frequency_dim: 16,
        ..ToyDiffusionPath::default()
    }
}

#[test]
fn the_toy_configuration_builds_the_toy_references_path() {
    // The toy reference's 6-digit row: 58,592 parameters, every one in the built module.
    let base_config = TinyLlama::default().model_config().unwrap();
    let config = ToyDiffusionPath::default().l2d_config();
    assert_eq!(
        diffusion_param_count(&config, &base_config)
            .unwrap()
            .total(),
        58_592
    );
    let base = CausalLm::random(&base_config, &Device::flex(), DType::F32, 0);
    let path = DiffusionPath::init(&config, &base, 0).unwrap();
    use burn::module::Module;
    assert_eq!(path.num_params(), 58_592);
    assert_eq!(config.flow_lora_rank, 8);
    assert_eq!(config.lora_scale(), 1.0);
    assert_eq!(config.noise_rescaling, 64.0);
    assert!(config.preserve_behavior_at_flow_start && config.full_dit_modulation);
}

#[test]
fn the_tasks_training_examples_score_exactly_the_answer_digits() {
    let task = DigitTask::addition(3).unwrap();
    let problems: Vec<_> = (0..5)
        .map(|_| task.sample_train(&mut ChaCha8Rng::seed_from_u64(4)))
        .chain([l2d::demo::Problem { a: 999, b: 1 }])
        .collect();
    let batch = task.batch(&problems, &Device::flex());
    let inputs: Vec<i64> = batch.inputs.into_data().iter::<i64>().collect();
    let answers: Vec<i64> = batch.answers.into_data().iter::<i64>().collect();
    let (s, len, prompt) = (task.seq_len() - 1, task.answer_len(), task.prompt_len());
    for (r, e) in task.examples(&problems).iter().enumerate() {
        let ids: Vec<i64> = e.input_ids.iter().map(|&t| i64::from(t)).collect();
        assert_eq!(ids, inputs[r * s..(r + 1) * s]);
        // Shifted labels: position j predicts token j + 1; only the answer digits count.
        assert!(e.labels[..prompt - 1].iter().all(|&l| l == -100));
        assert_eq!(e.labels[prompt - 1..], answers[r * len..(r + 1) * len]);
    }
    // 999 + 1 = 1000: the answer digits are 1, 0, 0, 0.
    assert_eq!(
        task.examples(&problems)[5].labels[prompt - 1..],
        [1, 0, 0, 0]
    );
}

/// The answer loss of `path` on a fixed batch with fixed draws: `t` uniform per position, or
/// every `t` equal to `fixed_t`.
fn held_out_loss(
    path: &DiffusionPath,
    base: &CausalLm,
    task: &DigitTask,
    fixed_t: Option<f32>,
) -> f32 {
    let device = Device::flex();
    let mut data = ChaCha8Rng::seed_from_u64(99);
    let problems: Vec<_> = (0..256).map(|_| task.sample_train(&mut data)).collect();
    let examples = task.examples(&problems);
    let batch = collate(&examples.iter().collect::<Vec<_>>(), 0, &device);
    let mut noise = sample_noise(path, &batch, &mut HostRng::new(98), &device);
    if let Some(t) = fixed_t {
        noise.timesteps = Tensor::full(batch.dims(), t, &device);
    }
    path.loss(base, loss_inputs(&batch, noise), None)
        .unwrap()
        .loss
        .into_scalar::<f32>()
}

#[test]
fn a_few_diffusion_steps_reduce_the_loss_deterministically() {
    let device = Device::flex();
    let task = DigitTask::addition(2).unwrap();
    let base = pretrain(
        &task,
        &PretrainConfig {
            model: tiny(),
            steps: 30,
            batch_size: 32,
            seed: 3,
            ..PretrainConfig::default()
        },
        &device,
        |_, _| {},
    )
    .unwrap()
    .model;
    let config = DiffusionTrainConfig {
        path: tiny_path(),
        steps: 150,
        batch_size: 64,
        lr: 1e-2,
        seed: 4,
        data_seed: 5,
        ..DiffusionTrainConfig::default()
    };
    let mut seen = 0;
    let run = train_diffusion(&base, &task, &config, &device, |_, _| seen += 1).unwrap();
    assert_eq!(seen, 150);
    assert_eq!(run.losses.len(), 150);
    // The initial path (same seed) is gated off: its loss is the frozen base's at every t.
    let fresh = DiffusionPath::init(&config.path.l2d_config(), &base, config.seed).unwrap();
    let (before, after) = (
        held_out_loss(&fresh, &base, &task, None),
        held_out_loss(&run.path, &base, &task, None),
    );
    assert!(after < before - 0.003, "uniform t: {before} -> {after}");
    assert_eq!(held_out_loss(&fresh, &base, &task, Some(0.99)), before);
    // Near t = 1 the flow state carries the answer and the path has learnt to read it.
    let late = held_out_loss(&run.path, &base, &task, Some(0.99));
    assert!(late < before - 0.04, "t = 0.99: {before} -> {late}");
    // The training losses went down too.
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
    assert!(mean(&run.losses[120..]) < mean(&run.losses[..30]));
    // The trained path comes back on the plain device.
    struct Devices(Vec<bool>);
    impl burn::module::ModuleVisitor for Devices {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            self.0.push(param.val().device().is_autodiff());
        }
    }
    let mut autodiff = Devices(Vec::new());
    burn::module::Module::visit(&run.path, &mut autodiff);
    assert!(!autodiff.0.is_empty());
    assert!(autodiff.0.iter().all(|&a| !a));

    let again = train_diffusion(&base, &task, &config, &device, |_, _| {}).unwrap();
    assert_eq!(run.losses, again.losses);

    let invalid = DiffusionTrainConfig {
        batch_size: 0,
        ..config
    };
    let err = train_diffusion(&base, &task, &invalid, &device, |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
}

#[test]
fn a_fresh_path_answers_exactly_as_the_base_model() {
    // A fresh path's gate `head(t) - head(0)` is zero at every t: whatever the solver, L2D's
    // greedy answers are the frozen model's, through the whole generation path.
    let device = Device::flex();
    let task = DigitTask::addition(2).unwrap();
    let base = pretrain(
        &task,
        &PretrainConfig {
            model: tiny(),
            steps: 60,
            batch_size: 64,
            seed: 6,
            ..PretrainConfig::default()
        },
        &device,
        |_, _| {},
    )
    .unwrap()
    .model;
    let path = DiffusionPath::init(&tiny_path().l2d_config(), &base, 7).unwrap();
    let problems = task
        .test_set(24, &mut ChaCha8Rng::seed_from_u64(8))
        .unwrap();
    let expected = greedy_answers(&base, &task, &problems, 10);
    for options in [
        DiffusionOptions::fixed(3).with_method(Method::Euler),
        DiffusionOptions::fixed(2),
        DiffusionOptions::adaptive(Method::Bosh3, 1e-3, 1e-3),
    ] {
        let (answers, stats) =
            diffusion_answers(&base, &path, &task, &problems, &options, 10).unwrap();
        assert_eq!(answers, expected, "{options:?}");
        // Three batches (10, 10, 4 problems), one stats entry per answer digit each.
        assert_eq!(stats.len(), 3);
        assert!(stats.iter().all(|s| s.tokens.len() == task.answer_len()));
    }
    let eval = diffusion_exact_match(
        &base,
        &path,
        &task,
        &problems,
        &DiffusionOptions::fixed(4).with_method(Method::Euler),
        24,
    )
    .unwrap();
    // Euler with 4 intervals: 4 solver evaluations + the final one; the first is fused.
    assert_eq!(eval.cost.nfe, 5.0);
    assert_eq!(eval.cost.forwards, 4.0);
    assert_eq!(eval.cost.accepted_steps, 4.0);
    assert_eq!(eval.cost.rejected_steps, 0.0);
    assert_eq!(eval.result.total, 24);
}

/// Greedy answers by a direct Euler loop written from the method's definition (no solver
/// crate, no velocity field, no key/value cache): per answer digit, the frozen pass over the
/// whole sequence so far, then `x ← x + (x̂₁ - x)/(1 - t)·Δt` from the given noise with
/// `x̂₁` the argmax token's flow representation, then the argmax of the logits at `t = 1`.
fn direct_euler_answers(
    base: &CausalLm,
    path: &DiffusionPath,
    prompts: &[Vec<u32>],
    answer_len: usize,
    steps: usize,
    noise: &[Vec<Vec<f64>>],
) -> Vec<Vec<u32>> {
    use l2d_models::decoder::ForwardOptions;
    use l2d_models::diffusion::{FlowContext, Timesteps};
    let device = Device::flex();
    let b = prompts.len();
    let d = path.flow_dim();
    let table = path.vocabulary_table(base).cast(DType::F64);
    let mut seqs: Vec<Vec<u32>> = prompts.to_vec();
    for token_noise in noise.iter().take(answer_len) {
        let len = seqs[0].len();
        let ids: Vec<i64> = seqs.iter().flatten().map(|&t| t as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, len]), &device);
        let frozen = base.frozen_forward(ids, &ForwardOptions::default());
        let context = FlowContext::from_frozen(&frozen).last_query();
        let x0: Vec<f64> = token_noise.iter().flatten().copied().collect();
        let mut x = Tensor::<3>::from_data(TensorData::new(x0, [b, 1, d]), (&device, DType::F64));
        let dt = 1.0 / steps as f64;
        for i in 0..steps {
            let t = i as f64 * dt;
            let logits = path
                .forward_cached(base, &context, x.clone(), &Timesteps::Scalar(t), None)
                .unwrap();
            let best = logits.argmax(2).reshape([b]);
            let x1 = table.clone().select(0, best).reshape([b, 1, d]);
            let v = (x1 - x.clone()).div_scalar(1.0 - t);
            x = x + v.mul_scalar(dt);
        }
        let logits = path
            .forward_cached(base, &context, x, &Timesteps::Scalar(1.0), None)
            .unwrap();
        let next: Vec<i64> = logits.argmax(2).into_data().iter::<i64>().collect();
        for (s, &n) in seqs.iter_mut().zip(&next) {
            s.push(n as u32);
        }
    }
    seqs.iter()
        .map(|s| s[s.len() - answer_len..].to_vec())
        .collect()
}

#[test]
fn generator_answers_equal_a_direct_euler_loop_on_a_path_that_matters() {
    use l2d_models::generation::{Flow, GenerationConfig, Generator, generate};
    let device = Device::flex();
    let task = DigitTask::addition(2).unwrap();
    let base = pretrain(
        &task,
        &PretrainConfig {
            model: tiny(),
            steps: 60,
            batch_size: 64,
            seed: 6,
            ..PretrainConfig::default()
        },
        &device,
        |_, _| {},
    )
    .unwrap()
    .model;
    // A path whose every part is non-zero: it changes the model's answers.
    let path = DiffusionPath::init(&tiny_path().l2d_config(), &base, 7)
        .unwrap()
        .with_random_parameters(8, 0.3);
    let problems = task
        .test_set(12, &mut ChaCha8Rng::seed_from_u64(9))
        .unwrap();
    let prompts: Vec<Vec<u32>> = problems.iter().map(|p| task.prompt_tokens(p)).collect();
    let (b, d, len) = (prompts.len(), path.flow_dim(), task.answer_len());
    let mut rng = HostRng::new(10);
    let noise: Vec<Vec<Vec<f64>>> = (0..len)
        .map(|_| {
            (0..b)
                .map(|_| rng.normal_vec(d).iter().map(|z| 64.0 * z).collect())
                .collect()
        })
        .collect();
    let flat: Vec<f64> = noise.iter().flatten().flatten().copied().collect();
    let noise_tensor =
        Tensor::<3>::from_data(TensorData::new(flat, [len, b, d]), (&device, DType::F64));
    let base_answers = greedy_answers(&base, &task, &problems, b);
    for steps in [1, 3, 6] {
        let generator = Generator::new(
            &base,
            Some(&path),
            DiffusionOptions::fixed(steps).with_method(Method::Euler),
        )
        .unwrap();
        let mut step = generator
            .step()
            .with_initial_noise(noise_tensor.clone())
            .unwrap();
        let out = generate(
            &mut step,
            None,
            &prompts,
            &GenerationConfig::greedy(len),
            |_| Flow::Continue,
        )
        .unwrap();
        let ours: Vec<Vec<u32>> = out.sequences.into_iter().map(|s| s.tokens).collect();
        let direct = direct_euler_answers(&base, &path, &prompts, len, steps, &noise);
        assert_eq!(ours, direct, "Euler {steps}");
        assert_ne!(ours, base_answers, "the path must change the answers");
    }
}
