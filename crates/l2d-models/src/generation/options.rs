//! The options of diffusion generation: how each token is integrated (base, a fixed grid, an
//! adaptive solver), the x1 estimate and its temperature, guidance, and the NFE budget.

use std::fmt;
use std::str::FromStr;

use burn::tensor::DType;
use l2d_core::{TemperatureSchedule, X1Estimator};
use l2d_solvers::{AdaptiveController, Diffusion, EndpointPolicy, Method};

use super::DiffusionGenerationError;

/// The fixed-grid method of a mode written without one (the authors' default, `midpoint`).
pub const DEFAULT_FIXED_METHOD: Method = Method::Midpoint;
/// The adaptive method of a mode written without one.
pub const DEFAULT_ADAPTIVE_METHOD: Method = Method::Dopri5;
/// The adaptive tolerances of a mode written without them (the authors' `rtol = atol = 1e-5`).
pub const DEFAULT_TOLERANCE: f64 = 1e-5;
/// The diffusion coefficient of an `sde` mode written without one (SiT's default: `sigma`,
/// `w(t) = 1 − t`).
pub const DEFAULT_SDE_DIFFUSION: Diffusion = Diffusion::Sigma { norm: 1.0 };

/// The most solver steps a token may take on a fixed grid (or a budget's fixed-grid
/// fallback): far above the paper's largest setting (64 steps, 127 NFE), low enough that a
/// mistyped count fails at once instead of building a grid that never ends.
pub const MAX_SOLVER_STEPS: usize = 100_000;

/// The largest NFE budget per token an adaptive solve may be given.
pub const MAX_NFE_PER_TOKEN: usize = 1_000_000;

/// What an adaptive solve does when it would exceed its `max_nfe` budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BudgetPolicy {
    /// Fail with [`DiffusionGenerationError::BudgetExceeded`](super::DiffusionGenerationError::BudgetExceeded).
    #[default]
    Error,
    /// Solve that row again on a fixed uniform grid of `steps` steps of the same method
    /// (the evaluations already spent are counted in [`TokenStats::nfe`](super::TokenStats::nfe), so a token may cost
    /// up to `max_nfe + steps·stages + 1`).
    FixedGrid {
        /// Solver steps of the fallback.
        steps: usize,
    },
}

/// How the flow state of a new token is integrated.
///
/// Its text form is the one grammar of a diffusion setting (`l2d eval --settings`, reports,
/// configurations):
/// - `base`: the frozen model;
/// - `N` or `steps=N`, optionally `:METHOD`: `N` steps over a uniform grid (default
///   `midpoint`);
/// - `adaptive` with optional `:METHOD`, `:rtol=X`, `:atol=Y`, `:max-nfe=N` and, with a
///   budget, `:fallback=N` (re-solve on a grid of `N` steps at the budget instead of failing);
/// - `sde:N` or `sde:steps=N`, optionally `:DIFFUSION` (see [`Diffusion`]; default
///   `sigma=1`): `N` Euler–Maruyama steps of the SDE with the ODE's marginals
///   ([`l2d_solvers::FlowSdeSampler`]), the last one drift-only.
///
/// ```
/// use l2d_models::generation::DiffusionMode;
///
/// let m: DiffusionMode = "adaptive:bosh3:rtol=1e-3:max-nfe=32".parse()?;
/// assert_eq!(m.to_string(), "adaptive:bosh3:rtol=0.001:atol=0.00001:max-nfe=32");
/// assert_eq!("8".parse::<DiffusionMode>()?.to_string(), "steps=8:midpoint");
/// assert_eq!("base".parse::<DiffusionMode>()?, DiffusionMode::Base);
/// assert!("adaptive:euler".parse::<DiffusionMode>().is_err()); // no error estimate
/// assert_eq!("sde:8".parse::<DiffusionMode>()?.to_string(), "sde:steps=8:sigma=1");
/// # Ok::<(), l2d_models::generation::InvalidDiffusionMode>(())
/// ```
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
    /// `steps` Euler–Maruyama steps of the flow-matching SDE over a uniform grid: the same
    /// marginals as the ODE, with fresh noise `g(t)·dW` on every step but the last.
    Sde {
        /// Sampler steps (one evaluation each).
        steps: usize,
        /// The diffusion coefficient `g(t)`.
        diffusion: Diffusion,
    },
}

/// A diffusion mode's text that does not parse (the message says why).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDiffusionMode(pub String);

impl DiffusionMode {
    /// Checks that the mode can run, whatever built it (the text grammar, the command line's
    /// flags, a struct literal): an adaptive method with an error estimate, positive finite
    /// tolerances, a budget and fallback of at least 1 and within [`MAX_NFE_PER_TOKEN`] /
    /// [`MAX_SOLVER_STEPS`], steps within [`MAX_SOLVER_STEPS`], an SDE with at least one step
    /// and a finite, non-negative diffusion coefficient. [`Generator::new`](super::Generator::new)
    /// and [`FromStr`] call it; a front end can call it before loading a model.
    ///
    /// # Errors
    /// [`DiffusionGenerationError::Invalid`] naming the field (`method`, `tolerances`,
    /// `max_nfe`, `on_budget`, `steps`, `diffusion`).
    pub fn validate(&self) -> Result<(), DiffusionGenerationError> {
        let invalid = |field, reason: String| DiffusionGenerationError::Invalid { field, reason };
        match *self {
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
                    .validate()
                    .map_err(|e| invalid("tolerances", e.to_string()))?;
                match max_nfe {
                    Some(0) => return Err(invalid("max_nfe", "must be at least 1".into())),
                    Some(n) if n > MAX_NFE_PER_TOKEN => {
                        return Err(invalid(
                            "max_nfe",
                            format!("{n} is above the limit of {MAX_NFE_PER_TOKEN} per token"),
                        ));
                    }
                    _ => {}
                }
                match on_budget {
                    BudgetPolicy::FixedGrid { steps: 0 } => Err(invalid(
                        "on_budget",
                        "a fixed-grid fallback needs at least 1 step".into(),
                    )),
                    BudgetPolicy::FixedGrid { steps } if steps > MAX_SOLVER_STEPS => Err(invalid(
                        "on_budget",
                        format!(
                            "a fallback of {steps} steps is above the limit of \
                             {MAX_SOLVER_STEPS} per token"
                        ),
                    )),
                    _ => Ok(()),
                }
            }
            DiffusionMode::Fixed { steps, .. } | DiffusionMode::Sde { steps, .. }
                if steps > MAX_SOLVER_STEPS =>
            {
                Err(invalid(
                    "steps",
                    format!("{steps} is above the limit of {MAX_SOLVER_STEPS} per token"),
                ))
            }
            DiffusionMode::Sde { steps: 0, .. } => {
                Err(invalid("steps", "an SDE needs at least 1 step".into()))
            }
            DiffusionMode::Sde { diffusion, .. } => {
                let value = match diffusion {
                    Diffusion::Zero | Diffusion::Custom(_) => 0.0,
                    Diffusion::Constant(v)
                    | Diffusion::Sigma { norm: v }
                    | Diffusion::Decreasing { norm: v }
                    | Diffusion::IncreasingDecreasing { norm: v } => v,
                };
                if value.is_finite() && value >= 0.0 {
                    Ok(())
                } else {
                    Err(invalid(
                        "diffusion",
                        format!("{diffusion}: the coefficient must be finite and non-negative"),
                    ))
                }
            }
            DiffusionMode::Base | DiffusionMode::Fixed { .. } => Ok(()),
        }
    }
}

fn parse_method(name: &str) -> Result<Method, InvalidDiffusionMode> {
    name.parse()
        .map_err(|e: l2d_solvers::UnknownMethod| InvalidDiffusionMode(e.to_string()))
}

/// A number as the grammar writes it (short decimals, else scientific).
fn number(x: f64) -> String {
    let s = format!("{x}");
    if s.len() > 12 { format!("{x:e}") } else { s }
}

impl fmt::Display for DiffusionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiffusionMode::Base => f.write_str("base"),
            DiffusionMode::Fixed { steps, method } => write!(f, "steps={steps}:{method}"),
            DiffusionMode::Adaptive {
                method,
                rtol,
                atol,
                max_nfe,
                on_budget,
            } => {
                write!(
                    f,
                    "adaptive:{method}:rtol={}:atol={}",
                    number(*rtol),
                    number(*atol)
                )?;
                if let Some(n) = max_nfe {
                    write!(f, ":max-nfe={n}")?;
                }
                if let BudgetPolicy::FixedGrid { steps } = on_budget {
                    write!(f, ":fallback={steps}")?;
                }
                Ok(())
            }
            DiffusionMode::Sde { steps, diffusion } => write!(f, "sde:steps={steps}:{diffusion}"),
        }
    }
}

impl FromStr for DiffusionMode {
    type Err = InvalidDiffusionMode;

    /// Parses the grammar, then [`DiffusionMode::validate`]s the result, so a setting that
    /// could never run is refused while parsing.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mode = parse_mode(s)?;
        mode.validate()
            .map_err(|e| InvalidDiffusionMode(format!("{s:?}: {e}")))?;
        Ok(mode)
    }
}

/// The grammar of [`DiffusionMode`], before [`DiffusionMode::validate`].
fn parse_mode(s: &str) -> Result<DiffusionMode, InvalidDiffusionMode> {
    let bad = |m: String| Err(InvalidDiffusionMode(m));
    let s = s.trim();
    let mut parts = s.split(':');
    let head = parts.next().unwrap_or_default();
    if head == "base" {
        return match parts.next() {
            None => Ok(DiffusionMode::Base),
            Some(p) => bad(format!("`base` takes no options, found {p:?} in {s:?}")),
        };
    }
    if head == "adaptive" {
        let (mut method, mut rtol, mut atol) = (
            DEFAULT_ADAPTIVE_METHOD,
            DEFAULT_TOLERANCE,
            DEFAULT_TOLERANCE,
        );
        let (mut max_nfe, mut fallback) = (None, None);
        for part in parts {
            let positive = |v: &str, what: &str| {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .ok_or_else(|| {
                        InvalidDiffusionMode(format!("{what} must be a positive number, got {v:?}"))
                    })
            };
            let count = |v: &str, what: &str| {
                v.parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| InvalidDiffusionMode(format!("{what} must be >= 1, got {v:?}")))
            };
            match part.split_once('=') {
                Some(("rtol", v)) => rtol = positive(v, "rtol")?,
                Some(("atol", v)) => atol = positive(v, "atol")?,
                Some(("max-nfe" | "max_nfe", v)) => max_nfe = Some(count(v, "max-nfe")?),
                Some(("fallback", v)) => fallback = Some(count(v, "fallback")?),
                Some((k, _)) => return bad(format!("unknown adaptive option {k:?} in {s:?}")),
                None => method = parse_method(part)?,
            }
        }
        if !method.is_adaptive() {
            return bad(format!(
                "solver {method} has no error estimate and cannot be adaptive; use \
                 `steps=N:{method}` or an adaptive solver (bosh3, dopri5, tsit5, ...)"
            ));
        }
        if fallback.is_some() && max_nfe.is_none() {
            return bad(format!("`fallback` needs a `max-nfe` budget in {s:?}"));
        }
        return Ok(DiffusionMode::Adaptive {
            method,
            rtol,
            atol,
            max_nfe,
            on_budget: match fallback {
                Some(steps) => BudgetPolicy::FixedGrid { steps },
                None => BudgetPolicy::Error,
            },
        });
    }
    let steps = |text: &str| {
        let Ok(steps) = text.strip_prefix("steps=").unwrap_or(text).parse::<usize>() else {
            return Err(InvalidDiffusionMode(format!(
                "unknown setting {s:?}; expected `base`, `N[:SOLVER]`, `adaptive[:...]` or \
                 `sde:N[:DIFFUSION]`"
            )));
        };
        if steps == 0 {
            return Err(InvalidDiffusionMode(
                "diffusion steps must be at least 1 (use `base` for none)".into(),
            ));
        }
        Ok(steps)
    };
    if head == "sde" {
        let Some(n) = parts.next() else {
            return bad(format!("`sde` needs its steps: `sde:N` in {s:?}"));
        };
        let steps = steps(n)?;
        let diffusion = match parts.next() {
            None => DEFAULT_SDE_DIFFUSION,
            Some(d) => d
                .parse::<Diffusion>()
                .map_err(|e| InvalidDiffusionMode(e.to_string()))?,
        };
        if let Some(extra) = parts.next() {
            return bad(format!("unexpected {extra:?} in {s:?}"));
        }
        return Ok(DiffusionMode::Sde { steps, diffusion });
    }
    let steps = steps(head)?;
    let method = match parts.next() {
        None => DEFAULT_FIXED_METHOD,
        Some(name) => parse_method(name)?,
    };
    if let Some(extra) = parts.next() {
        return bad(format!("unexpected {extra:?} in {s:?}"));
    }
    Ok(DiffusionMode::Fixed { steps, method })
}

/// Where the temperature schedule is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum TemperatureOffset {
    /// The reference's `T(t + Δ)`: Δ the grid step for euler, heun2 and rk4, half of it for
    /// midpoint, 0 for adaptive methods ([`reference_temperature_offset`](crate::diffusion::reference_temperature_offset)).
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
    pub x1_estimate: Option<X1Estimator>,
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
                method: DEFAULT_FIXED_METHOD,
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

    /// The default options with `mode` (for example a parsed setting:
    /// `DiffusionOptions::from_mode("adaptive:bosh3".parse()?)`).
    pub fn from_mode(mode: DiffusionMode) -> Self {
        Self {
            mode,
            ..Self::fixed(0)
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
            DiffusionMode::Base | DiffusionMode::Sde { .. } => {}
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
    pub fn with_x1_estimate(mut self, estimate: X1Estimator) -> Self {
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

    /// The paper's NFE per token of a fixed mode (`steps·stages + 1`; an SDE's `steps + 1`),
    /// `None` for adaptive modes, 0 for the base.
    pub fn nominal_nfe(&self) -> Option<usize> {
        match self.mode {
            DiffusionMode::Base | DiffusionMode::Fixed { steps: 0, .. } => Some(0),
            DiffusionMode::Fixed { steps, method } => Some(steps * method.tableau().stages() + 1),
            DiffusionMode::Sde { steps, .. } => Some(steps + 1),
            DiffusionMode::Adaptive { .. } => None,
        }
    }
}
