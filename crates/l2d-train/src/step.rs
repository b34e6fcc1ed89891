//! One micro-batch of training: sample per-position timesteps, noise and class-label dropout
//! from a counter-keyed host generator, run the diffusion path's loss on the frozen base, and
//! backpropagate into the diffusion path only.
//!
//! The frozen base lives on a device **without** autodiff; the diffusion path on the
//! autodiff form of the same device. The frozen pass therefore records no graph and holds no
//! activation for backward, its weights enter the diffusion path's operations as constants,
//! and no gradient can reach them.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Gradients, Tensor};
use l2d_core::HostRng;
use l2d_models::decoder::{CausalLm, ForwardOptions};
use l2d_models::diffusion::{ClassLabels, DiffusionPath, LossInputs};
use l2d_models::l2d_config::LabelAlignment;

use crate::data::Batch;
use crate::error::{Result, TrainError};

/// The random inputs of one micro-batch's loss.
#[derive(Debug, Clone)]
pub struct MicroNoise {
    /// `t` of every position, `[batch, seq]`, after the noise schedule.
    pub timesteps: Tensor<2>,
    /// Unit-normal `ε` of every position, `[batch, seq, d]`.
    pub noise: Tensor<3>,
    /// Per-position classes after label dropout, `[batch, seq]`, when the path has classes.
    pub classes: Option<ClassLabels>,
}

/// Draws a micro-batch's timesteps (`u ~ U(0,1)` through the path's noise schedule, times
/// `1 - minimum_training_noise`), then its noise, then the class-label dropout (each position
/// keeps its class with probability `1 - p`, else the null class, as the reference does per
/// token), in that order from `rng`.
///
/// # Shapes
/// - outputs: see [`MicroNoise`]
pub fn sample_noise(
    path: &DiffusionPath,
    batch: &Batch,
    rng: &mut HostRng,
    device: &Device,
) -> MicroNoise {
    let [b, s] = batch.dims();
    let config = path.config();
    let u = rng.uniform([b, s], device);
    let timesteps = config
        .noise_schedule
        .apply_tensor(u)
        .mul_scalar(config.maximum_timestep());
    let noise = rng.normal([b, s, path.flow_dim()], device);
    let classes = match (&batch.class_ids, path.null_class()) {
        (Some(ids), Some(null)) => Some(ClassLabels::PerSequence(ids.clone()).drop_per_position(
            s,
            config.guidance_modulation_training_dropout,
            null,
            rng,
        )),
        _ => None,
    };
    MicroNoise {
        timesteps,
        noise,
        classes,
    }
}

/// What one micro-batch's forward and backward gave.
pub struct MicroOutcome {
    /// The mean cross-entropy over scored tokens (before any accumulation scaling).
    pub loss: f64,
    /// Scored tokens.
    pub scored: usize,
    /// Gradients of `loss × loss_scale`; `None` when the loss is not finite (nothing was
    /// backpropagated).
    pub grads: Option<Gradients>,
    /// Per scored token: its time and its cross-entropy (for per-`t` statistics).
    pub token_losses: Vec<(f32, f32)>,
}

impl std::fmt::Debug for MicroOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicroOutcome")
            .field("loss", &self.loss)
            .field("scored", &self.scored)
            .field("grads", &self.grads.is_some())
            .finish()
    }
}

/// The loss inputs of a batch with shifted labels.
pub fn loss_inputs(batch: &Batch, noise: MicroNoise) -> LossInputs {
    LossInputs {
        input_ids: batch.input_ids.clone(),
        labels: batch.labels.clone(),
        alignment: LabelAlignment::Shifted,
        timesteps: Some(noise.timesteps),
        noise: Some(noise.noise),
        class_labels: noise.classes,
        options: ForwardOptions {
            attention_mask: Some(batch.attention_mask.clone()),
            position_ids: None,
        },
    }
}

/// Runs the loss of `inputs` and, when it is finite, backpropagates `loss × loss_scale`.
///
/// `path` must be on an autodiff device for gradients; `base` on any device of the same
/// backend (normally its non-autodiff form).
///
/// # Errors
/// [`TrainError::Diffusion`] for shape or configuration errors of the diffusion path.
pub fn forward_backward(
    path: &DiffusionPath,
    base: &CausalLm,
    inputs: LossInputs,
    loss_scale: f64,
) -> Result<MicroOutcome> {
    let out = path.loss(base, inputs, None)?;
    let loss = f64::from(out.loss.clone().into_scalar::<f32>());
    let scored = out.scored_count.clone().into_scalar::<f32>() as usize;
    let token_losses = {
        let host = |t: Tensor<2>| {
            t.inner()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default()
        };
        let t = host(out.timesteps.clone());
        let l = host(out.token_losses.clone());
        let m = out
            .scored
            .clone()
            .inner()
            .into_data()
            .convert::<bool>()
            .try_to_vec::<bool>()
            .unwrap_or_default();
        t.into_iter()
            .zip(l)
            .zip(m)
            .filter(|(_, m)| *m)
            .map(|((t, l), _)| (t, l))
            .collect()
    };
    let grads = if loss.is_finite() && out.loss.is_tracked() {
        Some(out.loss.mul_scalar(loss_scale).backward())
    } else {
        None
    };
    Ok(MicroOutcome {
        loss,
        scored,
        grads,
        token_losses,
    })
}

/// Moves an adapter (a diffusion path, a LoRA) to the autodiff form of `device` with every
/// parameter trainable (a leaf that retains its gradient), each copied into a fresh
/// contiguous tensor.
pub fn trainable<M: Module>(path: M, device: &Device) -> M {
    struct ToAutodiff {
        device: Device,
    }
    impl ModuleMapper for ToAutodiff {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, tensor, mapper) = param.consume();
            // Through host data: a fresh contiguous tensor whatever the source's layout, so
            // a loaded path computes exactly as the path it was saved from.
            let inner = Tensor::<D>::from_data(tensor.inner().into_data(), &self.device);
            Param::from_mapped_value(id, Tensor::from_inner(inner).require_grad(), mapper)
        }
    }
    path.map(&mut ToAutodiff {
        device: device.clone().without_autodiff(),
    })
}

impl From<l2d_models::diffusion::DiffusionError> for TrainError {
    fn from(e: l2d_models::diffusion::DiffusionError) -> Self {
        TrainError::Diffusion(e.to_string())
    }
}
