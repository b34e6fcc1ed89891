//! What a run trains, behind one trait: the L2D diffusion path ([`DiffusionPath`]) or the
//! LoRA baseline of the paper's comparisons ([`DecoderLora`]). The trainer owns everything
//! else (data order, accumulation, clipping, AdamW, the schedule, logging, validation cadence,
//! checkpoints and resume), so both are trained by exactly the same loop.

use std::path::Path;

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use l2d_core::HostRng;
use l2d_models::decoder::{CausalLm, DecoderDelta, ForwardOptions};
use l2d_models::diffusion::{AdapterLoadOptions, DiffusionPath};
use l2d_models::lora::DecoderLora;

use crate::config::TrainConfig;
use crate::data::encode::IGNORE_INDEX;
use crate::data::{Batch, TokenizedExample, collate};
use crate::error::{Result, TrainError};
use crate::memory::MemoryBreakdown;
use crate::step::{MicroOutcome, forward_backward, loss_inputs, sample_noise};
use crate::validation::{ValidationMetrics, ValidationOptions, evaluate};

/// A trainable adapter of a frozen base.
pub trait Objective: Module + Sized {
    /// What the run's log calls it.
    const NAME: &'static str;

    /// A fresh adapter (or `model.init_adapter`) for `base` as `config` describes it.
    ///
    /// # Errors
    /// Configuration and adapter-file errors.
    fn create(config: &TrainConfig, base: &CausalLm) -> Result<Self>;

    /// Loads an adapter file written by [`Objective::save`] (a checkpoint's).
    ///
    /// # Errors
    /// [`TrainError::Checkpoint`] naming the file.
    fn load(file: &Path, base: &CausalLm) -> Result<Self>;

    /// Writes the adapter file.
    ///
    /// # Errors
    /// [`TrainError::Checkpoint`] naming the file.
    fn save(&self, file: &Path, base: &CausalLm) -> Result<()>;

    /// One micro-batch: draw its random inputs from `rng`, compute the loss and, when it is
    /// finite, backpropagate `loss × loss_scale` into the adapter (on an autodiff device).
    ///
    /// # Errors
    /// Shape and configuration errors of the adapter.
    fn micro_step(
        &self,
        base: &CausalLm,
        batch: &Batch,
        rng: &mut HostRng,
        loss_scale: f64,
    ) -> Result<MicroOutcome>;

    /// Held-out metrics of the adapter (a copy without autodiff).
    ///
    /// # Errors
    /// Shape and solver errors.
    fn validate(
        &self,
        base: &CausalLm,
        examples: &[TokenizedExample],
        options: &ValidationOptions,
        device: &Device,
    ) -> Result<ValidationMetrics>;

    /// The analytic memory of a training step of `batch` sequences of `seq` tokens, when
    /// known.
    fn memory(&self, base: &CausalLm, batch: usize, seq: usize) -> Option<MemoryBreakdown>;
}

/// [`TrainError::Checkpoint`] naming `file`, for an adapter file that cannot be read or
/// written.
fn checkpoint_error<E: std::fmt::Display>(file: &Path) -> impl FnOnce(E) -> TrainError + '_ {
    move |e| TrainError::Checkpoint {
        path: file.to_path_buf(),
        reason: e.to_string(),
    }
}

impl Objective for DiffusionPath {
    const NAME: &'static str = "diffusion path";

    fn create(config: &TrainConfig, base: &CausalLm) -> Result<Self> {
        Ok(match &config.model.init_adapter {
            Some(file) => DiffusionPath::load(file, base, &AdapterLoadOptions::default())?,
            None => DiffusionPath::init(&config.l2d_config()?, base, config.seed)?,
        })
    }

    fn load(file: &Path, base: &CausalLm) -> Result<Self> {
        DiffusionPath::load(file, base, &AdapterLoadOptions::default())
            .map_err(checkpoint_error(file))
    }

    fn save(&self, file: &Path, base: &CausalLm) -> Result<()> {
        DiffusionPath::save(self, file, base).map_err(checkpoint_error(file))
    }

    fn micro_step(
        &self,
        base: &CausalLm,
        batch: &Batch,
        rng: &mut HostRng,
        loss_scale: f64,
    ) -> Result<MicroOutcome> {
        let device = batch.input_ids.device();
        let noise = sample_noise(self, batch, rng, &device);
        forward_backward(self, base, loss_inputs(batch, noise), loss_scale)
    }

    fn validate(
        &self,
        base: &CausalLm,
        examples: &[TokenizedExample],
        options: &ValidationOptions,
        device: &Device,
    ) -> Result<ValidationMetrics> {
        evaluate(&self.clone().valid(), base, examples, options, device)
    }

    fn memory(&self, base: &CausalLm, batch: usize, seq: usize) -> Option<MemoryBreakdown> {
        Some(MemoryBreakdown::estimate(base, self, batch, seq))
    }
}

impl Objective for DecoderLora {
    const NAME: &'static str = "LoRA";

    fn create(config: &TrainConfig, base: &CausalLm) -> Result<Self> {
        match &config.model.init_adapter {
            Some(file) => <Self as Objective>::load(file, base),
            None => {
                let lora = config.lora_config(base.config())?;
                DecoderLora::init(&lora, base, config.seed)
                    .map_err(|e| TrainError::config("lora", e.to_string()))
            }
        }
    }

    fn load(file: &Path, base: &CausalLm) -> Result<Self> {
        DecoderLora::load(file, base, false).map_err(checkpoint_error(file))
    }

    fn save(&self, file: &Path, base: &CausalLm) -> Result<()> {
        DecoderLora::save(self, file, base).map_err(checkpoint_error(file))
    }

    fn micro_step(
        &self,
        base: &CausalLm,
        batch: &Batch,
        _rng: &mut HostRng,
        loss_scale: f64,
    ) -> Result<MicroOutcome> {
        let Some((loss, _)) = lm_loss(base, Some(self), batch) else {
            return Ok(MicroOutcome {
                loss: f64::NAN,
                scored: 0,
                grads: None,
                token_losses: Vec::new(),
            });
        };
        let value = f64::from(loss.clone().into_scalar::<f32>());
        let grads = (value.is_finite() && loss.is_tracked())
            .then(|| loss.mul_scalar(loss_scale).backward());
        Ok(MicroOutcome {
            loss: value,
            scored: batch.num_scored,
            grads,
            token_losses: Vec::new(),
        })
    }

    fn validate(
        &self,
        base: &CausalLm,
        examples: &[TokenizedExample],
        options: &ValidationOptions,
        device: &Device,
    ) -> Result<ValidationMetrics> {
        let lora = self.clone().valid();
        let (mut total, mut tokens) = (0.0, 0usize);
        let (mut correct, mut base_correct) = (0usize, 0usize);
        let batches: Vec<&[TokenizedExample]> =
            examples.chunks(options.batch_size.max(1)).collect();
        let limit = match options.max_batches {
            0 => batches.len(),
            n => n.min(batches.len()),
        };
        for chunk in batches.into_iter().take(limit) {
            let refs: Vec<&TokenizedExample> = chunk.iter().collect();
            let batch = collate(&refs, options.pad_id, device);
            let Some((loss, logits)) = lm_loss(base, Some(&lora), &batch) else {
                continue;
            };
            total += f64::from(loss.into_scalar::<f32>()) * batch.num_scored as f64;
            tokens += batch.num_scored;
            correct += greedy_correct(logits, &batch);
            // The base's accuracy needs a forward of its own: once per run is enough.
            if options.known_base_accuracy.is_none()
                && let Some((_, base_logits)) = lm_loss(base, None, &batch)
            {
                base_correct += greedy_correct(base_logits, &batch);
            }
        }
        let rate = |c: usize| (tokens > 0).then(|| c as f64 / tokens as f64);
        Ok(ValidationMetrics {
            loss: if tokens > 0 {
                total / tokens as f64
            } else {
                f64::NAN
            },
            tokens,
            loss_by_t: Vec::new(),
            nstep_accuracy: None,
            accuracy: rate(correct),
            base_accuracy: options.known_base_accuracy.or_else(|| rate(base_correct)),
            accuracy_tokens: tokens,
        })
    }

    fn memory(&self, _base: &CausalLm, _batch: usize, _seq: usize) -> Option<MemoryBreakdown> {
        None
    }
}

/// The next-token cross-entropy of the (adapted) base on `batch`'s scored tokens, with the
/// logits of those tokens; `None` when nothing is scored. Logits are computed only for
/// scored positions.
///
/// # Shapes
/// - output: loss `[1]`, logits `[scored, vocab]`
pub fn lm_loss(
    base: &CausalLm,
    delta: Option<&dyn DecoderDelta>,
    batch: &Batch,
) -> Option<(Tensor<1>, Tensor<2>)> {
    let [b, s] = batch.dims();
    let (positions, labels): (Vec<i64>, Vec<i64>) = batch
        .host_labels
        .iter()
        .enumerate()
        .filter(|(_, l)| **l != IGNORE_INDEX)
        .map(|(i, &l)| (i as i64, l))
        .unzip();
    if positions.is_empty() {
        return None;
    }
    let n = positions.len();
    let device = batch.input_ids.device();
    let options = ForwardOptions {
        attention_mask: Some(batch.attention_mask.clone()),
        position_ids: None,
    };
    let (hidden, _) = base.forward_hidden_adapted(batch.input_ids.clone(), None, &options, delta);
    let d = hidden.dims()[2];
    let index = Tensor::<1, Int>::from_data(TensorData::new(positions, [n]), &device);
    let rows = hidden.reshape([b * s, d]).select(0, index);
    let logits: Tensor<2> = base
        .logits(rows.unsqueeze::<3>())
        .squeeze_dim::<2>(0)
        .cast(DType::F32);
    let targets = Tensor::<2, Int>::from_data(TensorData::new(labels, [n, 1]), &device);
    let picked = log_softmax(logits.clone(), 1).gather(1, targets);
    Some((picked.mean().neg(), logits))
}

/// Scored positions where the greedy token is the label.
fn greedy_correct(logits: Tensor<2>, batch: &Batch) -> usize {
    let pred: Vec<i64> = logits
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .unwrap_or_default();
    batch
        .host_labels
        .iter()
        .filter(|l| **l != IGNORE_INDEX)
        .zip(&pred)
        .filter(|(l, p)| *l == *p)
        .count()
}
