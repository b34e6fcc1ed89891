//! Full-parameter training of the tiny base model from scratch, loss on answer digits only.

use std::time::Instant;

use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, Device, Int, Tensor};
use l2d_models::decoder::CausalLm;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::task::AdditionTask;
use super::{DemoError, TinyLlama};

/// Stream of the data generator, apart from the model's initial weights.
const DATA_STREAM: u64 = 0x6461_7461;

/// Settings of the base model's training. Defaults: the toy reference's (AdamW lr 3e-3,
/// β (0.9, 0.999), ε 1e-8, weight decay 0.01, constant lr, batch 128, 400 steps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
    /// The model's shape.
    pub model: TinyLlama,
    /// Optimizer steps.
    pub steps: usize,
    /// Problems per step.
    pub batch_size: usize,
    /// Learning rate (constant).
    pub lr: f64,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Seed of the initial weights and of the training problems.
    pub seed: u64,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            model: TinyLlama::default(),
            steps: 400,
            batch_size: 128,
            lr: 3e-3,
            weight_decay: 0.01,
            seed: 0,
        }
    }
}

impl PretrainConfig {
    pub(crate) fn validate(&self) -> Result<(), DemoError> {
        if self.batch_size == 0 {
            return Err(DemoError::invalid("batch_size", "must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(DemoError::invalid(
                "lr",
                format!("{} is not positive", self.lr),
            ));
        }
        Ok(())
    }
}

/// A trained, frozen base model.
#[derive(Debug, Clone)]
pub struct Pretrained {
    /// The model on the plain (non-autodiff) device, every parameter frozen.
    pub model: CausalLm,
    /// The training loss of every step.
    pub losses: Vec<f32>,
    /// Wall time of the training, in seconds.
    pub seconds: f64,
}

/// Mean cross-entropy of the answer digits: the last `answers.dims()[1]` positions of
/// `logits` predict them.
///
/// # Shapes
/// - `logits`: `[batch, seq, vocab]`
/// - `answers`: `[batch, answer_len]` (`answer_len <= seq`)
/// - output: `[1]`
pub fn answer_loss(logits: Tensor<3>, answers: Tensor<2, Int>) -> Tensor<1> {
    let [_, seq, _] = logits.dims();
    let len = answers.dims()[1];
    let logp = log_softmax(logits.narrow(1, seq - len, len), 2);
    logp.gather(2, answers.unsqueeze_dim::<3>(2)).mean().neg()
}

/// Trains the base model of `config` on `task` from random weights (normal, std 0.02, as
/// transformers initialises Llama), on `device` with autodiff, then freezes it.
/// `on_step(step, loss)` is called after every step.
///
/// # Errors
/// [`DemoError`] for an invalid configuration or a non-finite loss.
pub fn pretrain(
    task: &AdditionTask,
    config: &PretrainConfig,
    device: &Device,
    mut on_step: impl FnMut(usize, f32),
) -> Result<Pretrained, DemoError> {
    config.validate()?;
    let model_config = config.model.model_config()?;
    let start = Instant::now();
    let train_device = device.clone().autodiff();
    let mut model = CausalLm::random(&model_config, &train_device, DType::F32, config.seed);
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .with_weight_decay(config.weight_decay)
        .init();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ DATA_STREAM);
    let mut losses = Vec::with_capacity(config.steps);
    for step in 0..config.steps {
        let batch = task.train_batch(config.batch_size, &mut rng, &train_device);
        let loss = answer_loss(model.forward(batch.inputs, None), batch.answers);
        let value;
        (model, value) = super::descend("pretrain", step, loss, model, &mut optim, config.lr)?;
        losses.push(value);
        on_step(step, value);
    }
    let model = model.valid().no_grad();
    Ok(Pretrained {
        model,
        losses,
        seconds: start.elapsed().as_secs_f64(),
    })
}
