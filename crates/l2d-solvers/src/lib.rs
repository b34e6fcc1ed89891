//! `l2d-solvers`: ODE and SDE solvers for flow matching, generic over the state — burn
//! `Tensor<D>` on any device and dtype, or plain `Vec<f64>` for exact host math.
//!
//! Part of the [l2d](https://crates.io/crates/l2d) workspace (Large Language Models to
//! Diffusion Finetuning): generation integrates the velocity `v = (x̂₁ − x_t)/(1 − t)` from
//! noise (t = 0) to data (t = 1) with one of these solvers.
//!
//! # Design (diffrax's shape)
//! - **What is integrated**: a [`VectorField`] `v(t, x)` (closures work), told where in the
//!   step it is evaluated ([`StepInfo`]); an [`EndpointPolicy`] for fields singular at t = 1.
//! - **How one step is taken**: an explicit Runge–Kutta [`Method`] whose [`ButcherTableau`] is
//!   data; order, FSAL and "evaluates the end point" are readable facts.
//! - **How steps are chosen**: a [`StepController`] — the requested times, a [`TimeGrid`]
//!   (uniform, shifted, given), or [`AdaptiveController`] (torchdiffeq's I-controller by
//!   default, diffrax's PID as an option) with `max_steps`/`max_nfe` budgets.
//! - **What is kept**: [`SaveAt`]; every solve returns [`Stats`] (evaluations, steps,
//!   accepted, rejected).
//! - **The state**: [`State`] — linear combinations as one call (fusable on a device), and
//!   the scaled RMS error norm as the one host read an adaptive step needs.
//! - **SDE**: [`FlowSdeSampler`], Euler–Maruyama on the flow-matching SDE with the ODE's
//!   marginals (score recovered from the velocity), seeded host noise ([`SeededNoise`]).
//! - **Errors, not panics**: [`SolverError`].
//!
//! # torchdiffeq compatibility (0.2.5, what L2D calls)
//! - Fixed grids step through the requested times; outputs between grid points are linear.
//!   [`grid::linspace`] is bit-identical to `torch.linspace` in `f64`.
//! - `"rk4"` in torchdiffeq is the 3/8 rule: [`Method::Rk4ThreeEighths`]; the classic RK4 is
//!   [`Method::Rk4Classic`]. heun2 evaluates its second stage at `t0 + dt`.
//! - Adaptive: the same initial step selection (Hairer–Nørsett–Wanner §II.4, one extra
//!   evaluation), error ratio `rms(err/(atol + rtol·max(|y0|,|y1|)))`, accept iff `<= 1`,
//!   safety 0.9, growth ≤ 10, shrink ≥ 0.2, no shrink after an accepted step; stages with
//!   `c = 1` at the float just before `t1`; steps overshoot the last requested time and
//!   the output is torchdiffeq's 4th-order interpolant (each tableau's `mid` vector).
//!   NFE follows `2 + s·(accepted + rejected)`.
//! - adaptive_heun and fehlberg2 keep torchdiffeq's "pseudo-FSAL" quirk: the next step's
//!   first stage reuses the last stage, evaluated at the embedded (lower-order) solution,
//!   not at `y1` ([`ButcherTableau::is_pseudo_fsal`]).
//! - Tsit5 is **not** torchdiffeq's (whose tableau propagates the order-4 row): it is
//!   diffrax's FSAL order-5 tableau, with `mid` from Tsitouras' continuous extension.
//! - Differences: `max_steps` counts the whole solve (torchdiffeq: per output interval); a
//!   non-finite error ratio rejects the step and shrinks it by `factor_min` (torchdiffeq
//!   ends in an assertion); no `step_t`/`jump_t`/events.
//! - With [`EndpointPolicy::ZeroAtOrAfter`]`(1.0)` the L2D guard (`t >= 1 → v = 0`) is
//!   reproduced exactly, e.g. heun2's last stage at t = 1 gets velocity 0.
//!
//! # Example
//! L2D's default: midpoint over 16 uniform points from 0 to 1 (30 evaluations), on a burn
//! tensor state.
//! ```
//! use burn::tensor::{Device, Tensor};
//! use l2d_solvers::{Method, Solver, TimeGrid};
//!
//! let device = Device::flex();
//! let x1 = Tensor::<2>::from_floats([[1.0, -2.0, 0.5]], &device);
//! let x0 = Tensor::<2>::from_floats([[0.3, 0.1, -0.7]], &device);
//! // The straight-line field towards x1: v = (x1 - x)/(1 - t).
//! let mut field = |t: f64, x: &Tensor<2>| (x1.clone() - x.clone()).div_scalar(1.0 - t);
//! let sol = Solver::new(Method::Midpoint)
//!     .solve_grid(&mut field, x0, &TimeGrid::uniform(0.0, 1.0, 16))?;
//! assert_eq!(sol.stats.nfe, 30);
//! let end: Vec<f64> = sol.into_last().unwrap().into_data().try_into_vec_as().unwrap();
//! assert!((end[1] + 2.0).abs() < 1e-5);
//! # Ok::<(), l2d_solvers::SolverError>(())
//! ```
//!
//! # Feature flags
//! None: the crate uses burn's `flex` CPU backend from the workspace; GPU backends come from
//! the facade crate's `vulkan`/`wgpu`/`cuda` features (the state is device-generic).
#![warn(missing_docs)]

pub mod controller;
pub mod error;
pub mod field;
pub mod grid;
pub mod reference_problems;
pub mod sde;
pub mod solve;
pub mod state;
pub mod tableau;

pub use controller::{AdaptiveController, ErrorControl, StepController};
pub use error::SolverError;
pub use field::{EndpointPolicy, StepInfo, VectorField};
pub use grid::{TimeGrid, linspace, shift_time};
pub use sde::{Diffusion, FlowSdeSampler, InvalidDiffusion, LastStep, Noise, SeededNoise};
pub use solve::{SaveAt, Solution, Solver, Stats};
pub use state::State;
pub use tableau::{ButcherTableau, EndStageTime, Method, UnknownMethod};
