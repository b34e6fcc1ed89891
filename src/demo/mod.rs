//! The embedded demo: a tiny Llama trained from scratch on multi-digit addition, frozen, then
//! finetuned two ways (the L2D diffusion path, and plain LoRA of equal size as the paper's
//! baseline), with greedy exact-match evaluation on held-out problems. No download, a few
//! minutes on 2 CPU cores (`cargo run --release --example quickstart`).
//!
//! The set-up follows what the authors' code was measured on at toy scale
//! (`docs/toy-scale-reference.md` in the project notes): 6-digit addition, hidden 48, 2
//! layers, 4 heads, 2 key/value heads, intermediate 96, untied head; base AdamW lr 3e-3, weight
//! decay 0.01, batch 128, 400 steps; finetuning AdamW lr 1e-3, β (0.9, 0.95), 3000 steps.
//!
//! - [`task`]: the tasks (addition, multiplication, a modular sum, a permutation product),
//!   the tokenizer, the held-out split and batches.
//! - [`pretrain`](mod@pretrain): full-parameter training of the base model.
//! - [`evaluate`]: greedy decoding of the answers and exact match.
//! - [`lora`]: the plain-LoRA baseline (`l2d train --method lora`'s adapter).
//! - [`analysis`]: diagnostics of a trained diffusion path.
//! - [`diffusion`]: the L2D diffusion path's configuration, training and evaluation.
//! - [`pipeline`]: the whole demo (base, LoRA, L2D at several step counts, an adaptive
//!   solver), its table, JSON report and plot.
//! - [`scaling`]: a run's accuracy against the solver's steps (the test-time scaling curve).

pub mod analysis;
pub mod diffusion;
pub mod evaluate;
pub mod lora;
pub mod pipeline;
pub mod pretrain;
pub mod scaling;
pub mod task;

use l2d_models::config::{ConfigError, ModelConfig};
use serde::{Deserialize, Serialize};

pub use diffusion::{
    DiffusionEval, DiffusionTrainConfig, ToyDiffusionPath, TrainedDiffusion, train_diffusion,
};
pub use evaluate::{EvalResult, greedy_answers, greedy_exact_match};
pub use lora::{LoraBaseline, LoraConfig, train_lora};
pub use pretrain::{PretrainConfig, Pretrained, pretrain};
pub use task::{DigitTask, DigitTokenizer, Problem, TaskKind};

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A configuration field is out of range.
    #[error("invalid demo config field `{field}`: {reason}")]
    InvalidConfig {
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Text or ids outside the task's 13-token vocabulary.
    #[error("not in the addition vocabulary: {what}")]
    Tokenize {
        /// The offending character or id and where it is.
        what: String,
    },
    /// The model configuration was rejected.
    #[error(transparent)]
    Model(#[from] ConfigError),
    /// The diffusion path rejected its configuration or inputs.
    #[error(transparent)]
    Diffusion(#[from] l2d_models::diffusion::DiffusionError),
    /// Diffusion generation failed.
    #[error("diffusion generation failed: {0}")]
    Generation(String),
    /// A training step of `l2d train`'s machinery failed.
    #[error(transparent)]
    Train(#[from] l2d_train::TrainError),
    /// A model or weight file given to the demo could not be read or does not fit.
    #[error("cannot load `{path}`: {reason}")]
    Load {
        /// The file or folder.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A report or plot could not be written.
    #[error("cannot write `{path}`: {reason}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The training loss became NaN or infinite.
    #[error("{phase}: non-finite loss {loss} at step {step}")]
    NonFiniteLoss {
        /// `pretrain`, `lora` or `diffusion`.
        phase: &'static str,
        /// The step.
        step: usize,
        /// The loss.
        loss: f32,
    },
}

impl DemoError {
    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        DemoError::InvalidConfig {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// The tiny Llama's shape. The default is the toy reference's demo candidate: hidden 48,
/// 2 layers, 4 heads, 2 key/value heads, intermediate 96, untied head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TinyLlama {
    /// Hidden size.
    pub hidden: usize,
    /// Number of decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// MLP intermediate size.
    pub intermediate: usize,
}

impl Default for TinyLlama {
    fn default() -> Self {
        Self {
            hidden: 48,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            intermediate: 96,
        }
    }
}

impl TinyLlama {
    /// The Hugging Face `config.json` of this model for a vocabulary of `vocab_size` tokens
    /// (transformers' `LlamaConfig` defaults otherwise: RMSNorm ε 1e-6, RoPE θ 10000).
    pub fn config_json(&self, vocab_size: usize) -> serde_json::Value {
        serde_json::json!({
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "vocab_size": vocab_size,
            "max_position_embeddings": 128,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": false,
            "bos_token_id": task::DigitTokenizer::BOS,
        })
    }

    /// The validated [`ModelConfig`] for the addition task's vocabulary
    /// ([`task::VOCAB_SIZE`]).
    ///
    /// # Errors
    /// [`DemoError::Model`] when the shape is inconsistent (e.g. heads not dividing hidden).
    pub fn model_config(&self) -> Result<ModelConfig, DemoError> {
        self.model_config_for(task::VOCAB_SIZE)
    }

    /// The validated [`ModelConfig`] for a vocabulary of `vocab_size` tokens (a task's
    /// [`DigitTask::vocab_size`]).
    ///
    /// # Errors
    /// [`DemoError::Model`] when the shape is inconsistent (e.g. heads not dividing hidden).
    pub fn model_config_for(&self, vocab_size: usize) -> Result<ModelConfig, DemoError> {
        Ok(ModelConfig::from_value(&self.config_json(vocab_size))?)
    }
}

/// The optimizer of every demo training loop: `l2d train`'s AdamW (which replays torch's
/// step for step: `crates/l2d-train/tests/reference_training.rs`) with ε 1e-8, weight decay
/// on every tensor and no clipping, as torch's `AdamW` runs in the toy reference.
fn adamw(beta1: f32, beta2: f32, weight_decay: f32) -> l2d_train::optim::AdamW {
    l2d_train::optim::AdamW::new(l2d_train::optim::AdamWConfig {
        beta1: f64::from(beta1),
        beta2: f64::from(beta2),
        eps: 1e-8,
        weight_decay: f64::from(weight_decay),
        no_decay: Vec::new(),
        max_grad_norm: 0.0,
    })
}

/// One step of a demo training loop: reads the loss (one host read), refuses a non-finite one
/// naming `phase` and `step`, backpropagates it and lets `optim` update `module` at `lr`.
/// Returns the updated module and the loss.
///
/// # Errors
/// [`DemoError::NonFiniteLoss`].
fn descend<M: burn::module::Module>(
    phase: &'static str,
    step: usize,
    loss: burn::tensor::Tensor<1>,
    module: M,
    optim: &mut l2d_train::optim::AdamW,
    lr: f64,
) -> Result<(M, f32), DemoError> {
    let value = loss.clone().into_scalar::<f32>();
    if !value.is_finite() {
        return Err(DemoError::NonFiniteLoss {
            phase,
            step,
            loss: value,
        });
    }
    let mut grads = l2d_train::optim::GradientBuffer::new();
    grads.accumulate(&module, &loss.backward(), 1.0);
    Ok((optim.update(module, lr, &mut grads).module, value))
}

/// A finetuning loop (the diffusion path's, the LoRA baseline's): every step draws a batch of
/// `batch_size` training problems from `data`, runs it through `l2d-train`'s [`Stepper`]
/// (the objective's random inputs drawn from `rng`) and updates at `lr`; a non-finite loss is
/// refused naming `phase` and the step.
///
/// [`Stepper`]: l2d_train::stepper::Stepper
struct Finetune<'a> {
    /// `diffusion` or `lora`, for the error.
    phase: &'static str,
    task: &'a DigitTask,
    steps: usize,
    batch_size: usize,
    lr: f64,
    /// The problems' generator ([`task::finetune_data_rng`]).
    data: rand_chacha::ChaCha8Rng,
    rng: l2d_core::HostRng,
}

impl Finetune<'_> {
    /// Trains `adapter` with `adam` beside the frozen `base` on `device` (autodiff);
    /// `on_step(step, loss)` after every step. Returns the adapter on the plain device and
    /// every step's loss.
    ///
    /// # Errors
    /// The objective's errors; [`DemoError::NonFiniteLoss`].
    fn run<O: l2d_train::objective::Objective>(
        mut self,
        adapter: O,
        adam: l2d_train::optim::AdamW,
        base: &l2d_models::decoder::CausalLm,
        device: &burn::tensor::Device,
        mut on_step: impl FnMut(usize, f32),
    ) -> Result<(O, Vec<f32>), DemoError> {
        let mut stepper = l2d_train::stepper::Stepper::new(adapter, adam, device);
        let plain = device.clone().without_autodiff();
        let mut losses = Vec::with_capacity(self.steps);
        for step in 0..self.steps {
            let batch = self
                .task
                .finetune_batch(self.batch_size, &mut self.data, &plain);
            let micro = stepper.micro_step(base, &batch, &mut self.rng, 1.0)?;
            let loss = micro.loss as f32;
            if !micro.accumulated {
                return Err(DemoError::NonFiniteLoss {
                    phase: self.phase,
                    step,
                    loss,
                });
            }
            stepper.update(self.lr);
            losses.push(loss);
            on_step(step, loss);
        }
        Ok((stepper.into_adapter().valid(), losses))
    }
}
