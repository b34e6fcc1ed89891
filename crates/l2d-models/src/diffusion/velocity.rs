//! The L2D velocity `v = (x̂₁ - x_t)/(1 - t)` over a cached frozen pass, and the
//! [`VectorField`] the solvers of `l2d-solvers` integrate (the reference's `compute_velocity`
//! and the `ode_fn` of `nstep_inference`).
//!
//! Like the reference, the state may be kept in f64: the model sees it cast to its own dtype,
//! `x̂₁` is formed from f32 logits and cast back, and the difference and division happen in
//! the state's dtype.

use burn::tensor::{DType, Tensor, TensorData};
use l2d_core::x1_estimate::x1_sample_with_uniforms;
use l2d_core::{
    HostRng, TemperatureSchedule, VelocitySchedule, X1Estimation, X1Estimator,
    normalize_flow_representation,
};
use l2d_guidance::Guidance;
use l2d_solvers::{
    EndpointPolicy, FlowSdeSampler, Method, Noise, Solution, Solver, SolverError, Stats, StepInfo,
    VectorField,
};

use super::conditioning::{ClassLabels, Timesteps};
use super::conditioning_cache::{Branches, TimeConditioningCache};
use super::context::FlowContext;
use super::error::DiffusionError;
use super::path::DiffusionPath;
use crate::config::Architecture;
use crate::decoder::CausalLm;

/// The time offset at which the reference evaluates its temperature schedule:
/// `T(t + Δ)` with Δ the last grid step for `euler`, `heun2` and the RK4s, half of it for
/// `midpoint`, and 0 for adaptive methods (`nstep_inference` of the reference).
pub fn reference_temperature_offset(method: Method, times: &[f64]) -> f64 {
    let last_step = match times {
        [.., a, b] => b - a,
        _ => 0.0,
    };
    match method {
        Method::Euler | Method::Heun2 | Method::Rk4Classic | Method::Rk4ThreeEighths => last_step,
        Method::Midpoint => last_step / 2.0,
        _ => 0.0,
    }
}

/// The end-point policy of the reference's `nstep_inference` for a base family and method.
///
/// The reference answers `t >= 1` with a zero velocity (the velocity's `1/(1-t)` is singular
/// there) for `heun*`, `rk*` and, in its Llama class, every adaptive method. Its Qwen2 class
/// lacks the adaptive branch: `dopri5`, `fehlberg2` and `bosh3` evaluate the model past
/// `t = 1` (`adaptive_heun` is still guarded, caught by its `heun` test). Euler and midpoint
/// never reach `t = 1`. Use this to reproduce the reference; new code should prefer
/// [`EndpointPolicy::ZeroAtOrAfter`]`(1.0)`, the default of [`FlowVelocityField::solve`].
pub fn reference_endpoint_policy(architecture: Architecture, method: Method) -> EndpointPolicy {
    let guarded = match method {
        Method::Euler | Method::Midpoint => false,
        Method::Heun2 | Method::Rk4Classic | Method::Rk4ThreeEighths | Method::AdaptiveHeun => true,
        _ => architecture != Architecture::Qwen2,
    };
    if guarded {
        EndpointPolicy::ZeroAtOrAfter(1.0)
    } else {
        EndpointPolicy::Evaluate
    }
}

/// The velocity field of the diffusion path at fixed frozen context: `v(t, x)` for flow
/// states `x` at the query positions of a [`FlowContext`], scalar `t`.
///
/// The vocabulary table is passed in once (compute it with
/// [`DiffusionPath::vocabulary_table`]). With guidance, the conditional and unconditional
/// branches run as one batched forward and their velocities are combined by
/// [`Guidance::combine`].
///
/// Options for generation: [`FlowVelocityField::with_conditioning_cache`] reuses each time's
/// modulation across evaluations and tokens, [`FlowVelocityField::with_initial_logits`] answers
/// the evaluations at `t = 0` from the frozen pass's logits (the fused first evaluation), and
/// [`FlowVelocityField::with_row_rngs`] gives every batch row its own generator for the
/// `sample` estimator.
///
/// As a [`VectorField`] it cannot return errors: an evaluation that fails (which
/// construction-time checks make unlikely) records the error ([`FlowVelocityField::take_error`])
/// and returns a NaN velocity, which stops the solver's finiteness check.
pub struct FlowVelocityField<'a> {
    path: &'a DiffusionPath,
    base: &'a CausalLm,
    context: FlowContext,
    doubled: Option<FlowContext>,
    table: Tensor<2>,
    estimation: X1Estimation,
    temperature: TemperatureSchedule,
    temperature_offset: f64,
    schedule: VelocitySchedule,
    rng: HostRng,
    classes: Option<ClassLabels>,
    guidance: Guidance,
    error: Option<DiffusionError>,
    model_calls: usize,
    endpoint: EndpointPolicy,
    cache: Option<&'a TimeConditioningCache>,
    initial_logits: Option<Tensor<3>>,
    fused_evals: usize,
    row_rngs: Option<Vec<HostRng>>,
}

impl std::fmt::Debug for FlowVelocityField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowVelocityField")
            .field("queries", &self.context.queries())
            .field("estimation", &self.estimation)
            .field("temperature", &self.temperature)
            .field("guidance", &self.guidance)
            .field("model_calls", &self.model_calls)
            .field("fused_evals", &self.fused_evals)
            .finish()
    }
}

impl<'a> FlowVelocityField<'a> {
    /// A field with the configuration's x1 estimation, temperature schedule and velocity
    /// schedule, no guidance, a generator seeded with 0.
    ///
    /// # Shapes
    /// - `table`: `[vocab, d]`
    ///
    /// # Errors
    /// [`DiffusionError::Shape`] if the table does not match the path; a base of other sizes.
    pub fn new(
        path: &'a DiffusionPath,
        base: &'a CausalLm,
        context: FlowContext,
        table: Tensor<2>,
    ) -> Result<Self, DiffusionError> {
        path.check_base(base)?;
        let (v, d) = (path.dims().vocab, path.flow_dim());
        if table.dims() != [v, d] {
            return Err(DiffusionError::Shape {
                tensor: "vocabulary flow table",
                expected: format!("[{v}, {d}]"),
                got: table.dims().to_vec(),
            });
        }
        let config = path.config();
        Ok(Self {
            path,
            base,
            context,
            doubled: None,
            table,
            estimation: config.x1_estimation()?,
            temperature: config.nstep_temperature_schedule,
            temperature_offset: 0.0,
            schedule: config.velocity_schedule,
            rng: HostRng::new(0),
            classes: None,
            guidance: Guidance::disabled(),
            error: None,
            model_calls: 0,
            endpoint: EndpointPolicy::ZeroAtOrAfter(1.0),
            cache: None,
            initial_logits: None,
            fused_evals: 0,
            row_rngs: None,
        })
    }

    /// Sets the x1 estimation rule.
    pub fn with_estimation(mut self, estimation: X1Estimation) -> Self {
        self.estimation = estimation;
        self
    }

    /// Sets the temperature schedule.
    pub fn with_temperature(mut self, temperature: TemperatureSchedule) -> Self {
        self.temperature = temperature;
        self
    }

    /// Evaluates the temperature at `t + offset` (see [`reference_temperature_offset`]).
    pub fn with_temperature_offset(mut self, offset: f64) -> Self {
        self.temperature_offset = offset;
        self
    }

    /// Sets the end-point policy [`FlowVelocityField::solve`] gives the solver (default: zero
    /// velocity at `t >= 1`; see [`reference_endpoint_policy`]).
    pub fn with_endpoint(mut self, endpoint: EndpointPolicy) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// Sets the generator of the `sample` estimator.
    pub fn with_rng(mut self, rng: HostRng) -> Self {
        self.rng = rng;
        self
    }

    /// Conditions on `classes`; with a guidance weight other than 1 the unconditional branch
    /// (null class) is evaluated too and combined, `v = w·v_c + (1-w)·v_u`.
    ///
    /// # Errors
    /// [`DiffusionError::ClassLabels`] if the path has no classes, the batch differs, or a
    /// label is out of range.
    pub fn with_guidance(
        self,
        classes: ClassLabels,
        guidance: Guidance,
    ) -> Result<Self, DiffusionError> {
        self.path.validate_class_labels(&classes)?;
        self.with_validated_guidance(classes, guidance)
    }

    /// [`FlowVelocityField::with_guidance`] for labels already checked with
    /// [`DiffusionPath::validate_class_labels`] (which reads two values back from the device;
    /// a generator checks its labels once, not once per token).
    ///
    /// # Errors
    /// [`DiffusionError::ClassLabels`] if the path has no classes or the batch differs.
    pub fn with_validated_guidance(
        mut self,
        classes: ClassLabels,
        guidance: Guidance,
    ) -> Result<Self, DiffusionError> {
        if self.path.null_class().is_none() {
            return Err(DiffusionError::ClassLabels(
                "this diffusion path has no guidance classes \
                 (guidance_modulation_num_classes is unset)"
                    .into(),
            ));
        }
        if classes.batch() != self.context.batch() {
            return Err(DiffusionError::ClassLabels(format!(
                "{} labels for a batch of {}",
                classes.batch(),
                self.context.batch()
            )));
        }
        if guidance.weight() != 1.0 {
            self.doubled = Some(self.context.repeat_batch(2));
        }
        self.classes = Some(classes);
        self.guidance = guidance;
        Ok(self)
    }

    /// Reuses every time's [`TimeConditioning`](super::TimeConditioning) through `cache`
    /// (scalar times only). The cache must belong to this path, these class labels and this
    /// batch size (see [`TimeConditioningCache`]).
    pub fn with_conditioning_cache(mut self, cache: &'a TimeConditioningCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The fused first evaluation: at `t = 0` the gate `head(c_t) - head(c_0)` is exactly
    /// zero, so the logits there are the frozen model's whatever the flow state; `logits`
    /// (the frozen pass's logits at the query positions, f32) answer every evaluation at
    /// `t = 0` without a diffusion forward. Such evaluations are counted by
    /// [`FlowVelocityField::fused_evals`], not by [`FlowVelocityField::model_calls`].
    ///
    /// # Shapes
    /// - `logits`: `[batch, n, vocab]`
    ///
    /// # Errors
    /// [`DiffusionError::Invalid`] when the path does not preserve the frozen model at `t = 0`
    /// (`preserve_behavior_at_flow_start = false`); [`DiffusionError::Shape`] for logits of
    /// another shape.
    pub fn with_initial_logits(mut self, logits: Tensor<3>) -> Result<Self, DiffusionError> {
        if !self.path.config().preserve_behavior_at_flow_start {
            return Err(DiffusionError::Invalid {
                field: "initial logits",
                reason: "the path does not preserve the frozen model at t = 0 \
                         (preserve_behavior_at_flow_start = false), so its logits there are \
                         not the frozen pass's"
                    .into(),
            });
        }
        let want = [
            self.context.batch(),
            self.context.queries(),
            self.path.dims().vocab,
        ];
        if logits.dims() != want {
            return Err(DiffusionError::Shape {
                tensor: "initial logits",
                expected: format!("{want:?} (batch, query positions, vocab)"),
                got: logits.dims().to_vec(),
            });
        }
        self.initial_logits = Some(logits.cast(DType::F32));
        Ok(self)
    }

    /// One generator per batch row for the `sample` estimator: row `r`'s draws (its
    /// conditional, then its unconditional branch with guidance) come from `rngs[r]` only, so
    /// a row's result does not depend on the other rows of the batch.
    ///
    /// # Errors
    /// [`DiffusionError::Invalid`] unless there is one generator per row.
    pub fn with_row_rngs(mut self, rngs: Vec<HostRng>) -> Result<Self, DiffusionError> {
        if rngs.len() != self.context.batch() {
            return Err(DiffusionError::Invalid {
                field: "row generators",
                reason: format!(
                    "{} generators for a batch of {}",
                    rngs.len(),
                    self.context.batch()
                ),
            });
        }
        self.row_rngs = Some(rngs);
        Ok(self)
    }

    /// The row generators (after the draws made so far), if set.
    pub fn into_row_rngs(self) -> Option<Vec<HostRng>> {
        self.row_rngs
    }

    /// The frozen context the field reads.
    pub fn context(&self) -> &FlowContext {
        &self.context
    }

    /// Model forwards made so far (a guided evaluation is one batched forward).
    pub fn model_calls(&self) -> usize {
        self.model_calls
    }

    /// Evaluations at `t = 0` answered from the initial logits, without a forward.
    pub fn fused_evals(&self) -> usize {
        self.fused_evals
    }

    /// The error of the first failed evaluation, if any.
    pub fn take_error(&mut self) -> Option<DiffusionError> {
        self.error.take()
    }

    /// The conditional f32 logits at time `t` for flow states `x` (any float dtype), e.g. the
    /// final logits at `t = 1` after a solve.
    ///
    /// # Shapes
    /// - `x`: `[batch, n, d]`; output: `[batch, n, vocab]`
    ///
    /// # Errors
    /// As [`DiffusionPath::forward_cached`].
    pub fn logits(&mut self, t: f64, x: &Tensor<3>) -> Result<Tensor<3>, DiffusionError> {
        let model_x = x.clone().cast(self.base.dtype());
        self.forward(t, model_x, false)
    }

    /// One diffusion forward at scalar `t`: the conditional batch, or with `stacked` the
    /// `[conditional; unconditional]` batch (`x` already stacked).
    fn forward(
        &mut self,
        t: f64,
        x: Tensor<3>,
        stacked: bool,
    ) -> Result<Tensor<3>, DiffusionError> {
        let null = self.path.null_class().unwrap_or_default();
        let labels = match (&self.classes, stacked) {
            (Some(c), true) => Some(c.stack_with_null(null)),
            (c, _) => c.clone(),
        };
        let context = match (stacked, &self.doubled) {
            (true, Some(d)) => d,
            _ => &self.context,
        };
        let timesteps = Timesteps::Scalar(t);
        self.model_calls += 1;
        let (path, base) = (self.path, self.base);
        match self.cache {
            None => path.forward_cached(base, context, x, &timesteps, labels.as_ref()),
            Some(cache) => {
                let branches = if stacked {
                    Branches::Stacked
                } else {
                    Branches::Conditional
                };
                let conditioning = cache.get_or_try_insert(t, branches, || {
                    path.time_conditioning(
                        base,
                        &timesteps,
                        labels.as_ref(),
                        context.batch(),
                        context.queries(),
                        &x.device(),
                    )
                })?;
                path.forward_conditioned(base, context, x, &timesteps, &conditioning)
            }
        }
    }

    /// The x1 estimate of `logits` (`rows` rows of `n` positions; `stacked`: two branches per
    /// row, conditional rows first).
    fn estimate(
        &mut self,
        logits: Tensor<3>,
        temperature: f64,
    ) -> Result<Tensor<3>, DiffusionError> {
        let sampled = temperature > 0.0 && self.estimation.estimator == X1Estimator::Sample;
        let Some(rngs) = self.row_rngs.as_mut().filter(|_| sampled) else {
            return Ok(self.estimation.estimate(
                logits,
                &self.table,
                temperature,
                &mut self.rng,
            )?);
        };
        let [rows, n, _] = logits.dims();
        let b = rngs.len();
        let mut uniforms = Vec::with_capacity(rows * n);
        for i in 0..rows {
            uniforms.extend(rngs[i % b].uniform_vec(n));
        }
        let uniforms = Tensor::<1>::from_data(
            TensorData::new(uniforms, [rows * n]),
            (&logits.device(), logits.dtype()),
        );
        let estimate = x1_sample_with_uniforms(logits, &self.table, temperature, uniforms)?;
        Ok(match self.estimation.renormalize {
            Some(rescaling) => normalize_flow_representation(estimate, rescaling),
            None => estimate,
        })
    }

    /// The velocity at `t` for flow states `x`, in `x`'s dtype.
    ///
    /// # Shapes
    /// - `x`: `[batch, n, d]`; output: the same
    ///
    /// # Errors
    /// As [`DiffusionPath::forward_cached`]; x1 estimation errors.
    pub fn try_velocity(&mut self, t: f64, x: &Tensor<3>) -> Result<Tensor<3>, DiffusionError> {
        let temperature = self.temperature.at(t + self.temperature_offset);
        let state_dtype = x.dtype();
        let guided = self.classes.is_some() && self.guidance.needs_unconditional(t);
        let logits = match (&self.initial_logits, t == 0.0) {
            (Some(initial), true) => {
                self.fused_evals += 1;
                if guided {
                    l2d_guidance::stack_branches(initial.clone())
                } else {
                    initial.clone()
                }
            }
            _ => {
                let model_x = x.clone().cast(self.base.dtype());
                if guided {
                    self.forward(t, l2d_guidance::stack_branches(model_x), true)?
                } else {
                    self.forward(t, model_x, false)?
                }
            }
        };
        let x1_hat = self.estimate(logits, temperature)?.cast(state_dtype);
        if guided {
            let x2 = l2d_guidance::stack_branches(x.clone());
            let v = self.schedule.velocity(x1_hat, x2, t);
            Ok(self.guidance.combine_stacked(t, v)?)
        } else {
            Ok(self.schedule.velocity(x1_hat, x.clone(), t))
        }
    }

    /// Integrates the flow states from `x0` through `times` with `solver` (whose end-point
    /// policy is replaced by the field's, see [`FlowVelocityField::with_endpoint`]), returning
    /// the final state
    /// (in `x0`'s dtype) and the solver's statistics.
    ///
    /// # Shapes
    /// - `x0`: `[batch, n, d]`; output: the same
    ///
    /// # Errors
    /// A failed evaluation's error, else the solver's.
    pub fn solve(
        &mut self,
        solver: &Solver,
        x0: Tensor<3>,
        times: &[f64],
    ) -> Result<(Tensor<3>, Stats), DiffusionError> {
        self.check_initial_state(&x0)?;
        let solver = solver
            .clone()
            .with_endpoint(self.endpoint)
            .with_save_at(l2d_solvers::SaveAt::Last);
        let result = solver.solve(self, x0, times);
        self.last_state(result)
    }

    /// Samples the flow state from `x0` over `times` with the SDE `sampler` (the field's
    /// end-point policy does not apply: the sampler never evaluates at the last time), drawing
    /// its step noise from `noise`; returns the final state and the sampler's statistics.
    ///
    /// # Shapes
    /// - `x0`: `[batch, n, d]`; output: the same
    ///
    /// # Errors
    /// A failed evaluation's error, else the sampler's.
    pub fn sample(
        &mut self,
        sampler: &FlowSdeSampler,
        noise: &mut impl Noise<Tensor<3>>,
        x0: Tensor<3>,
        times: &[f64],
    ) -> Result<(Tensor<3>, Stats), DiffusionError> {
        self.check_initial_state(&x0)?;
        let sampler = sampler.clone().with_save_at(l2d_solvers::SaveAt::Last);
        let result = sampler.sample(self, noise, x0, times);
        self.last_state(result)
    }

    fn check_initial_state(&self, x0: &Tensor<3>) -> Result<(), DiffusionError> {
        let (b, n, d) = (
            self.context.batch(),
            self.context.queries(),
            self.path.flow_dim(),
        );
        if x0.dims() != [b, n, d] {
            return Err(DiffusionError::Shape {
                tensor: "initial flow state",
                expected: format!("[{b}, {n}, {d}]"),
                got: x0.dims().to_vec(),
            });
        }
        Ok(())
    }

    /// The last state of a solve, or the evaluation error that stopped it.
    fn last_state(
        &mut self,
        result: Result<Solution<Tensor<3>>, SolverError>,
    ) -> Result<(Tensor<3>, Stats), DiffusionError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let solution = result?;
        let stats = solution.stats;
        let last = solution.into_last().ok_or(DiffusionError::Invalid {
            field: "times",
            reason: "the solve returned no state".into(),
        })?;
        Ok((last, stats))
    }
}

impl VectorField<Tensor<3>> for FlowVelocityField<'_> {
    fn velocity(&mut self, t: f64, x: &Tensor<3>, _step: &StepInfo) -> Tensor<3> {
        match self.try_velocity(t, x) {
            Ok(v) => v,
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(e);
                }
                x.clone().mul_scalar(f64::NAN)
            }
        }
    }
}

/// The dtype the reference keeps its ODE state in.
pub const REFERENCE_STATE_DTYPE: DType = DType::F64;
