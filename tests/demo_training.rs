//! Base-model training of the demo: the answer loss, that training reduces it, and greedy
//! decoding with a KV cache against decoding by full recomputation.

use burn::tensor::activation::softmax;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use l2d::demo::pretrain::answer_loss;
use l2d::demo::{DigitTask, PretrainConfig, TinyLlama, greedy_answers, pretrain};
use l2d_models::decoder::CausalLm;
use rand::{RngExt, SeedableRng};
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

#[test]
fn answer_loss_is_the_mean_cross_entropy_of_the_last_positions() {
    let device = Device::flex();
    let (b, s, v, a) = (3, 6, 5, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let logits: Vec<f32> = (0..b * s * v)
        .map(|_| rng.random_range(-3.0..3.0))
        .collect();
    let answers: Vec<i64> = (0..b * a).map(|_| rng.random_range(0..v as i64)).collect();
    // Host reference: -log softmax(logits[i, s - a + j])[answers[i, j]], averaged.
    let mut expected = 0.0f64;
    for i in 0..b {
        for j in 0..a {
            let pos = s - a + j;
            let row = &logits[(i * s + pos) * v..(i * s + pos + 1) * v];
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            expected += lse - row[answers[i * a + j] as usize] as f64;
        }
    }
    expected /= (b * a) as f64;
    let got = answer_loss(
        Tensor::<3>::from_data(TensorData::new(logits, [b, s, v]), &device),
        Tensor::<2, Int>::from_data(TensorData::new(answers, [b, a]), &device),
    )
    .into_scalar::<f32>() as f64;
    assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
}

#[test]
fn a_few_steps_of_pretraining_reduce_the_answer_loss() {
    let task = DigitTask::addition(2).unwrap();
    let config = PretrainConfig {
        model: tiny(),
        steps: 40,
        batch_size: 32,
        seed: 3,
        ..PretrainConfig::default()
    };
    let mut seen = 0;
    let run = pretrain(&task, &config, &Device::flex(), |_, _| seen += 1).unwrap();
    assert_eq!(seen, 40);
    assert_eq!(run.losses.len(), 40);
    let first: f32 = run.losses[..4].iter().sum::<f32>() / 4.0;
    let last: f32 = run.losses[36..].iter().sum::<f32>() / 4.0;
    // At random init the loss is about ln(13) = 2.56.
    assert!((first - 13f32.ln()).abs() < 0.3, "initial loss {first}");
    assert!(last < first - 0.4, "loss {first} -> {last}");

    // The same seed gives the same run.
    let again = pretrain(&task, &config, &Device::flex(), |_, _| {}).unwrap();
    assert_eq!(run.losses, again.losses);
    // The returned model is frozen on the plain device.
    assert!(!run.model.device().is_autodiff());
}

#[test]
fn invalid_pretraining_settings_are_typed_errors() {
    let task = DigitTask::addition(2).unwrap();
    let device = Device::flex();
    let bad_batch = PretrainConfig {
        batch_size: 0,
        ..PretrainConfig::default()
    };
    let err = pretrain(&task, &bad_batch, &device, |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
    let bad_heads = PretrainConfig {
        model: TinyLlama { heads: 5, ..tiny() },
        ..PretrainConfig::default()
    };
    let err = pretrain(&task, &bad_heads, &device, |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("num_attention_heads"), "{err}");
}

#[test]
fn cached_greedy_answers_equal_greedy_by_full_recomputation() {
    let task = DigitTask::addition(3).unwrap();
    let device = Device::flex();
    let config = tiny().model_config().unwrap();
    // Sharper random weights than the 0.02 default so the argmax is not a tie-break.
    let model = CausalLm::random(&config, &device, DType::F32, 5);
    let model = {
        use burn::module::Module;
        struct Scale;
        impl burn::module::ModuleMapper for Scale {
            fn map_float<const D: usize>(
                &mut self,
                p: burn::module::Param<Tensor<D>>,
            ) -> burn::module::Param<Tensor<D>> {
                p.map(|t| t.mul_scalar(40.0))
            }
        }
        model.map(&mut Scale)
    };
    let problems = task
        .test_set(37, &mut ChaCha8Rng::seed_from_u64(1))
        .unwrap();
    let cached = greedy_answers(&model, &task, &problems, 16);
    assert_eq!(cached.len(), problems.len());
    for (p, got) in problems.iter().zip(&cached) {
        let mut seq: Vec<i64> = task.prompt_tokens(p).iter().map(|&t| t as i64).collect();
        let mut expected = Vec::new();
        for _ in 0..task.answer_len() {
            let n = seq.len();
            let ids = Tensor::<2, Int>::from_data(TensorData::new(seq.clone(), [1, n]), &device);
            let probs = softmax(model.forward(ids, None).narrow(1, n - 1, 1), 2);
            let row: Vec<f32> = probs.into_data().iter::<f32>().collect();
            let best = (0..row.len())
                .max_by(|&i, &j| row[i].total_cmp(&row[j]))
                .unwrap();
            expected.push(best as u32);
            seq.push(best as i64);
        }
        assert_eq!(*got, expected, "problem {p:?}");
    }
}
