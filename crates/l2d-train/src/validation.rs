//! Validation: the training loss on held-out data (also per bin of `t`), and n-step accuracy
//! (greedy next-token accuracy after integrating the diffusion ODE from noise with the
//! midpoint method, as the reference's `compute_nstep_loss`), next to the frozen model's own
//! greedy accuracy.
//!
//! Every draw is keyed by the seed and the batch index, so successive evaluations of a run see
//! the same timesteps and noise and their differences come from the weights alone.

use burn::tensor::{Device, Tensor};
use l2d_core::HostRng;
use l2d_models::decoder::{CausalLm, ForwardOptions, FrozenOutput};
use l2d_models::diffusion::{
    DiffusionPath, FlowContext, FlowVelocityField, reference_temperature_offset,
};
use l2d_solvers::{Method, Solver, linspace};
use serde::{Deserialize, Serialize};

use crate::data::encode::IGNORE_INDEX;
use crate::data::{Batch, TokenizedExample, collate};
use crate::error::Result;
use crate::step::{forward_backward, loss_inputs, sample_noise};

/// Stream ids separating validation draws from training draws.
const VALID_STREAM: u64 = 0x5641_4c49; // "VALI"
const NSTEP_STREAM: u64 = 0x4e53_5450; // "NSTP"

/// Validation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationOptions {
    /// Sequences per batch.
    pub batch_size: usize,
    /// Batches evaluated (0: all).
    pub max_batches: usize,
    /// Bins of `t` for the per-time loss (0: none).
    pub t_bins: usize,
    /// Grid points of the midpoint solve (0: no n-step accuracy).
    pub nstep_grid_points: usize,
    /// Batches for n-step accuracy (0: as many as for the loss).
    pub nstep_batches: usize,
    /// The run seed.
    pub seed: u64,
    /// The padding id.
    pub pad_id: u32,
    /// The frozen base's accuracy, when already measured on these examples: an objective that
    /// would need a forward of its own for it (the LoRA baseline) reports this instead.
    pub known_base_accuracy: Option<f64>,
}

/// One evaluation's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationMetrics {
    /// Mean cross-entropy over scored tokens (each at its own random `t`).
    pub loss: f64,
    /// Scored tokens.
    pub tokens: usize,
    /// Mean loss of the tokens whose `t` falls in bin `i` of `[0, 1)` (`None`: empty bin).
    pub loss_by_t: Vec<Option<f64>>,
    /// Greedy next-token accuracy after the n-step solve, if computed (diffusion path).
    pub nstep_accuracy: Option<f64>,
    /// Greedy next-token accuracy of the adapted model (LoRA runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// The frozen model's greedy next-token accuracy on the same tokens.
    pub base_accuracy: Option<f64>,
    /// Tokens the accuracies are measured on.
    pub accuracy_tokens: usize,
}

/// Sums of loss per `t` bin.
#[derive(Debug, Clone, Default)]
pub struct BinnedLoss {
    sums: Vec<f64>,
    counts: Vec<usize>,
}

impl BinnedLoss {
    /// `bins` equal bins over `[0, 1]`.
    pub fn new(bins: usize) -> Self {
        BinnedLoss {
            sums: vec![0.0; bins],
            counts: vec![0; bins],
        }
    }

    /// Adds `(t, loss)` pairs.
    pub fn add(&mut self, pairs: &[(f32, f32)]) {
        let n = self.sums.len();
        if n == 0 {
            return;
        }
        for &(t, l) in pairs {
            let i = ((f64::from(t) * n as f64) as usize).min(n - 1);
            self.sums[i] += f64::from(l);
            self.counts[i] += 1;
        }
    }

    /// The mean per bin.
    pub fn means(&self) -> Vec<Option<f64>> {
        self.sums
            .iter()
            .zip(&self.counts)
            .map(|(s, &c)| (c > 0).then(|| s / c as f64))
            .collect()
    }
}

/// Evaluates `path` (on a device without autodiff) against `base` on `examples`.
///
/// # Errors
/// Diffusion-path and solver failures.
pub fn evaluate(
    path: &DiffusionPath,
    base: &CausalLm,
    examples: &[TokenizedExample],
    options: &ValidationOptions,
    device: &Device,
) -> Result<ValidationMetrics> {
    let mut total = 0.0;
    let mut tokens = 0usize;
    let mut bins = BinnedLoss::new(options.t_bins);
    let (mut nstep_correct, mut base_correct, mut acc_tokens) = (0usize, 0usize, 0usize);
    let batches: Vec<&[TokenizedExample]> = examples.chunks(options.batch_size.max(1)).collect();
    let limit = if options.max_batches == 0 {
        batches.len()
    } else {
        options.max_batches.min(batches.len())
    };
    let nstep_limit = if options.nstep_batches == 0 {
        limit
    } else {
        options.nstep_batches.min(limit)
    };
    let table = (options.nstep_grid_points >= 2).then(|| path.vocabulary_table(base));
    for (i, chunk) in batches.into_iter().take(limit).enumerate() {
        let refs: Vec<&TokenizedExample> = chunk.iter().collect();
        let batch = collate(&refs, options.pad_id, device);
        let mut rng = HostRng::new(options.seed)
            .derive(VALID_STREAM)
            .derive(i as u64);
        let noise = sample_noise(path, &batch, &mut rng, device);
        let out = forward_backward(path, base, loss_inputs(&batch, noise), 1.0)?;
        if out.scored > 0 {
            total += out.loss * out.scored as f64;
            tokens += out.scored;
        }
        bins.add(&out.token_losses);
        if let (Some(table), true) = (&table, i < nstep_limit) {
            let (c, b, n) = nstep_accuracy(path, base, &batch, table.clone(), options, i)?;
            nstep_correct += c;
            base_correct += b;
            acc_tokens += n;
        }
    }
    let rate = |c: usize| (acc_tokens > 0).then(|| c as f64 / acc_tokens as f64);
    Ok(ValidationMetrics {
        loss: if tokens > 0 {
            total / tokens as f64
        } else {
            f64::NAN
        },
        tokens,
        loss_by_t: bins.means(),
        nstep_accuracy: rate(nstep_correct),
        accuracy: None,
        base_accuracy: rate(base_correct),
        accuracy_tokens: acc_tokens,
    })
}

/// `(n-step correct, base correct, scored)` on one batch: every position's flow state starts
/// at `σ·ε`, is integrated with the midpoint method over `nstep_grid_points` uniform times
/// on `[0, 1]` against the batch's cached frozen pass, and the logits at `t = 1` of the final
/// state are compared with the labels.
///
/// A flow position attends only to the frozen keys and values, never to another flow
/// position, so only the span of scored positions is integrated: each of them gets the noise
/// it would get in a solve of every position (drawn for all, cut to the span) and the same
/// computation, without the prompt's cost. (The `sample` estimator's uniforms are drawn per
/// integrated position, so with it a position's draws differ from a full solve's.)
fn nstep_accuracy(
    path: &DiffusionPath,
    base: &CausalLm,
    batch: &Batch,
    table: Tensor<2>,
    options: &ValidationOptions,
    index: usize,
) -> Result<(usize, usize, usize)> {
    let options_fwd = ForwardOptions {
        attention_mask: Some(batch.attention_mask.clone()),
        position_ids: None,
    };
    let frozen = base.frozen_forward(batch.input_ids.clone(), &options_fwd);
    let base_logits = base.logits(frozen.hidden.clone());
    let (base_correct, _) = span_accuracy(base_logits, batch, 0);
    let Some(span) = scored_span(batch) else {
        return Ok((0, base_correct, 0));
    };
    let logits = nstep_logits(path, base, &frozen, batch, table, options, index, span)?;
    let (correct, n) = span_accuracy(logits, batch, span.0);
    Ok((correct, base_correct, n))
}

/// The logits at `t = 1` of the midpoint solve of positions `start..start + len`, `[batch,
/// len, vocab]`.
#[allow(clippy::too_many_arguments)]
fn nstep_logits(
    path: &DiffusionPath,
    base: &CausalLm,
    frozen: &FrozenOutput,
    batch: &Batch,
    table: Tensor<2>,
    options: &ValidationOptions,
    index: usize,
    (start, len): (usize, usize),
) -> Result<Tensor<3>> {
    let [b, s] = batch.dims();
    let context = FlowContext::from_frozen(frozen).narrow_queries(start, len)?;
    let mut rng = HostRng::new(options.seed)
        .derive(NSTEP_STREAM)
        .derive(index as u64);
    let device = batch.input_ids.device();
    let x0 = rng
        .normal([b, s, path.flow_dim()], &device)
        .narrow(1, start, len)
        .mul_scalar(path.config().noise_rescaling);
    let times = linspace(0.0, 1.0, options.nstep_grid_points);
    let mut field = FlowVelocityField::new(path, base, context, table)?
        .with_rng(rng.fork())
        .with_temperature_offset(reference_temperature_offset(Method::Midpoint, &times));
    let (x1, _) = field.solve(&Solver::new(Method::Midpoint), x0, &times)?;
    Ok(field.logits(1.0, &x1)?)
}

/// The first scored position of any row and the length up to the last one, over the batch.
fn scored_span(batch: &Batch) -> Option<(usize, usize)> {
    let s = batch.dims()[1];
    let scored_column = |j: usize| {
        batch
            .host_labels
            .chunks(s)
            .any(|row| row[j] != IGNORE_INDEX)
    };
    let first = (0..s).find(|&j| scored_column(j))?;
    let last = (0..s).rev().find(|&j| scored_column(j))?;
    Some((first, last - first + 1))
}

/// Greedy accuracy of logits `[batch, len, vocab]` for positions `start..start + len` (all
/// of them: `start = 0`, `len = seq`) against the batch's shifted labels, on scored
/// positions: `(correct, n)`.
fn span_accuracy(logits: Tensor<3>, batch: &Batch, start: usize) -> (usize, usize) {
    let [_, len, _] = logits.dims();
    let s = batch.dims()[1];
    let pred: Vec<i64> = logits
        .argmax(2)
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .unwrap_or_default();
    let mut correct = 0;
    let mut n = 0;
    for (row, labels) in batch.host_labels.chunks(s).enumerate() {
        for j in 0..len {
            let l = labels[start + j];
            if l != IGNORE_INDEX {
                n += 1;
                correct += usize::from(pred.get(row * len + j) == Some(&l));
            }
        }
    }
    (correct, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{DType, Device};
    use l2d_core::X1Estimator;
    use l2d_models::config::ModelConfig;
    use l2d_models::l2d_config::L2dConfig;

    /// Integrating only the scored span gives each scored position the logits of a solve of
    /// every position (with a deterministic estimator).
    #[test]
    fn the_span_solve_equals_the_full_solve_on_scored_positions() {
        let device = Device::flex();
        let config = ModelConfig::from_json_str(
            r#"{"model_type": "llama", "vocab_size": 40, "hidden_size": 32,
                "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2}"#,
        )
        .unwrap();
        let base = CausalLm::random(&config, &device, DType::F32, 3);
        let l2d = L2dConfig {
            flow_representation_dim: Some(8),
            flow_to_lm_hidden_size: Some(16),
            timestep_modulation_hidden_size: Some(16),
            timestep_modulation_freq_embedding_size: Some(16),
            flow_lora_rank: 4,
            nstep_x1_estimation: X1Estimator::Average.to_string(),
            ..L2dConfig::default()
        };
        let path = DiffusionPath::init(&l2d, &base, 1)
            .unwrap()
            .with_random_parameters(2, 0.05);
        let examples: Vec<TokenizedExample> = [(9, 4..7), (6, 2..5)]
            .into_iter()
            .enumerate()
            .map(|(r, (len, scored))| TokenizedExample {
                input_ids: (0..len).map(|i| (3 + 7 * i + r) as u32 % 40).collect(),
                labels: (0..len)
                    .map(|i| {
                        if scored.contains(&i) {
                            (i as i64 * 5) % 40
                        } else {
                            IGNORE_INDEX
                        }
                    })
                    .collect(),
                class_id: None,
                conversation: r,
            })
            .collect();
        let refs: Vec<&TokenizedExample> = examples.iter().collect();
        let batch = collate(&refs, 0, &device);
        let options = ValidationOptions {
            batch_size: 2,
            max_batches: 0,
            t_bins: 0,
            nstep_grid_points: 4,
            nstep_batches: 0,
            seed: 5,
            pad_id: 0,
            known_base_accuracy: None,
        };
        let frozen = base.frozen_forward(
            batch.input_ids.clone(),
            &ForwardOptions {
                attention_mask: Some(batch.attention_mask.clone()),
                position_ids: None,
            },
        );
        let table = path.vocabulary_table(&base);
        let span = scored_span(&batch).unwrap();
        assert_eq!(span, (2, 5));
        let s = batch.dims()[1];
        let part = nstep_logits(
            &path,
            &base,
            &frozen,
            &batch,
            table.clone(),
            &options,
            0,
            span,
        )
        .unwrap();
        let full = nstep_logits(&path, &base, &frozen, &batch, table, &options, 0, (0, s))
            .unwrap()
            .narrow(1, span.0, span.1);
        let diff = (part - full).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-4, "span and full solves differ by {diff}");
    }
}
