//! The L2D training loss, as the reference's `FlowLlamaForCausalLM.forward(labels=...)`
//! computes it: cross-entropy of the diffusion path's logits on the next token, each position
//! with its own time `t` and flow state `x_t = (1-t)·σ·ε + t·V_y`.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Int, Tensor};
use l2d_core::HostRng;

use super::conditioning::{ClassLabels, Timesteps};
use super::context::FlowContext;
use super::error::DiffusionError;
use super::path::DiffusionPath;
use crate::decoder::{CausalLm, ForwardOptions};
use crate::l2d_config::LabelAlignment;

/// The first target position scored in any row and the length of the span up to the last one
/// (one read of the `[batch, targets]` mask back to the host); `None` when nothing is scored.
fn scored_span(scored: &Tensor<2, Bool>) -> Option<(usize, usize)> {
    let columns: Vec<bool> = scored
        .clone()
        .any_dim(0)
        .into_data()
        .convert::<bool>()
        .try_into_vec::<bool>()
        .unwrap_or_default();
    let first = columns.iter().position(|&c| c)?;
    let last = columns.iter().rposition(|&c| c)?;
    Some((first, last - first + 1))
}

/// The label value that is not scored (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// The inputs of [`DiffusionPath::loss`].
#[derive(Debug, Clone)]
pub struct LossInputs {
    /// Input tokens, `[batch, seq]`.
    pub input_ids: Tensor<2, Int>,
    /// Labels, `[batch, seq]`, [`IGNORE_INDEX`] where not scored (prompt, padding).
    pub labels: Tensor<2, Int>,
    /// How labels line up with the inputs.
    pub alignment: LabelAlignment,
    /// The time of every input position, `[batch, seq]`; `None` draws `u ~ U(0, 1)` from the
    /// generator and applies the noise schedule and `1 - minimum_training_noise`.
    pub timesteps: Option<Tensor<2>>,
    /// The unit normal `ε` of every scored position, `[batch, targets, d]` (`targets` =
    /// `seq - 1` unshifted, `seq` shifted); `None` draws it from the generator (after the
    /// timesteps).
    pub noise: Option<Tensor<3>>,
    /// Guidance classes (`None`: the null class when the path has classes). Apply label
    /// dropout before ([`ClassLabels::drop_per_position`]).
    pub class_labels: Option<ClassLabels>,
    /// Padding mask and positions of the frozen pass.
    pub options: ForwardOptions,
}

impl LossInputs {
    /// Inputs with unshifted labels, sampled timesteps and noise, no classes, no padding.
    pub fn new(input_ids: Tensor<2, Int>, labels: Tensor<2, Int>) -> Self {
        Self {
            input_ids,
            labels,
            alignment: LabelAlignment::Unshifted,
            timesteps: None,
            noise: None,
            class_labels: None,
            options: ForwardOptions::default(),
        }
    }
}

/// The result of [`DiffusionPath::loss`].
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// The mean cross-entropy over scored tokens, `[1]` (0 when no token is scored; the
    /// reference would return NaN).
    pub loss: Tensor<1>,
    /// The cross-entropy of every target position, 0 where not scored, `[batch, targets]`.
    pub token_losses: Tensor<2>,
    /// Which target positions are scored, `[batch, targets]`.
    pub scored: Tensor<2, Bool>,
    /// The number of scored tokens, `[1]` (a float, to stay on the device).
    pub scored_count: Tensor<1>,
    /// The times used at the input positions, `[batch, seq]`.
    pub timesteps: Tensor<2>,
    /// The target positions the diffusion path ran on: from the first to the last position
    /// scored in any row (`0..1` when nothing is scored).
    pub span: std::ops::Range<usize>,
    /// The diffusion path's f32 logits at the target positions of `span`,
    /// `[batch, span.len(), vocab]`.
    pub logits: Tensor<3>,
}

impl DiffusionPath {
    /// The training loss.
    ///
    /// For [`LabelAlignment::Unshifted`] labels the target of position `i < seq - 1` is
    /// `labels[i + 1]`, its time is `t[i]`, and the last position gets a zero flow state and
    /// is not scored; for [`LabelAlignment::Shifted`] labels position `i` targets `labels[i]`.
    /// Ignored labels are replaced by token 0 to form `x_1` (as the reference does) and are
    /// not scored. The loss is the mean over scored tokens.
    ///
    /// # Shapes
    /// - see [`LossInputs`]; outputs see [`LossOutput`]
    ///
    /// # Errors
    /// Shape mismatches; [`DiffusionError::Invalid`] when timesteps or noise must be sampled
    /// and no generator is given, or an unshifted sequence is shorter than 2.
    pub fn loss(
        &self,
        base: &CausalLm,
        inputs: LossInputs,
        mut rng: Option<&mut HostRng>,
    ) -> Result<LossOutput, DiffusionError> {
        let LossInputs {
            input_ids,
            labels,
            alignment,
            timesteps,
            noise,
            class_labels,
            options,
        } = inputs;
        let [b, s] = input_ids.dims();
        if labels.dims() != [b, s] {
            return Err(DiffusionError::Shape {
                tensor: "labels",
                expected: format!("[{b}, {s}] (as input_ids)"),
                got: labels.dims().to_vec(),
            });
        }
        let targets = match alignment {
            LabelAlignment::Unshifted if s < 2 => {
                return Err(DiffusionError::Invalid {
                    field: "input_ids",
                    reason: "unshifted labels need at least 2 positions".into(),
                });
            }
            LabelAlignment::Unshifted => s - 1,
            LabelAlignment::Shifted => s,
        };
        let device = input_ids.device();
        let dtype = base.dtype();
        let d = self.flow_dim();
        let missing = |what: &'static str| DiffusionError::Invalid {
            field: what,
            reason: "not given, and no random generator to sample it".into(),
        };
        let t = match timesteps {
            Some(t) => {
                if t.dims() != [b, s] {
                    return Err(DiffusionError::Shape {
                        tensor: "timesteps",
                        expected: format!("[{b}, {s}]"),
                        got: t.dims().to_vec(),
                    });
                }
                t
            }
            None => {
                let u = rng
                    .as_deref_mut()
                    .ok_or(missing("timesteps"))?
                    .uniform([b, s], &device);
                self.config()
                    .noise_schedule
                    .apply_tensor(u)
                    .mul_scalar(self.config().maximum_timestep())
            }
        };
        let noise = match noise {
            Some(n) => {
                if n.dims() != [b, targets, d] {
                    return Err(DiffusionError::Shape {
                        tensor: "noise",
                        expected: format!("[{b}, {targets}, {d}] (batch, targets, flow dim)"),
                        got: n.dims().to_vec(),
                    });
                }
                n
            }
            None => rng
                .ok_or(missing("noise"))?
                .normal([b, targets, d], &device),
        };
        let flow_labels = match alignment {
            LabelAlignment::Unshifted => labels.narrow(1, 1, targets),
            LabelAlignment::Shifted => labels,
        };
        let ignored = flow_labels.clone().equal_elem(IGNORE_INDEX);
        let scored = ignored.clone().bool_not();
        let target_ids = flow_labels.mask_fill(ignored, 0);
        if let Some(labels) = &class_labels {
            self.validate_class_labels(labels)?;
        }
        self.check_base(base)?;
        // A flow position attends only to the frozen path's keys and values, never to another
        // flow position, so the path runs on the span of scored targets alone: the same loss
        // and gradients, without the cost of the prompt (and padding) positions.
        let (start, len) = scored_span(&scored).unwrap_or((0, targets.min(1)));
        let span = |t: Tensor<2>| t.narrow(1, start, len);
        let t_span = span(t.clone());
        let ids_span = target_ids.clone().narrow(1, start, len);
        let x1 = self.token_representations(base, ids_span.clone());
        let t3 = t_span.clone().reshape([b, len, 1]).cast(dtype);
        let x0 = noise
            .narrow(1, start, len)
            .cast(dtype)
            .mul_scalar(self.config().noise_rescaling);
        let x_t = x0 * t3.clone().neg().add_scalar(1.0) + x1 * t3;
        let frozen = base.frozen_forward(input_ids, &options);
        let context = FlowContext::from_frozen(&frozen).narrow_queries(start, len)?;
        let classes =
            class_labels.map(|c| ClassLabels::PerPosition(c.per_position(s).narrow(1, start, len)));
        let logits = self.forward_cached(
            base,
            &context,
            x_t,
            &Timesteps::Tensor(t_span),
            classes.as_ref(),
        )?;
        let log_probs = log_softmax(logits.clone(), 2);
        let picked = log_probs
            .gather(2, ids_span.reshape([b, len, 1]))
            .reshape([b, len]);
        let weights = scored.clone().float().cast(picked.dtype());
        let span_losses = picked.neg() * weights.clone().narrow(1, start, len);
        let scored_count = weights.sum();
        let loss = span_losses.clone().sum() / scored_count.clone().clamp_min(1.0);
        let loss_dtype = span_losses.dtype();
        let zeros = |n: usize| Tensor::<2>::zeros([b, n], (&device, loss_dtype));
        let mut parts = Vec::with_capacity(3);
        if start > 0 {
            parts.push(zeros(start));
        }
        parts.push(span_losses);
        if start + len < targets {
            parts.push(zeros(targets - start - len));
        }
        let token_losses = Tensor::cat(parts, 1);
        Ok(LossOutput {
            loss,
            token_losses,
            scored,
            scored_count,
            timesteps: t,
            span: start..start + len,
            logits,
        })
    }
}
