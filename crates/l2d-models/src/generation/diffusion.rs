//! Diffusion generation: the L2D [`Generator`] and its per-token [`DiffusionStep`].
//!
//! Per new token ([`DiffusionStep::next_logits`]):
//! 1. the **frozen path** runs once over the new input tokens (the whole prompt at prefill,
//!    then the token just chosen), extending the key/value cache and giving the last
//!    position's pre-norm hidden state;
//! 2. the new position's **flow state** starts from noise `x₀ = σ·ε` (σ = the adapter's
//!    `noise_rescaling`, 64) and is integrated from `t = 0` to `t = 1` (the adapter's
//!    `nstep_final_timestep`) by an `l2d-solvers` method, each evaluation a
//!    **diffusion-only forward** over the cached keys/values and hidden state
//!    ([`FlowVelocityField`]);
//! 3. one more diffusion forward at the final time gives the **logits**, from which
//!    [`generate`] draws the token with the [`GenerationConfig`]'s sampling.
//!
//! With [`DiffusionMode::Base`] (or `Fixed { steps: 0 }`, or no adapter) step 2 and 3 are
//! skipped and the logits are exactly the frozen model's: generation equals
//! [`BaseStep`](super::BaseStep)'s token for token.
//!
//! # Steps and NFE
//! `Fixed { steps: N, method }` takes `N` solver steps over the uniform grid of `N + 1`
//! points `0, 1/N, …, 1` (the reference's `ode_steps` / `--compute_nstep_loss` counts the
//! *points*, `N + 1`). The NFE of a token, as the paper counts it, is the solver's
//! evaluations plus the final one: `N·stages + 1`, so midpoint with 7 steps (8 points) is the
//! paper's 15 NFE. [`TokenStats`] reports it next to the diffusion forwards actually run,
//! which are fewer:
//! - **fused first evaluation**: at `t = 0` the gate `head(t) − head(0)` is exactly zero, so
//!   the logits there are the frozen pass's; the first stage of every solve reuses them (one
//!   LM head on the frozen hidden state instead of a diffusion forward);
//! - evaluations at `t ≥ 1` of methods that reach the end point get a zero velocity without a
//!   forward (the reference's guard).
//!
//! # Efficiency the reference lacks
//! - The vocabulary's flow table (`[vocab, d]`) is computed once per [`Generator`], not per
//!   evaluation.
//! - The diffusion forward skips everything the frozen path has (k/v projections, the frozen
//!   MLP, the frozen final state), and with a fixed grid every time's modulations are
//!   computed once per generation call ([`TimeConditioningCache`]), not per evaluation.
//! - No host read per solver stage: fixed grids skip the solver's per-step finiteness check
//!   (one check of the final state per token instead); adaptive solvers read only their error
//!   norm.
//!
//! # Noise and batches
//! Row `r`'s generator for its `k`-th new token (`k = 0` at prefill) is
//! `HostRng::new(seed).derive(row_key).derive(k)`, where `row_key` is the 64-bit FNV-1a hash
//! of the row's prompt ids (padding excluded) unless given ([`DiffusionStep::with_row_keys`]).
//! The noise `x₀` is its first `d` normal draws times σ; the `sample` estimator's uniforms
//! follow from the same generator. A row's noise therefore depends only on the seed, its
//! prompt and the token index, never on the other rows: batched output equals one-prompt
//! output. Adaptive solves run row by row for the same reason (the error norm of a batch
//! would couple the rows' step sizes). Identical prompts in one batch get identical noise;
//! give row keys (or seeds) to make them differ. The final token itself is chosen by
//! [`generate`]'s sampler, whose seeded stream is shared by the batch when
//! sampling at a positive temperature (greedy choice is row-independent).
//!
//! ```
//! use burn::tensor::{DType, Device};
//! use l2d_models::config::ModelConfig;
//! use l2d_models::decoder::CausalLm;
//! use l2d_models::diffusion::DiffusionPath;
//! use l2d_models::generation::{DiffusionOptions, Flow, GenerationConfig, Generator};
//! use l2d_models::l2d_config::L2dConfig;
//!
//! let config = ModelConfig::from_json_str(r#"{"model_type": "llama", "hidden_size": 32,
//!     "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
//!     "num_key_value_heads": 2, "vocab_size": 50}"#)?;
//! let base = CausalLm::random(&config, &Device::flex(), DType::F32, 0);
//! let l2d = L2dConfig { flow_representation_dim: Some(8), flow_lora_rank: 4,
//!     timestep_modulation_hidden_size: Some(16), flow_to_lm_hidden_size: Some(16),
//!     timestep_modulation_freq_embedding_size: Some(16), ..L2dConfig::default() };
//! let path = DiffusionPath::init(&l2d, &base, 1)?.with_random_parameters(2, 0.05);
//!
//! // Midpoint over 8 grid points: 15 NFE per token.
//! let generator = Generator::new(&base, Some(&path), DiffusionOptions::fixed(7))?;
//! let out = generator.generate(None, &[vec![1, 5, 7]], &GenerationConfig::greedy(4), |_| {
//!     Flow::Continue
//! })?;
//! assert_eq!(out.generation.sequences[0].tokens.len(), 4);
//! assert_eq!(out.diffusion.mean_nfe_per_token(), 15.0);
//! // The first stage is fused into the frozen pass: 14 diffusion forwards per token.
//! assert_eq!(out.diffusion.tokens[0].diffusion_forwards, 14);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::OnceCell;
use std::time::{Duration, Instant};

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use l2d_core::{HostRng, TemperatureSchedule, X1Estimation, X1Estimator};
use l2d_guidance::Guidance;
use l2d_solvers::{
    AdaptiveController, EndpointPolicy, Method, Solver, SolverError, StepController,
};

use super::step::TokenStep;
use super::{Flow, GenerationConfig, GenerationError, GenerationOutput, TokenEvent, generate};
use crate::decoder::{CausalLm, ForwardOptions, KvCache};
use crate::diffusion::{
    ClassLabels, DiffusionError, DiffusionPath, FlowContext, FlowVelocityField,
    TimeConditioningCache, reference_temperature_offset,
};
use crate::tokenizer::Tokenizer;

/// Errors of diffusion generation (inside [`GenerationError::Step`] when raised during a
/// generation call).
#[derive(Debug, thiserror::Error)]
pub enum DiffusionGenerationError {
    /// The diffusion path failed (shapes, class labels, a base it was not built for).
    #[error(transparent)]
    Diffusion(#[from] DiffusionError),
    /// An option is invalid.
    #[error("invalid diffusion option `{field}`: {reason}")]
    Invalid {
        /// The option.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An adaptive solve of one row ran out of its evaluation budget.
    #[error(
        "row {row}: the adaptive solve needed more than max_nfe = {max_nfe} evaluations \
         (stopped at t = {t} after {nfe}); raise the budget or the tolerances, or use \
         BudgetPolicy::FixedGrid"
    )]
    BudgetExceeded {
        /// The batch row.
        row: usize,
        /// The budget.
        max_nfe: usize,
        /// Evaluations made.
        nfe: usize,
        /// The time reached.
        t: f64,
    },
    /// Given initial noise ran out.
    #[error("initial noise was given for {given} tokens, token {token} needs more")]
    NoiseExhausted {
        /// Tokens covered.
        given: usize,
        /// The token index asking.
        token: usize,
    },
    /// The final flow state of a token is NaN or infinite.
    #[error("the flow state of new token {token} is not finite (NaN or infinity)")]
    NonFinite {
        /// The token index (0 = first new token).
        token: usize,
    },
}

impl From<DiffusionGenerationError> for GenerationError {
    fn from(e: DiffusionGenerationError) -> Self {
        GenerationError::Step(Box::new(e))
    }
}

impl From<SolverError> for DiffusionGenerationError {
    fn from(e: SolverError) -> Self {
        DiffusionGenerationError::Diffusion(DiffusionError::Solver(e))
    }
}

/// What an adaptive solve does when it would exceed its `max_nfe` budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BudgetPolicy {
    /// Fail with [`DiffusionGenerationError::BudgetExceeded`].
    #[default]
    Error,
    /// Solve that row again on a fixed uniform grid of `steps` steps of the same method
    /// (the evaluations already spent are counted in [`TokenStats::nfe`], so a token may cost
    /// up to `max_nfe + steps·stages + 1`).
    FixedGrid {
        /// Solver steps of the fallback.
        steps: usize,
    },
}

/// How the flow state of a new token is integrated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DiffusionMode {
    /// No diffusion: the frozen model's logits.
    Base,
    /// `steps` solver steps over a uniform grid of `steps + 1` points (0 steps = `Base`).
    Fixed {
        /// Solver steps.
        steps: usize,
        /// The method (adaptive methods run on the grid without error control).
        method: Method,
    },
    /// Error-controlled steps from `t = 0` to the final time.
    Adaptive {
        /// A method with an error estimate (bosh3, dopri5, tsit5, fehlberg2, adaptive_heun).
        method: Method,
        /// Relative tolerance.
        rtol: f64,
        /// Absolute tolerance.
        atol: f64,
        /// Most solver evaluations per token and row.
        max_nfe: Option<usize>,
        /// What happens at the budget.
        on_budget: BudgetPolicy,
    },
}

/// The x1 estimate formed from the logits at each evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum X1Estimate {
    /// The table row of a token drawn from `softmax(logits / T)` (the released configs).
    Sample,
    /// `softmax(logits / T) · table`.
    Average,
    /// The table row of the most likely token (temperature 0, whatever the schedule).
    Argmax,
    /// The reference's `clamp_predictions`.
    Clamp,
}

/// Where the temperature schedule is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum TemperatureOffset {
    /// The reference's `T(t + Δ)`: Δ the grid step for euler, heun2 and rk4, half of it for
    /// midpoint, 0 for adaptive methods ([`reference_temperature_offset`]).
    #[default]
    Reference,
    /// `T(t)`.
    None,
    /// `T(t + offset)`.
    Fixed(f64),
}

/// Classifier-free guidance toward a class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuidanceOptions {
    /// The class label of every row (`0..num_classes`; `num_classes` is the null class).
    pub class: usize,
    /// `w` in `v = w·v(class) + (1 - w)·v(null)`; 1 conditions without the unconditional
    /// branch.
    pub weight: f64,
    /// Guidance only for `t` in `[start, end]`.
    pub interval: Option<(f64, f64)>,
}

/// Options of diffusion generation. `None` fields take the adapter configuration's values.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionOptions {
    /// How the flow state is integrated.
    pub mode: DiffusionMode,
    /// The x1 estimate (default: the adapter's `nstep_x1_estimation`).
    pub x1_estimate: Option<X1Estimate>,
    /// The temperature schedule of the x1 estimate (default: the adapter's
    /// `nstep_temperature_schedule`).
    pub temperature: Option<TemperatureSchedule>,
    /// Where the schedule is evaluated.
    pub temperature_offset: TemperatureOffset,
    /// Classifier-free guidance.
    pub guidance: Option<GuidanceOptions>,
    /// Seed of the noise and of the `sample` estimator (see the module docs).
    pub seed: u64,
    /// The ODE state's dtype (default: f64 as the reference on the CPU (`flex`), f32 on other
    /// devices).
    pub state_dtype: Option<DType>,
    /// Answer evaluations at `t = 0` from the frozen pass (exact when the adapter preserves
    /// the frozen model at `t = 0`, as every released one does; ignored otherwise).
    pub fused_first_evaluation: bool,
    /// Reuse every time's modulations within a generation call (fixed grids only).
    pub cache_conditioning: bool,
    /// The end-point policy (default: zero velocity at `t ≥` the final time).
    pub endpoint: Option<EndpointPolicy>,
    /// Check each token's final flow state for NaN / infinity (one host read per token).
    pub check_finite: bool,
    /// Smallest adaptive step, always accepted (default 0, torchdiffeq's). The velocity is
    /// singular at `t = 1`; a field that is not contractive there (an untrained path) can
    /// drive the step size to underflow just before it, which a positive minimum (e.g.
    /// `1e-6`) prevents at the cost of error control over that last stretch.
    pub adaptive_min_step: f64,
}

impl Default for DiffusionOptions {
    /// The paper's default: midpoint, 7 steps (8 grid points, 15 NFE), seed 0.
    fn default() -> Self {
        Self::fixed(7)
    }
}

impl DiffusionOptions {
    /// No diffusion.
    pub fn base() -> Self {
        Self {
            mode: DiffusionMode::Base,
            ..Self::fixed(0)
        }
    }

    /// `steps` midpoint steps.
    pub fn fixed(steps: usize) -> Self {
        Self {
            mode: DiffusionMode::Fixed {
                steps,
                method: Method::Midpoint,
            },
            x1_estimate: None,
            temperature: None,
            temperature_offset: TemperatureOffset::Reference,
            guidance: None,
            seed: 0,
            state_dtype: None,
            fused_first_evaluation: true,
            cache_conditioning: true,
            endpoint: None,
            check_finite: true,
            adaptive_min_step: 0.0,
        }
    }

    /// An adaptive solve with `method` and tolerances, no budget.
    pub fn adaptive(method: Method, rtol: f64, atol: f64) -> Self {
        Self {
            mode: DiffusionMode::Adaptive {
                method,
                rtol,
                atol,
                max_nfe: None,
                on_budget: BudgetPolicy::Error,
            },
            ..Self::fixed(0)
        }
    }

    /// Sets the fixed-grid method (no effect on other modes).
    pub fn with_method(mut self, m: Method) -> Self {
        match &mut self.mode {
            DiffusionMode::Fixed { method, .. } | DiffusionMode::Adaptive { method, .. } => {
                *method = m
            }
            DiffusionMode::Base => {}
        }
        self
    }

    /// Sets the adaptive budget and its policy (no effect on other modes).
    pub fn with_max_nfe(mut self, budget: usize, policy: BudgetPolicy) -> Self {
        if let DiffusionMode::Adaptive {
            max_nfe, on_budget, ..
        } = &mut self.mode
        {
            *max_nfe = Some(budget);
            *on_budget = policy;
        }
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the x1 estimate.
    pub fn with_x1_estimate(mut self, estimate: X1Estimate) -> Self {
        self.x1_estimate = Some(estimate);
        self
    }

    /// Sets the temperature schedule.
    pub fn with_temperature(mut self, schedule: TemperatureSchedule) -> Self {
        self.temperature = Some(schedule);
        self
    }

    /// Guides toward `class` with weight `weight`.
    pub fn with_guidance(mut self, class: usize, weight: f64) -> Self {
        self.guidance = Some(GuidanceOptions {
            class,
            weight,
            interval: None,
        });
        self
    }

    /// Turns the fused first evaluation on or off.
    pub fn with_fused_first_evaluation(mut self, on: bool) -> Self {
        self.fused_first_evaluation = on;
        self
    }

    /// Sets the ODE state's dtype.
    pub fn with_state_dtype(mut self, dtype: DType) -> Self {
        self.state_dtype = Some(dtype);
        self
    }

    /// Whether the mode integrates anything.
    pub fn is_diffusion(&self) -> bool {
        !matches!(
            self.mode,
            DiffusionMode::Base | DiffusionMode::Fixed { steps: 0, .. }
        )
    }

    /// The paper's NFE per token of a fixed mode (`steps·stages + 1`), `None` for adaptive
    /// modes, 0 for the base.
    pub fn nominal_nfe(&self) -> Option<usize> {
        match self.mode {
            DiffusionMode::Base | DiffusionMode::Fixed { steps: 0, .. } => Some(0),
            DiffusionMode::Fixed { steps, method } => Some(steps * method.tableau().stages() + 1),
            DiffusionMode::Adaptive { .. } => None,
        }
    }
}

/// Counts and time of one [`DiffusionStep::next_logits`] call (one new token of every row).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokenStats {
    /// Rows in the batch.
    pub rows: usize,
    /// Per row, the paper's NFE: solver evaluations (fused and zero-velocity ones included)
    /// plus the final evaluation; 0 without diffusion.
    pub nfe: Vec<usize>,
    /// Diffusion-path forwards actually run, the final one included (a batched forward of
    /// the whole batch, or of both guidance branches, counts once).
    pub diffusion_forwards: usize,
    /// Evaluations at `t = 0` answered from the frozen pass.
    pub fused_evaluations: usize,
    /// Evaluations at `t ≥ 1` answered with a zero velocity.
    pub zero_velocity_evaluations: usize,
    /// Accepted solver steps (summed over rows for adaptive solves).
    pub accepted_steps: usize,
    /// Rejected adaptive steps.
    pub rejected_steps: usize,
    /// Rows that fell back to a fixed grid at the budget.
    pub budget_fallbacks: usize,
    /// Host time of the call (the device may still be working when it returns; the
    /// generation loop's sampling waits for it).
    pub time: Duration,
}

impl TokenStats {
    /// The mean NFE over the rows.
    pub fn mean_nfe(&self) -> f64 {
        if self.nfe.is_empty() {
            0.0
        } else {
            self.nfe.iter().sum::<usize>() as f64 / self.nfe.len() as f64
        }
    }
}

/// Statistics of a diffusion generation call: one [`TokenStats`] per step (the prefill's
/// first).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DiffusionStats {
    /// Per step call, in order.
    pub tokens: Vec<TokenStats>,
}

impl DiffusionStats {
    /// Mean NFE per token and row.
    pub fn mean_nfe_per_token(&self) -> f64 {
        let (sum, n) = self.tokens.iter().fold((0, 0), |(s, n), t| {
            (s + t.nfe.iter().sum::<usize>(), n + t.nfe.len())
        });
        if n == 0 { 0.0 } else { sum as f64 / n as f64 }
    }

    /// Diffusion forwards run in all calls.
    pub fn diffusion_forwards(&self) -> usize {
        self.tokens.iter().map(|t| t.diffusion_forwards).sum()
    }

    /// Fused evaluations in all calls.
    pub fn fused_evaluations(&self) -> usize {
        self.tokens.iter().map(|t| t.fused_evaluations).sum()
    }

    /// Host time of all calls.
    pub fn total_time(&self) -> Duration {
        self.tokens.iter().map(|t| t.time).sum()
    }
}

/// The result of [`Generator::generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionOutput {
    /// Sequences, stops, timings (as base generation).
    pub generation: GenerationOutput,
    /// NFE and forwards per token.
    pub diffusion: DiffusionStats,
}

/// A frozen model with an optional diffusion path and the options of generating with it.
///
/// Without a path, or in [`DiffusionMode::Base`], it is the frozen model
/// ([`Generator::is_diffusion`] is false) and its steps return exactly [`BaseStep`]'s logits.
/// The vocabulary's flow table is computed on first use and kept.
///
/// [`BaseStep`]: super::BaseStep
#[derive(Debug)]
pub struct Generator<'m> {
    base: &'m CausalLm,
    path: Option<&'m DiffusionPath>,
    options: DiffusionOptions,
    estimation: X1Estimation,
    temperature: TemperatureSchedule,
    guidance: Guidance,
    state_dtype: DType,
    fused: bool,
    table: OnceCell<Tensor<2>>,
}

/// The most solver steps a token may take on a fixed grid (or a budget's fixed-grid
/// fallback): far above the paper's largest setting (64 steps, 127 NFE), low enough that a
/// mistyped count fails at once instead of building a grid that never ends.
pub const MAX_SOLVER_STEPS: usize = 100_000;

/// The largest NFE budget per token an adaptive solve may be given.
pub const MAX_NFE_PER_TOKEN: usize = 1_000_000;

impl<'m> Generator<'m> {
    /// A generator over `base` and `path`, checking the options against them.
    ///
    /// # Errors
    /// [`DiffusionGenerationError::Diffusion`] for a path built for another base, an
    /// invalid adapter configuration or class labels;
    /// [`DiffusionGenerationError::Invalid`] for invalid options (a method without error
    /// estimate in adaptive mode, tolerances, a budget, steps above [`MAX_SOLVER_STEPS`] or
    /// [`MAX_NFE_PER_TOKEN`], temperature, guidance weight or interval, a state dtype the
    /// device lacks).
    pub fn new(
        base: &'m CausalLm,
        path: Option<&'m DiffusionPath>,
        options: DiffusionOptions,
    ) -> Result<Self, DiffusionGenerationError> {
        let invalid = |field, reason: String| DiffusionGenerationError::Invalid { field, reason };
        if let Some(p) = path {
            p.check_base(base)?;
        }
        match options.mode {
            DiffusionMode::Adaptive {
                method,
                rtol,
                atol,
                max_nfe,
                on_budget,
            } => {
                if !method.is_adaptive() {
                    return Err(invalid(
                        "method",
                        format!("{method} has no error estimate; use it with a fixed grid"),
                    ));
                }
                AdaptiveController::new(rtol, atol)
                    .with_step_bounds(options.adaptive_min_step, f64::INFINITY)
                    .validate()
                    .map_err(|e| invalid("tolerances", e.to_string()))?;
                if max_nfe == Some(0) {
                    return Err(invalid("max_nfe", "must be at least 1".into()));
                }
                if let Some(n) = max_nfe.filter(|&n| n > MAX_NFE_PER_TOKEN) {
                    return Err(invalid(
                        "max_nfe",
                        format!("{n} is above the limit of {MAX_NFE_PER_TOKEN} per token"),
                    ));
                }
                match on_budget {
                    BudgetPolicy::FixedGrid { steps: 0 } => {
                        return Err(invalid(
                            "on_budget",
                            "a fixed-grid fallback needs at least 1 step".into(),
                        ));
                    }
                    BudgetPolicy::FixedGrid { steps } if steps > MAX_SOLVER_STEPS => {
                        return Err(invalid(
                            "on_budget",
                            format!(
                                "a fallback of {steps} steps is above the limit of \
                                 {MAX_SOLVER_STEPS} per token"
                            ),
                        ));
                    }
                    _ => {}
                }
            }
            DiffusionMode::Fixed { steps, .. } if steps > MAX_SOLVER_STEPS => {
                return Err(invalid(
                    "steps",
                    format!("{steps} is above the limit of {MAX_SOLVER_STEPS} per token"),
                ));
            }
            DiffusionMode::Base | DiffusionMode::Fixed { .. } => {}
        }
        let config = path.map(|p| p.config().clone()).unwrap_or_default();
        let mut estimation = config.x1_estimation().map_err(DiffusionError::from)?;
        let mut temperature = options
            .temperature
            .unwrap_or(config.nstep_temperature_schedule);
        temperature
            .validate()
            .map_err(|e| invalid("temperature", e.to_string()))?;
        match options.x1_estimate {
            None => {}
            Some(X1Estimate::Argmax) => temperature = TemperatureSchedule::Constant(0.0),
            Some(e) => {
                estimation.estimator = match e {
                    X1Estimate::Sample => X1Estimator::Sample,
                    X1Estimate::Average => X1Estimator::Average,
                    _ => X1Estimator::Clamp,
                };
                if estimation.estimator == X1Estimator::Clamp {
                    estimation.renormalize = None;
                } else if config.nstep_normalize_x1_predictions {
                    estimation.renormalize = Some(config.rescaling());
                }
            }
        }
        let mut guidance = Guidance::disabled();
        if let Some(g) = options.guidance {
            guidance = Guidance::new(g.weight).map_err(|e| invalid("guidance", e.to_string()))?;
            if let Some((a, b)) = g.interval {
                guidance = guidance
                    .with_interval(a, b)
                    .map_err(|e| invalid("guidance", e.to_string()))?;
            }
            if let Some(p) = path {
                let null = p.null_class().ok_or_else(|| {
                    DiffusionError::ClassLabels(
                        "this adapter has no guidance classes \
                         (guidance_modulation_num_classes is unset)"
                            .into(),
                    )
                })?;
                if g.class > null {
                    return Err(DiffusionError::ClassLabels(format!(
                        "class {} is outside 0..={null} ({null} = null class)",
                        g.class
                    ))
                    .into());
                }
            }
        }
        let device = base.device();
        let state_dtype = match options.state_dtype {
            Some(d) => {
                if !d.is_float() || !device.supports_dtype(d) {
                    return Err(invalid(
                        "state_dtype",
                        format!("{d:?} is not a float dtype of this device"),
                    ));
                }
                d
            }
            // The reference's f64 on the CPU; GPU backends lack or emulate f64.
            None if device == Device::flex() => DType::F64,
            None => DType::F32,
        };
        let fused = options.fused_first_evaluation
            && path.is_some_and(|p| p.config().preserve_behavior_at_flow_start);
        Ok(Self {
            base,
            path,
            options,
            estimation,
            temperature,
            guidance,
            state_dtype,
            fused,
            table: OnceCell::new(),
        })
    }

    /// The frozen model alone.
    pub fn base_only(base: &'m CausalLm) -> Self {
        Self::new(base, None, DiffusionOptions::base()).expect("base options are valid")
    }

    /// The frozen model.
    pub fn base(&self) -> &'m CausalLm {
        self.base
    }

    /// The diffusion path, if any.
    pub fn path(&self) -> Option<&'m DiffusionPath> {
        self.path
    }

    /// The options.
    pub fn options(&self) -> &DiffusionOptions {
        &self.options
    }

    /// Whether tokens come from diffusion (a path and a mode with steps).
    pub fn is_diffusion(&self) -> bool {
        self.active_path().is_some()
    }

    /// Whether evaluations at `t = 0` are answered from the frozen pass.
    pub fn fuses_first_evaluation(&self) -> bool {
        self.fused
    }

    /// The ODE state's dtype.
    pub fn state_dtype(&self) -> DType {
        self.state_dtype
    }

    /// The x1 estimation rule in use.
    pub fn estimation(&self) -> X1Estimation {
        self.estimation
    }

    /// The temperature schedule in use.
    pub fn temperature(&self) -> TemperatureSchedule {
        self.temperature
    }

    fn active_path(&self) -> Option<&'m DiffusionPath> {
        self.path.filter(|_| self.options.is_diffusion())
    }

    /// The vocabulary's flow table `[vocab, d]` (computed on first use), if there is a path.
    pub fn vocabulary_table(&self) -> Option<Tensor<2>> {
        let path = self.path?;
        Some(
            self.table
                .get_or_init(|| path.vocabulary_table(self.base))
                .clone(),
        )
    }

    /// A new per-token step (its noise streams and statistics start empty).
    pub fn step(&self) -> DiffusionStep<'_> {
        DiffusionStep {
            generator: self,
            cache: TimeConditioningCache::default(),
            cache_batch: 0,
            stats: DiffusionStats::default(),
            token: 0,
            row_keys: Vec::new(),
            given_keys: None,
            noise: None,
        }
    }

    /// Generates continuations of `prompts` (see [`generate`]) and returns
    /// them with the diffusion statistics.
    ///
    /// # Errors
    /// As [`generate`]; diffusion failures are
    /// [`GenerationError::Step`] holding a [`DiffusionGenerationError`].
    pub fn generate<F>(
        &self,
        tokenizer: Option<&Tokenizer>,
        prompts: &[Vec<u32>],
        config: &GenerationConfig,
        on_token: F,
    ) -> Result<DiffusionOutput, GenerationError>
    where
        F: FnMut(&TokenEvent<'_>) -> Flow,
    {
        let mut step = self.step();
        let generation = generate(&mut step, tokenizer, prompts, config, on_token)?;
        Ok(DiffusionOutput {
            generation,
            diffusion: step.into_stats(),
        })
    }
}

/// The [`TokenStep`] of a [`Generator`]: the frozen pass, then the flow state's ODE for the
/// new position, then the logits at the final time.
///
/// Keep one step per generation call (the generation loop's first call, with an empty cache,
/// restarts its token counter and noise streams).
#[derive(Debug)]
pub struct DiffusionStep<'g> {
    generator: &'g Generator<'g>,
    cache: TimeConditioningCache,
    cache_batch: usize,
    stats: DiffusionStats,
    token: usize,
    row_keys: Vec<u64>,
    given_keys: Option<Vec<u64>>,
    noise: Option<Tensor<3>>,
}

/// The 64-bit FNV-1a hash of token ids (little-endian bytes), the default row key.
pub fn prompt_key(ids: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for byte in id.to_le_bytes() {
            h ^= byte as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Row `row_key`'s generator for its `token`-th new token under `seed` (see the module docs).
pub fn token_rng(seed: u64, row_key: u64, token: usize) -> HostRng {
    HostRng::new(seed).derive(row_key).derive(token as u64)
}

impl<'g> DiffusionStep<'g> {
    /// Uses `noise` as the initial flow states: token `k` of row `r` starts at
    /// `noise[k, r]` (already scaled: these are the `x₀`, not unit normals).
    ///
    /// # Shapes
    /// - `noise`: `[tokens, batch, d]`
    ///
    /// # Errors
    /// [`DiffusionGenerationError::Invalid`] if the flow dimension differs from the path's or
    /// there is no path.
    pub fn with_initial_noise(
        mut self,
        noise: Tensor<3>,
    ) -> Result<Self, DiffusionGenerationError> {
        let Some(path) = self.generator.path else {
            return Err(DiffusionGenerationError::Invalid {
                field: "initial noise",
                reason: "the generator has no diffusion path".into(),
            });
        };
        let d = path.flow_dim();
        if noise.dims()[2] != d {
            return Err(DiffusionGenerationError::Invalid {
                field: "initial noise",
                reason: format!("shape {:?}, expected [tokens, batch, {d}]", noise.dims()),
            });
        }
        self.noise = Some(noise);
        Ok(self)
    }

    /// Uses these row keys instead of the prompts' hashes (one per row; e.g. distinct keys
    /// for identical prompts).
    pub fn with_row_keys(mut self, keys: Vec<u64>) -> Self {
        self.given_keys = Some(keys);
        self
    }

    /// The statistics so far.
    pub fn stats(&self) -> &DiffusionStats {
        &self.stats
    }

    /// The statistics, consuming the step.
    pub fn into_stats(self) -> DiffusionStats {
        self.stats
    }

    /// The conditioning cache (for inspection: entries and hits).
    pub fn conditioning_cache(&self) -> &TimeConditioningCache {
        &self.cache
    }

    /// Starts a generation call: resets the token counter and derives the row keys.
    fn begin(
        &mut self,
        input_ids: &Tensor<2, Int>,
        options: &ForwardOptions,
    ) -> Result<(), DiffusionGenerationError> {
        let [b, seq] = input_ids.dims();
        self.token = 0;
        if b != self.cache_batch {
            self.cache.clear();
            self.cache_batch = b;
        }
        self.row_keys = match &self.given_keys {
            Some(keys) => {
                if keys.len() != b {
                    return Err(DiffusionGenerationError::Invalid {
                        field: "row keys",
                        reason: format!("{} keys for a batch of {b}", keys.len()),
                    });
                }
                keys.clone()
            }
            None if self.generator.active_path().is_none() => Vec::new(),
            None => {
                let ids: Vec<i64> = int_vec(input_ids.clone());
                let mask: Option<Vec<i64>> = options.attention_mask.clone().map(|m| {
                    let len = m.dims()[1];
                    int_vec(m.narrow(1, len - seq, seq))
                });
                (0..b)
                    .map(|r| {
                        let row: Vec<u32> = (0..seq)
                            .filter(|&j| mask.as_ref().is_none_or(|m| m[r * seq + j] != 0))
                            .map(|j| ids[r * seq + j] as u32)
                            .collect();
                        prompt_key(&row)
                    })
                    .collect()
            }
        };
        Ok(())
    }

    /// The initial states `[batch, 1, d]` and the rows' generators for the current token.
    fn initial_states(
        &self,
        path: &DiffusionPath,
        batch: usize,
        device: &Device,
    ) -> Result<(Tensor<3>, Vec<HostRng>), DiffusionGenerationError> {
        let gen_ = self.generator;
        let d = path.flow_dim();
        let mut rngs: Vec<HostRng> = (0..batch)
            .map(|r| {
                let key = self.row_keys.get(r).copied().unwrap_or(r as u64);
                token_rng(gen_.options.seed, key, self.token)
            })
            .collect();
        let x0 = match &self.noise {
            Some(noise) => {
                let [tokens, rows, _] = noise.dims();
                if self.token >= tokens {
                    return Err(DiffusionGenerationError::NoiseExhausted {
                        given: tokens,
                        token: self.token,
                    });
                }
                if rows != batch {
                    return Err(DiffusionGenerationError::Invalid {
                        field: "initial noise",
                        reason: format!("noise for {rows} rows, the batch has {batch}"),
                    });
                }
                noise
                    .clone()
                    .narrow(0, self.token, 1)
                    .reshape([batch, 1, d])
                    .to_device(device)
                    .cast(gen_.state_dtype)
            }
            None => {
                let sigma = path.config().noise_rescaling;
                let mut values = Vec::with_capacity(batch * d);
                for rng in &mut rngs {
                    values.extend(rng.normal_vec(d).into_iter().map(|z| z * sigma));
                }
                Tensor::from_data(
                    TensorData::new(values, [batch, 1, d]),
                    (device, gen_.state_dtype),
                )
            }
        };
        Ok((x0, rngs))
    }

    /// A velocity field over `context` with the generator's options.
    fn field<'f>(
        &'f self,
        path: &'f DiffusionPath,
        context: FlowContext,
        initial_logits: Option<Tensor<3>>,
        rngs: Vec<HostRng>,
        times: &[f64],
        cached: bool,
    ) -> Result<FlowVelocityField<'f>, DiffusionGenerationError> {
        let gen_ = self.generator;
        let rows = context.batch();
        let method = match gen_.options.mode {
            DiffusionMode::Fixed { method, .. } | DiffusionMode::Adaptive { method, .. } => method,
            DiffusionMode::Base => Method::Euler,
        };
        let offset = match gen_.options.temperature_offset {
            TemperatureOffset::Reference => reference_temperature_offset(method, times),
            TemperatureOffset::None => 0.0,
            TemperatureOffset::Fixed(o) => o,
        };
        let final_time = times[times.len() - 1];
        let table = gen_
            .vocabulary_table()
            .expect("a diffusion step has a path");
        let mut field = FlowVelocityField::new(path, gen_.base, context, table)?
            .with_estimation(gen_.estimation)
            .with_temperature(gen_.temperature)
            .with_temperature_offset(offset)
            .with_endpoint(
                gen_.options
                    .endpoint
                    .unwrap_or(EndpointPolicy::ZeroAtOrAfter(final_time)),
            )
            .with_row_rngs(rngs)?;
        if let Some(g) = gen_.options.guidance {
            let labels = Tensor::<1, Int>::from_data(
                TensorData::new(vec![g.class as i64; rows], [rows]),
                &gen_.base.device(),
            );
            field =
                field.with_validated_guidance(ClassLabels::PerSequence(labels), gen_.guidance)?;
        }
        if cached {
            field = field.with_conditioning_cache(&self.cache);
        }
        if let Some(l) = initial_logits {
            field = field.with_initial_logits(l)?;
        }
        Ok(field)
    }

    /// One token of diffusion for every row; returns the final logits `[batch, vocab]`.
    fn diffuse(
        &self,
        path: &DiffusionPath,
        context: FlowContext,
        initial_logits: Option<Tensor<3>>,
    ) -> Result<(Tensor<2>, TokenStats), DiffusionGenerationError> {
        let gen_ = self.generator;
        let batch = context.batch();
        let device = gen_.base.device();
        let final_time = path.config().nstep_final_timestep;
        let (x0, rngs) = self.initial_states(path, batch, &device)?;
        let mut stats = TokenStats {
            rows: batch,
            ..Default::default()
        };
        let logits = match gen_.options.mode {
            DiffusionMode::Fixed { steps, method } => {
                let times = l2d_solvers::linspace(0.0, final_time, steps + 1);
                let solver = Solver::new(method)
                    .with_controller(StepController::RequestedTimes)
                    .with_check_finite(false);
                let cached = gen_.options.cache_conditioning;
                let mut field = self.field(path, context, initial_logits, rngs, &times, cached)?;
                let (x, s) = field.solve(&solver, x0, &times)?;
                self.check_finite(&x)?;
                let logits = field.logits(final_time, &x)?;
                stats.nfe = vec![s.nfe + 1; batch];
                stats.diffusion_forwards = field.model_calls();
                stats.fused_evaluations = field.fused_evals();
                stats.zero_velocity_evaluations = s.zero_velocity_evals;
                stats.accepted_steps = s.accepted;
                logits
            }
            DiffusionMode::Adaptive {
                method,
                rtol,
                atol,
                max_nfe,
                on_budget,
            } => {
                let times = [0.0, final_time];
                let controller = AdaptiveController::new(rtol, atol)
                    .with_step_bounds(gen_.options.adaptive_min_step, f64::INFINITY);
                let mut solver = Solver::new(method)
                    .with_controller(StepController::Adaptive(controller))
                    .with_check_finite(false);
                if let Some(m) = max_nfe {
                    solver = solver.with_max_nfe(m);
                }
                let mut rows = Vec::with_capacity(batch);
                for (r, rng) in rngs.into_iter().enumerate() {
                    let ctx = context.narrow_batch(r, 1)?;
                    let init = initial_logits.as_ref().map(|l| l.clone().narrow(0, r, 1));
                    let x0r = x0.clone().narrow(0, r, 1);
                    let mut field = self.field(path, ctx, init, vec![rng], &times, false)?;
                    let (x, nfe) = match field.solve(&solver, x0r.clone(), &times) {
                        Ok((x, s)) => {
                            stats.zero_velocity_evaluations += s.zero_velocity_evals;
                            stats.accepted_steps += s.accepted;
                            stats.rejected_steps += s.rejected;
                            (x, s.nfe)
                        }
                        Err(DiffusionError::Solver(SolverError::MaxNfeExceeded {
                            max_nfe,
                            nfe,
                            t,
                        })) => match on_budget {
                            BudgetPolicy::Error => {
                                return Err(DiffusionGenerationError::BudgetExceeded {
                                    row: r,
                                    max_nfe,
                                    nfe,
                                    t,
                                });
                            }
                            BudgetPolicy::FixedGrid { steps } => {
                                let grid = l2d_solvers::linspace(0.0, final_time, steps + 1);
                                let fixed = Solver::new(method)
                                    .with_controller(StepController::RequestedTimes)
                                    .with_check_finite(false);
                                let (x, s) = field.solve(&fixed, x0r, &grid)?;
                                stats.budget_fallbacks += 1;
                                stats.zero_velocity_evaluations += s.zero_velocity_evals;
                                stats.accepted_steps += s.accepted;
                                (x, nfe + s.nfe)
                            }
                        },
                        Err(e) => return Err(e.into()),
                    };
                    self.check_finite(&x)?;
                    rows.push(field.logits(final_time, &x)?);
                    stats.nfe.push(nfe + 1);
                    stats.diffusion_forwards += field.model_calls();
                    stats.fused_evaluations += field.fused_evals();
                }
                Tensor::cat(rows, 0)
            }
            DiffusionMode::Base => unreachable!("a base step has no active path"),
        };
        let vocab = logits.dims()[2];
        Ok((logits.reshape([batch, vocab]), stats))
    }

    fn check_finite(&self, x: &Tensor<3>) -> Result<(), DiffusionGenerationError> {
        if self.generator.options.check_finite && !x.clone().is_finite().all().into_scalar::<bool>()
        {
            return Err(DiffusionGenerationError::NonFinite { token: self.token });
        }
        Ok(())
    }
}

fn int_vec<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
    t.into_data().iter::<i64>().collect()
}

impl TokenStep for DiffusionStep<'_> {
    fn vocab_size(&self) -> usize {
        self.generator.base.config().vocab_size
    }

    fn context_length(&self) -> Option<usize> {
        Some(self.generator.base.config().max_position_embeddings)
    }

    fn device(&self) -> Device {
        self.generator.base.device()
    }

    fn next_logits(
        &mut self,
        input_ids: Tensor<2, Int>,
        cache: &mut KvCache,
        options: &ForwardOptions,
    ) -> Result<Tensor<2>, GenerationError> {
        let start = Instant::now();
        if cache.is_empty() {
            self.begin(&input_ids, options)?;
        }
        let gen_ = self.generator;
        let base = gen_.base;
        let [batch, seq] = input_ids.dims();
        let (hidden, context) = base.forward_hidden(input_ids, Some(cache), options);
        let result = match gen_.active_path() {
            None => {
                // Exactly BaseStep: the same forward, the last position, the same head.
                let last = hidden.narrow(1, seq - 1, 1);
                let logits = base.logits(last).reshape([batch, self.vocab_size()]);
                let stats = TokenStats {
                    rows: batch,
                    nfe: vec![0; batch],
                    ..Default::default()
                };
                (logits, stats)
            }
            Some(path) => {
                let flow = FlowContext::new(hidden, cache, &context)
                    .map_err(DiffusionGenerationError::from)?
                    .last_query();
                let initial = gen_
                    .fused
                    .then(|| base.logits(flow.hidden.clone()).cast(DType::F32));
                self.diffuse(path, flow, initial)?
            }
        };
        let (logits, mut stats) = result;
        stats.time = start.elapsed();
        self.stats.tokens.push(stats);
        self.token += 1;
        Ok(logits)
    }
}
