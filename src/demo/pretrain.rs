//! Full-parameter training of the tiny base model from scratch, loss on answer digits only.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, Device, Int, Tensor};
use l2d_models::decoder::CausalLm;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::task::DigitTask;
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
    task: &DigitTask,
    config: &PretrainConfig,
    device: &Device,
    mut on_step: impl FnMut(usize, f32),
) -> Result<Pretrained, DemoError> {
    config.validate()?;
    let model_config = config.model.model_config_for(task.vocab_size())?;
    let start = Instant::now();
    let train_device = device.clone().autodiff();
    let mut model = CausalLm::random(&model_config, &train_device, DType::F32, config.seed);
    let mut optim = super::adamw(0.9, 0.999, config.weight_decay);
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

/// A frozen base from a Hugging Face folder (`config.json` and safetensors weights), in f32 on
/// `device`: for example one the authors' code trained. Its sizes must be those of `expected`
/// (the demo's model for the task).
///
/// # Errors
/// [`DemoError::Load`] naming the folder when it cannot be read, or holds a model of other
/// sizes.
pub fn load_base(
    dir: &std::path::Path,
    expected: &l2d_models::config::ModelConfig,
    device: &Device,
) -> Result<Pretrained, DemoError> {
    let err = |reason: String| DemoError::Load {
        path: dir.to_path_buf(),
        reason,
    };
    let start = Instant::now();
    let model = CausalLm::from_dir(dir, device, DType::F32).map_err(|e| err(e.to_string()))?;
    let c = model.config();
    let sizes = |c: &l2d_models::config::ModelConfig| {
        (
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.num_key_value_heads,
        )
    };
    if sizes(c) != sizes(expected) {
        return Err(err(format!(
            "(vocab, hidden, intermediate, layers, heads, kv heads) = {:?}, the demo's model \
             has {:?}",
            sizes(c),
            sizes(expected)
        )));
    }
    Ok(Pretrained {
        model: model.no_grad(),
        losses: Vec::new(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Writes `model` (of the demo's `shape`) to `dir` as a Hugging Face model: `config.json` and
/// `model.safetensors`, each written atomically.
///
/// # Errors
/// [`DemoError::Write`] naming the file that could not be written.
pub fn save_base(
    model: &CausalLm,
    shape: &TinyLlama,
    dir: &std::path::Path,
) -> Result<(), DemoError> {
    let write_err = |path: std::path::PathBuf, reason: String| DemoError::Write { path, reason };
    std::fs::create_dir_all(dir).map_err(|e| write_err(dir.to_path_buf(), e.to_string()))?;
    let config = dir.join("config.json");
    let json = serde_json::to_string_pretty(&shape.config_json(model.config().vocab_size))
        .unwrap_or_default();
    l2d_models::weights::write_atomically(&config, json.as_bytes())
        .map_err(|e| write_err(config.clone(), e.to_string()))?;
    let weights = dir.join("model.safetensors");
    model
        .save_safetensors(&weights)
        .map_err(|e| write_err(weights.clone(), e.to_string()))
}
