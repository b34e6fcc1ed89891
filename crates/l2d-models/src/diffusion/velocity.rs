//! The L2D velocity `v = (x̂₁ - x_t)/(1 - t)` over a cached frozen pass, and the
//! [`VectorField`] the solvers of `l2d-solvers` integrate (the reference's `compute_velocity`
//! and the `ode_fn` of `nstep_inference`).
//!
//! Like the reference, the state may be kept in f64: the model sees it cast to its own dtype,
//! `x̂₁` is formed from f32 logits and cast back, and the difference and division happen in
//! the state's dtype.

use burn::tensor::{DType, Tensor};
use l2d_core::{HostRng, TemperatureSchedule, VelocitySchedule, X1Estimation};
use l2d_guidance::Guidance;
use l2d_solvers::{EndpointPolicy, Method, Solver, Stats, StepInfo, VectorField};

use super::conditioning::{ClassLabels, Timesteps};
use super::context::FlowContext;
use super::error::DiffusionError;
use super::path::DiffusionPath;
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
pub fn reference_endpoint_policy(model_type: &str, method: Method) -> EndpointPolicy {
    let guarded = match method {
        Method::Euler | Method::Midpoint => false,
        Method::Heun2 | Method::Rk4Classic | Method::Rk4ThreeEighths | Method::AdaptiveHeun => true,
        _ => model_type != "qwen2",
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
}

impl std::fmt::Debug for FlowVelocityField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowVelocityField")
            .field("queries", &self.context.queries())
            .field("estimation", &self.estimation)
            .field("temperature", &self.temperature)
            .field("guidance", &self.guidance)
            .field("model_calls", &self.model_calls)
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
        mut self,
        classes: ClassLabels,
        guidance: Guidance,
    ) -> Result<Self, DiffusionError> {
        self.path.validate_class_labels(&classes)?;
        if classes.batch() != self.context.batch() {
            return Err(DiffusionError::ClassLabels(format!(
                "{} labels for a batch of {}",
                classes.batch(),
                self.context.batch()
            )));
        }
        self.doubled = Some(self.context.repeat_batch(2));
        self.classes = Some(classes);
        self.guidance = guidance;
        Ok(self)
    }

    /// The frozen context the field reads.
    pub fn context(&self) -> &FlowContext {
        &self.context
    }

    /// Model forwards made so far (a guided evaluation is one batched forward).
    pub fn model_calls(&self) -> usize {
        self.model_calls
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
        self.model_calls += 1;
        self.path.forward_cached(
            self.base,
            &self.context,
            x.clone().cast(self.base.dtype()),
            &Timesteps::Scalar(t),
            self.classes.as_ref(),
        )
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
        let model_x = x.clone().cast(self.base.dtype());
        let guided = self.guidance.needs_unconditional(t);
        let logits = match (&self.classes, guided) {
            (Some(classes), true) => {
                let null = self.path.null_class().unwrap_or_default();
                let stacked = l2d_guidance::stack_branches(model_x);
                let labels = classes.stack_with_null(null);
                let ctx = self.doubled.as_ref().unwrap_or(&self.context);
                self.model_calls += 1;
                self.path.forward_cached(
                    self.base,
                    ctx,
                    stacked,
                    &Timesteps::Scalar(t),
                    Some(&labels),
                )?
            }
            _ => {
                self.model_calls += 1;
                self.path.forward_cached(
                    self.base,
                    &self.context,
                    model_x,
                    &Timesteps::Scalar(t),
                    self.classes.as_ref(),
                )?
            }
        };
        let x1_hat = self
            .estimation
            .estimate(logits, &self.table, temperature, &mut self.rng)?
            .cast(state_dtype);
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
        let solver = solver
            .clone()
            .with_endpoint(self.endpoint)
            .with_save_at(l2d_solvers::SaveAt::Last);
        let result = solver.solve(self, x0, times);
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
