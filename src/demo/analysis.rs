//! Diagnostics of a trained diffusion path on the addition task, for explaining the demo's
//! curve: how well the path reads the answer from a flow state at a given time when the
//! answer prefix is given (teacher forcing), and what it does when the flow state holds another
//! token's representation.

use burn::tensor::{Device, Int, Tensor};
use l2d_core::HostRng;
use l2d_models::decoder::{CausalLm, ForwardOptions};
use l2d_models::diffusion::{DiffusionPath, FlowContext, Timesteps};
use serde::{Deserialize, Serialize};

use super::DemoError;
use super::task::{DigitTask, Problem};

/// What the flow state at the answer positions holds before noising.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowTarget {
    /// The representation of the right answer digit (as in training).
    Truth,
    /// The representation of the frozen model's greedy digit (what a one-step Euler solve with
    /// the argmax estimate hands to the final evaluation).
    BaseGuess,
}

/// Per-digit accuracy of the path's argmax at the answer positions, teacher-forced (the frozen
/// context holds the right answer prefix), with flow states
/// `x_t = (1-t)·σ·ε + t·V_target` at time `t` (`ε` from `seed`).
///
/// Returns `(exact match, per-digit accuracy)`.
///
/// # Errors
/// [`DemoError::Diffusion`] for a path that does not fit the base.
pub fn teacher_forced_accuracy(
    path: &DiffusionPath,
    base: &CausalLm,
    task: &DigitTask,
    problems: &[Problem],
    t: f64,
    target: FlowTarget,
    seed: u64,
) -> Result<(f64, Vec<f64>), DemoError> {
    let device: Device = base.device();
    let len = task.answer_len();
    let mut rng = HostRng::new(seed);
    let (mut exact, mut digits) = (0usize, vec![0usize; len]);
    for chunk in problems.chunks(500) {
        let batch = task.batch(chunk, &device);
        let [b, seq] = batch.inputs.dims();
        let frozen = base.frozen_forward(batch.inputs, &ForwardOptions::default());
        let context = FlowContext::from_frozen(&frozen).narrow_queries(seq - len, len)?;
        let ids: Tensor<2, Int> = match target {
            FlowTarget::Truth => batch.answers.clone(),
            FlowTarget::BaseGuess => {
                let logits = base.logits(context.hidden.clone());
                logits.argmax(2).reshape([b, len])
            }
        };
        let x1 = path.token_representations(base, ids);
        let noise = rng.normal([b, len, path.flow_dim()], &device);
        let sigma = path.config().noise_rescaling;
        let x_t = noise.mul_scalar(sigma * (1.0 - t)) + x1.mul_scalar(t);
        let logits = path.forward_cached(base, &context, x_t, &Timesteps::Scalar(t), None)?;
        let got: Vec<i64> = logits.argmax(2).into_data().iter::<i64>().collect();
        let want: Vec<i64> = batch.answers.into_data().iter::<i64>().collect();
        for (g, w) in got.chunks(len).zip(want.chunks(len)) {
            let mut all = true;
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                if a == b {
                    digits[i] += 1;
                } else {
                    all = false;
                }
            }
            exact += usize::from(all);
        }
    }
    let n = problems.len().max(1) as f64;
    Ok((
        exact as f64 / n,
        digits.into_iter().map(|d| d as f64 / n).collect(),
    ))
}
