//! The settings of a sweep: the base model, a LoRA baseline, or diffusion with a fixed number
//! of steps, an adaptive solver or the SDE sampler.

use std::fmt;
use std::str::FromStr;

use l2d_models::generation::{BudgetPolicy, DiffusionMode};
use l2d_solvers::Diffusion;
use l2d_solvers::tableau::Method;
use serde::{Deserialize, Serialize};

pub use l2d_models::generation::{
    DEFAULT_ADAPTIVE_METHOD as DEFAULT_ADAPTIVE_SOLVER,
    DEFAULT_FIXED_METHOD as DEFAULT_FIXED_SOLVER, DEFAULT_TOLERANCE,
};

/// One point of a sweep.
///
/// Text forms (for `--settings`, comma-separated): `lora` (the model with a LoRA adapter,
/// `--lora FILE`, folded into its weights), or a diffusion setting in the grammar of
/// [`DiffusionMode`]:
/// - `base`: the frozen model alone;
/// - `N` or `steps=N`, optionally `:SOLVER` (`8`, `16:euler`): diffusion over a fixed grid of
///   `N` steps (default solver `midpoint`);
/// - `adaptive` with optional `:SOLVER`, `:rtol=X`, `:atol=Y`, `:max-nfe=N` parts
///   (`adaptive:dopri5:rtol=1e-3:atol=1e-3:max-nfe=64`);
/// - `sde:N` with an optional diffusion coefficient (`sde:16:sigma=0.5`): the SDE sampler.
///
/// ```
/// use l2d::eval::setting::Setting;
///
/// let s: Setting = "adaptive:bosh3:rtol=1e-3:max-nfe=32".parse()?;
/// assert_eq!(s.to_string(), "adaptive:bosh3:rtol=0.001:atol=0.00001:max-nfe=32");
/// assert_eq!("8".parse::<Setting>()?.to_string(), "steps=8:midpoint");
/// assert_eq!("base".parse::<Setting>()?, Setting::Base);
/// assert_eq!("lora".parse::<Setting>()?.to_string(), "lora");
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Setting {
    /// The frozen base model (no adapter, no diffusion).
    Base,
    /// The base model with a LoRA adapter merged into its weights (no diffusion).
    Lora,
    /// Diffusion over a fixed grid.
    Fixed {
        /// Solver steps.
        steps: usize,
        /// The solver.
        #[serde(with = "method_name")]
        solver: Method,
    },
    /// Diffusion with an adaptive solver.
    Adaptive {
        /// The solver (must have an error estimate).
        #[serde(with = "method_name")]
        solver: Method,
        /// Relative tolerance.
        rtol: f64,
        /// Absolute tolerance.
        atol: f64,
        /// Budget of function evaluations per token.
        max_nfe: Option<usize>,
        /// At the budget, solve the token again on a fixed grid of this many steps (without
        /// it, a token over budget fails the sweep).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fallback: Option<usize>,
    },
    /// Diffusion with the SDE sampler over a fixed grid.
    Sde {
        /// Sampler steps.
        steps: usize,
        /// The diffusion coefficient, in its text form (`sigma=1`).
        #[serde(with = "diffusion_text")]
        diffusion: Diffusion,
    },
}

mod diffusion_text {
    use l2d_solvers::Diffusion;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Diffusion, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Diffusion, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

mod method_name {
    use l2d_solvers::tableau::Method;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Method, D::Error> {
        let name = String::deserialize(d)?;
        super::parse_method(&name).map_err(serde::de::Error::custom)
    }
}

fn parse_method(name: &str) -> Result<Method, String> {
    name.parse()
        .map_err(|e: l2d_solvers::UnknownMethod| e.to_string())
}

impl Setting {
    /// Whether this setting needs a diffusion adapter.
    pub fn is_diffusion(&self) -> bool {
        !matches!(self, Setting::Base | Setting::Lora)
    }

    /// The ODE solver, if any (the SDE sampler's steps are Euler–Maruyama's).
    pub fn solver(&self) -> Option<Method> {
        match self {
            Setting::Base | Setting::Lora | Setting::Sde { .. } => None,
            Setting::Fixed { solver, .. } | Setting::Adaptive { solver, .. } => Some(*solver),
        }
    }
}

impl Setting {
    /// The diffusion mode of this setting (`base` and `lora` integrate nothing).
    pub fn mode(&self) -> DiffusionMode {
        match *self {
            Setting::Base | Setting::Lora => DiffusionMode::Base,
            Setting::Fixed { steps, solver } => DiffusionMode::Fixed {
                steps,
                method: solver,
            },
            Setting::Adaptive {
                solver,
                rtol,
                atol,
                max_nfe,
                fallback,
            } => DiffusionMode::Adaptive {
                method: solver,
                rtol,
                atol,
                max_nfe,
                on_budget: fallback.map_or(BudgetPolicy::Error, |steps| BudgetPolicy::FixedGrid {
                    steps,
                }),
            },
            Setting::Sde { steps, diffusion } => DiffusionMode::Sde { steps, diffusion },
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Lora => f.write_str("lora"),
            other => other.mode().fmt(f),
        }
    }
}

impl FromStr for Setting {
    type Err = String;

    /// `lora`, or a [`DiffusionMode`] in its grammar.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "lora" {
            return Ok(Setting::Lora);
        }
        if s.trim().starts_with("lora:") {
            return Err(format!("`lora` takes no options, found {s:?}"));
        }
        match s.parse::<DiffusionMode>().map_err(|e| e.to_string())? {
            DiffusionMode::Base => Ok(Setting::Base),
            DiffusionMode::Fixed { steps, method } => Ok(Setting::Fixed {
                steps,
                solver: method,
            }),
            DiffusionMode::Adaptive {
                method,
                rtol,
                atol,
                max_nfe,
                on_budget,
            } => Ok(Setting::Adaptive {
                solver: method,
                rtol,
                atol,
                max_nfe,
                fallback: match on_budget {
                    BudgetPolicy::Error => None,
                    BudgetPolicy::FixedGrid { steps } => Some(steps),
                },
            }),
            DiffusionMode::Sde { steps, diffusion } => Ok(Setting::Sde { steps, diffusion }),
        }
    }
}
