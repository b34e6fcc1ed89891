//! What is integrated: a velocity field `v(t, x)`, and the end-point policy for fields that
//! are singular at the end of the path.

use serde::{Deserialize, Serialize};

/// Where a velocity evaluation sits inside the solve.
///
/// Most fields ignore it. A model-side field may need it: the L2D reference evaluates its
/// temperature schedule at `step_start + Δ` where Δ is the step size for Euler and half of it
/// for midpoint, i.e. at a point that depends on the step, not on the stage time alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// Time at the start of the current step.
    pub step_start: f64,
    /// Signed size of the current step (negative when integrating backwards). For the
    /// evaluation that selects the first adaptive step it is the probe step `h0`; for the very
    /// first evaluation of an adaptive solve (made before any step size is known) it is 0.
    pub step_size: f64,
    /// Index of the stage within the step (0 = the step's first evaluation).
    pub stage: usize,
    /// Index of the step (accepted + rejected steps before this one).
    pub step_index: usize,
}

/// A velocity field `v(t, x)`: the right-hand side `dx/dt = v(t, x)` of the ODE.
///
/// Closures `FnMut(f64, &S) -> S` implement it. The solver, not the field, counts
/// evaluations (see [`crate::Stats::nfe`]).
pub trait VectorField<S> {
    /// The velocity at time `t` and state `x`.
    ///
    /// # Shapes
    /// The returned velocity has the shape of `x`.
    fn velocity(&mut self, t: f64, x: &S, step: &StepInfo) -> S;
}

impl<S, F> VectorField<S> for F
where
    F: FnMut(f64, &S) -> S,
{
    fn velocity(&mut self, t: f64, x: &S, _step: &StepInfo) -> S {
        self(t, x)
    }
}

/// What the solver does when a stage falls at or past a time where the field is singular.
///
/// The L2D velocity `(x̂₁ − x)/(1 − t)` is singular at `t = 1`; the reference code returns a
/// zero velocity for `t >= 1` in every method that may evaluate there (heun2's last stage,
/// rk4's `k4`, every adaptive method's overshooting steps). [`EndpointPolicy::ZeroAtOrAfter`]
/// reproduces that bit for bit: the field is not called and the stage velocity is exactly zero.
/// Such evaluations still count in [`crate::Stats::nfe`] (the reference counts them too) and
/// are also reported in [`crate::Stats::zero_velocity_evals`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub enum EndpointPolicy {
    /// Always call the field.
    #[default]
    Evaluate,
    /// Return a zero velocity, without calling the field, for `t >= t_singular` when
    /// integrating forward (`t <= t_singular` when integrating backward).
    ZeroAtOrAfter(f64),
}

impl EndpointPolicy {
    /// Whether an evaluation at `t` (with integration direction `direction` = ±1) is answered
    /// with a zero velocity.
    pub fn zeroes(&self, t: f64, direction: f64) -> bool {
        match *self {
            EndpointPolicy::Evaluate => false,
            EndpointPolicy::ZeroAtOrAfter(ts) => {
                if direction >= 0.0 {
                    t >= ts
                } else {
                    t <= ts
                }
            }
        }
    }
}
