//! A stochastic sampler for flow matching with the same marginals as the ODE.
//!
//! For the interpolant `x_t = t·x₁ + (1 − t)·x₀` with `x₀ ~ N(0, s²I)` (L2D: `s = 64`), the
//! score is recovered from the velocity (Tweedie; SiT's `get_score_from_velocity` for `s = 1`):
//!
//! `∇log p_t(x) = (t·v(x, t) − x) / ((1 − t)·s²)`,
//!
//! and for any `g(t) ≥ 0` the SDE `dX = [v + ½g(t)²·∇log p_t] dt + g(t) dW` has the marginals
//! `p_t` of the ODE `dX = v dt` (the extra drift cancels the diffusion in the Fokker–Planck
//! equation). [`FlowSdeSampler`] integrates it with Euler–Maruyama:
//!
//! `x ← x + [v + ½g²·(t·v − x)/((1 − t)·s²)]·Δt + g·√Δt·ξ`, `ξ ~ N(0, I)`.
//!
//! `g = 0` is exactly the Euler ODE solver. The last step is drift-only by default
//! ([`LastStep::Denoise`]): on a grid ending at 1 it is the jump `x̂₁ = x + (1 − t)·v`, so the
//! `1/(1 − t)` of the score is never evaluated near the singular end and no fresh noise is
//! left in the sample.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::SolverError;
use crate::field::{StepInfo, VectorField};
use crate::grid::validate_times;
use crate::solve::{SaveAt, Solution, Stats};
use crate::state::State;

/// A source of standard normal states.
///
/// The state type decides how a sample is made ([`State::standard_normal_like`]);
/// [`SeededNoise`] draws from a seeded host generator so a seed gives the same noise on every
/// backend. Closures `FnMut(&S) -> S` implement it too.
pub trait Noise<S> {
    /// A state shaped like `like` with independent `N(0, 1)` elements.
    ///
    /// # Shapes
    /// The sample has the shape of `like`.
    fn standard_normal_like(&mut self, like: &S) -> S;
}

impl<S, F> Noise<S> for F
where
    F: FnMut(&S) -> S,
{
    fn standard_normal_like(&mut self, like: &S) -> S {
        self(like)
    }
}

/// Standard normal noise from a seeded ChaCha8 host generator (reproducible across
/// backends; samples are drawn in `f64` in row-major order, then converted to the state).
#[derive(Debug, Clone)]
pub struct SeededNoise {
    rng: ChaCha8Rng,
}

impl SeededNoise {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SeededNoise {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl<S: State> Noise<S> for SeededNoise {
    fn standard_normal_like(&mut self, like: &S) -> S {
        like.standard_normal_like(&mut self.rng)
    }
}

/// The diffusion coefficient `g(t)` multiplying `dW`.
///
/// The SiT forms are written for their `w(t)` (drift `v + w·score`, noise `√(2w)·dW`) and
/// scaled by the noise scale `s` so that the stochasticity is relative to the data scale:
/// `g(t) = s·√(2·w(t))`.
///
/// Every form but [`Diffusion::Custom`] has a text form (for command lines and settings):
/// `zero`, `constant=G`, `sigma[=NORM]`, `decreasing[=NORM]`,
/// `increasing-decreasing[=NORM]` (`NORM` defaults to 1, SiT's `diffusion_norm`).
///
/// ```
/// use l2d_solvers::Diffusion;
///
/// let d: Diffusion = "sigma".parse()?;
/// assert_eq!(d, Diffusion::Sigma { norm: 1.0 });
/// assert_eq!(d.to_string(), "sigma=1");
/// assert_eq!("decreasing=0.5".parse::<Diffusion>()?, Diffusion::Decreasing { norm: 0.5 });
/// assert!("sigma=-1".parse::<Diffusion>().is_err());
/// # Ok::<(), l2d_solvers::InvalidDiffusion>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub enum Diffusion {
    /// `g = 0`: the probability-flow ODE, integrated by Euler exactly.
    Zero,
    /// A constant `g` in state units per √time (not scaled by `s`).
    Constant(f64),
    /// SiT `sigma` (its default): `w = norm·(1 − t)`.
    Sigma {
        /// SiT's `diffusion_norm`.
        norm: f64,
    },
    /// SiT `decreasing`: `w = ¼·(norm·cos(πt) + 1)²`.
    Decreasing {
        /// SiT's `diffusion_norm`.
        norm: f64,
    },
    /// SiT `increasing-decreasing`: `w = norm·sin²(πt)`.
    IncreasingDecreasing {
        /// SiT's `diffusion_norm`.
        norm: f64,
    },
    /// Any `g(t)` (absolute, not scaled by `s`).
    Custom(fn(f64) -> f64),
}

impl Diffusion {
    /// `g(t)` for noise scale `s`.
    pub fn g(&self, t: f64, noise_scale: f64) -> f64 {
        let sit = |w: f64| noise_scale * (2.0 * w).max(0.0).sqrt();
        match *self {
            Diffusion::Zero => 0.0,
            Diffusion::Constant(g) => g,
            Diffusion::Sigma { norm } => sit(norm * (1.0 - t)),
            Diffusion::Decreasing { norm } => {
                let c = norm * (std::f64::consts::PI * t).cos() + 1.0;
                sit(0.25 * c * c)
            }
            Diffusion::IncreasingDecreasing { norm } => {
                let s = (std::f64::consts::PI * t).sin();
                sit(norm * s * s)
            }
            Diffusion::Custom(g) => g(t),
        }
    }
}

/// Two custom coefficients are equal when they are the same function.
impl PartialEq for Diffusion {
    fn eq(&self, other: &Self) -> bool {
        use Diffusion::*;
        match (*self, *other) {
            (Zero, Zero) => true,
            (Constant(a), Constant(b)) => a == b,
            (Sigma { norm: a }, Sigma { norm: b })
            | (Decreasing { norm: a }, Decreasing { norm: b })
            | (IncreasingDecreasing { norm: a }, IncreasingDecreasing { norm: b }) => a == b,
            (Custom(a), Custom(b)) => std::ptr::fn_addr_eq(a, b),
            _ => false,
        }
    }
}

/// A diffusion coefficient's text that does not parse (the message says why).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDiffusion(pub String);

impl std::fmt::Display for Diffusion {
    /// The text form ([`Diffusion::Custom`] writes `custom`, which does not parse back).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Diffusion::Zero => f.write_str("zero"),
            Diffusion::Constant(g) => write!(f, "constant={g}"),
            Diffusion::Sigma { norm } => write!(f, "sigma={norm}"),
            Diffusion::Decreasing { norm } => write!(f, "decreasing={norm}"),
            Diffusion::IncreasingDecreasing { norm } => write!(f, "increasing-decreasing={norm}"),
            Diffusion::Custom(_) => f.write_str("custom"),
        }
    }
}

impl std::str::FromStr for Diffusion {
    type Err = InvalidDiffusion;

    fn from_str(s: &str) -> Result<Self, InvalidDiffusion> {
        let s = s.trim();
        let (name, value) = match s.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (s, None),
        };
        let number = |default: Option<f64>| -> Result<f64, InvalidDiffusion> {
            match (value, default) {
                (None, Some(d)) => Ok(d),
                (None, None) => Err(InvalidDiffusion(format!(
                    "`{name}` needs a value: `{name}=G`"
                ))),
                (Some(v), _) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| {
                        InvalidDiffusion(format!(
                            "`{name}` must be a non-negative number, got {v:?}"
                        ))
                    }),
            }
        };
        match name {
            "zero" => match value {
                None => Ok(Diffusion::Zero),
                Some(v) => Err(InvalidDiffusion(format!(
                    "`zero` takes no value, got {v:?}"
                ))),
            },
            "constant" => Ok(Diffusion::Constant(number(None)?)),
            "sigma" => Ok(Diffusion::Sigma {
                norm: number(Some(1.0))?,
            }),
            "decreasing" => Ok(Diffusion::Decreasing {
                norm: number(Some(1.0))?,
            }),
            "increasing-decreasing" | "increasing_decreasing" => {
                Ok(Diffusion::IncreasingDecreasing {
                    norm: number(Some(1.0))?,
                })
            }
            other => Err(InvalidDiffusion(format!(
                "unknown diffusion coefficient {other:?}; known: zero, constant=G, sigma[=NORM], \
                 decreasing[=NORM], increasing-decreasing[=NORM]"
            ))),
        }
    }
}

/// How the last interval of the grid is integrated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LastStep {
    /// Drift-only Euler step `x + Δt·v` (no score, no noise): on a grid ending at 1 this is
    /// `x̂₁ = x + (1 − t)·v` (SiT's `last_step="Mean"` analogue).
    #[default]
    Denoise,
    /// A regular Euler–Maruyama step like every other.
    EulerMaruyama,
}

/// Euler–Maruyama sampler for the flow-matching SDE (see the module docs).
///
/// ```
/// use l2d_solvers::{Diffusion, FlowSdeSampler, SeededNoise, TimeGrid};
///
/// // x1 ~ N(2, 0) (a point mass), noise scale 1: v(x, t) = (2 - x)/(1 - t).
/// let mut field = |t: f64, x: &Vec<f64>| x.iter().map(|x| (2.0 - x) / (1.0 - t)).collect::<Vec<f64>>();
/// let sampler = FlowSdeSampler::new(1.0, Diffusion::Sigma { norm: 1.0 });
/// let ts = TimeGrid::uniform(0.0, 1.0, 21).times()?;
/// let sol = sampler.sample(&mut field, &mut SeededNoise::new(0), vec![0.3, -1.2], &ts)?;
/// assert!(sol.ys.last().unwrap().iter().all(|x| (x - 2.0).abs() < 1e-12));
/// assert_eq!(sol.stats.nfe, 20);
/// # Ok::<(), l2d_solvers::SolverError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FlowSdeSampler {
    /// Standard deviation `s` of the source noise `x₀ ~ N(0, s²I)` (L2D: 64).
    pub noise_scale: f64,
    /// The diffusion coefficient.
    pub diffusion: Diffusion,
    /// How the last interval is integrated.
    pub last_step: LastStep,
    /// Which grid times are kept.
    pub save_at: SaveAt,
    /// Check every state for NaN/∞.
    pub check_finite: bool,
}

impl FlowSdeSampler {
    /// A sampler with noise scale `s` and diffusion `g`, denoising last step, all times saved.
    pub fn new(noise_scale: f64, diffusion: Diffusion) -> Self {
        FlowSdeSampler {
            noise_scale,
            diffusion,
            last_step: LastStep::Denoise,
            save_at: SaveAt::All,
            check_finite: true,
        }
    }

    /// Sets the last-step rule.
    pub fn with_last_step(mut self, last_step: LastStep) -> Self {
        self.last_step = last_step;
        self
    }

    /// Sets which times are saved.
    pub fn with_save_at(mut self, save_at: SaveAt) -> Self {
        self.save_at = save_at;
        self
    }

    /// Integrates from `times[0]` (state `x0`) through the increasing grid `times ⊂ [0, 1]`;
    /// noise is drawn only where `g(t) ≠ 0`.
    ///
    /// # Shapes
    /// Every saved state has the shape of `x0`.
    ///
    /// # Errors
    /// Invalid grids (also decreasing ones, or points outside `[0, 1]`, or a stochastic step
    /// starting at `t = 1`), a non-positive noise scale, or a non-finite state.
    pub fn sample<S, F, N>(
        &self,
        field: &mut F,
        noise: &mut N,
        x0: S,
        times: &[f64],
    ) -> Result<Solution<S>, SolverError>
    where
        S: State,
        F: VectorField<S>,
        N: Noise<S>,
    {
        let direction = validate_times("times", times)?;
        if direction < 0.0 {
            return Err(SolverError::InvalidOption {
                name: "times",
                value: times[1],
                reason: "the SDE sampler integrates forward: times must increase",
            });
        }
        let (first, last) = (times[0], times[times.len() - 1]);
        if first < 0.0 || last > 1.0 {
            return Err(SolverError::InvalidOption {
                name: "times",
                value: if first < 0.0 { first } else { last },
                reason: "flow-matching times must lie in [0, 1]",
            });
        }
        if !(self.noise_scale.is_finite() && self.noise_scale > 0.0) {
            return Err(SolverError::InvalidOption {
                name: "noise_scale",
                value: self.noise_scale,
                reason: "must be positive and finite",
            });
        }
        if self.check_finite && !x0.is_finite() {
            return Err(SolverError::NonFiniteState { t: first, step: 0 });
        }
        let n = times.len();
        let s2 = self.noise_scale * self.noise_scale;
        let mut stats = Stats::default();
        let mut ts = Vec::new();
        let mut ys = Vec::new();
        if self.save_at == SaveAt::All {
            ts.push(first);
            ys.push(x0.clone());
        }
        let mut x = x0;
        for (k, w) in times.windows(2).enumerate() {
            let (t, t_next) = (w[0], w[1]);
            let dt = t_next - t;
            let info = StepInfo {
                step_start: t,
                step_size: dt,
                stage: 0,
                step_index: k,
            };
            let v = field.velocity(t, &x, &info);
            stats.nfe += 1;
            let is_last = k + 2 == n;
            let g = if is_last && self.last_step == LastStep::Denoise {
                0.0
            } else {
                self.diffusion.g(t, self.noise_scale)
            };
            x = if g == 0.0 {
                x.lin_comb(&[(dt, &v)])
            } else {
                if t >= 1.0 {
                    return Err(SolverError::InvalidOption {
                        name: "times",
                        value: t,
                        reason: "a stochastic step cannot start at t = 1 (the score is singular)",
                    });
                }
                let c = 0.5 * g * g / ((1.0 - t) * s2);
                let xi = noise.standard_normal_like(&x);
                S::weighted_sum(
                    (1.0 - c * dt, &x),
                    &[(dt * (1.0 + c * t), &v), (g * dt.sqrt(), &xi)],
                )
            };
            stats.steps += 1;
            stats.accepted += 1;
            if self.check_finite && !x.is_finite() {
                return Err(SolverError::NonFiniteState { t: t_next, step: k });
            }
            if self.save_at == SaveAt::All || is_last {
                ts.push(t_next);
                ys.push(x.clone());
            }
        }
        Ok(Solution { ts, ys, stats })
    }
}
