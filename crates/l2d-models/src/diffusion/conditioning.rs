//! The inputs that condition the diffusion path: timesteps and guidance class labels, and the
//! conditioning vectors `c_t = timestep_embedding(t) + class_embedding(y)` built from them.

use burn::tensor::{Int, Tensor};

/// The times of the flow states given to a forward: one scalar for every position (ODE
/// integration: the reference's scalar `t`), or a time per position (training), `[batch, n]`.
/// It is [`l2d_core::Time`] of rank 2; `zeros_like` gives the reference's
/// `timesteps_at_flow_start`.
pub type Timesteps = l2d_core::Time<2>;

/// Guidance class labels (indices in `0..=num_classes`; `num_classes` is the null class).
#[derive(Debug, Clone)]
pub enum ClassLabels {
    /// One class per sequence, `[batch]` (the reference's inference and data).
    PerSequence(Tensor<1, Int>),
    /// One class per position, `[batch, n]` (training with per-token label dropout).
    PerPosition(Tensor<2, Int>),
}

impl ClassLabels {
    /// The batch size.
    pub fn batch(&self) -> usize {
        match self {
            ClassLabels::PerSequence(l) => l.dims()[0],
            ClassLabels::PerPosition(l) => l.dims()[0],
        }
    }

    /// The labels followed by as many null labels (the conditional then the unconditional
    /// branch of classifier-free guidance in one batch).
    pub fn stack_with_null(&self, null_class: usize) -> ClassLabels {
        match self {
            ClassLabels::PerSequence(l) => {
                ClassLabels::PerSequence(l2d_guidance::stack_labels(l.clone(), null_class))
            }
            ClassLabels::PerPosition(l) => {
                ClassLabels::PerPosition(l2d_guidance::stack_labels(l.clone(), null_class))
            }
        }
    }

    /// Per-position labels where each position keeps its class with probability `1 - p` and
    /// gets the null class otherwise (the reference's per-token training dropout), with the
    /// uniforms drawn from `rng`.
    ///
    /// # Shapes
    /// - output: [`ClassLabels::PerPosition`] `[batch, n]`
    pub fn drop_per_position(
        &self,
        n: usize,
        p: f64,
        null_class: usize,
        rng: &mut l2d_core::HostRng,
    ) -> ClassLabels {
        let full = self.per_position(n);
        let device = full.device();
        let [b, _] = full.dims();
        let u = rng.uniform([b, n], &device);
        let drop = u.lower_elem(p);
        ClassLabels::PerPosition(full.mask_fill(drop, null_class as i64))
    }

    /// The labels as `[batch, n]`.
    pub fn per_position(&self, n: usize) -> Tensor<2, Int> {
        match self {
            ClassLabels::PerSequence(l) => {
                let b = l.dims()[0];
                l.clone().reshape([b, 1]).expand([b, n])
            }
            ClassLabels::PerPosition(l) => l.clone(),
        }
    }
}
