//! The settings of a sweep: the base model, or diffusion with a fixed number of steps or an
//! adaptive solver.

use std::fmt;
use std::str::FromStr;

use l2d_solvers::tableau::Method;
use serde::{Deserialize, Serialize};

/// Default fixed-grid solver (the authors' default, `midpoint`).
pub const DEFAULT_FIXED_SOLVER: Method = Method::Midpoint;
/// Default adaptive solver.
pub const DEFAULT_ADAPTIVE_SOLVER: Method = Method::Dopri5;
/// Default adaptive tolerances (the authors' `rtol = atol = 1e-5`).
pub const DEFAULT_TOLERANCE: f64 = 1e-5;

/// One point of a sweep.
///
/// Text forms (for `--settings`, comma-separated):
/// - `base`: the frozen model alone;
/// - `lora`: the model with a LoRA adapter (`--lora FILE`) folded into its weights;
/// - `N` or `steps=N`, optionally `:SOLVER` (`8`, `16:euler`): diffusion over a fixed grid of
///   `N` steps (default solver `midpoint`);
/// - `adaptive` with optional `:SOLVER`, `:rtol=X`, `:atol=Y`, `:max-nfe=N` parts
///   (`adaptive:dopri5:rtol=1e-3:atol=1e-3:max-nfe=64`).
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
    },
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

    /// The solver's name, if any.
    pub fn solver(&self) -> Option<Method> {
        match self {
            Setting::Base | Setting::Lora => None,
            Setting::Fixed { solver, .. } | Setting::Adaptive { solver, .. } => Some(*solver),
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Base => f.write_str("base"),
            Setting::Lora => f.write_str("lora"),
            Setting::Fixed { steps, solver } => write!(f, "steps={steps}:{solver}"),
            Setting::Adaptive {
                solver,
                rtol,
                atol,
                max_nfe,
            } => {
                write!(
                    f,
                    "adaptive:{solver}:rtol={}:atol={}",
                    num(*rtol),
                    num(*atol)
                )?;
                if let Some(n) = max_nfe {
                    write!(f, ":max-nfe={n}")?;
                }
                Ok(())
            }
        }
    }
}

fn num(x: f64) -> String {
    let s = format!("{x}");
    if s.len() > 12 { format!("{x:e}") } else { s }
}

impl FromStr for Setting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let mut parts = s.split(':');
        let head = parts.next().unwrap_or_default();
        if head == "base" || head == "lora" {
            return match parts.next() {
                None if head == "base" => Ok(Setting::Base),
                None => Ok(Setting::Lora),
                Some(p) => Err(format!("`{head}` takes no options, found {p:?} in {s:?}")),
            };
        }
        if head == "adaptive" {
            let (mut solver, mut rtol, mut atol, mut max_nfe) = (
                DEFAULT_ADAPTIVE_SOLVER,
                DEFAULT_TOLERANCE,
                DEFAULT_TOLERANCE,
                None,
            );
            for part in parts {
                let positive = |v: &str, what: &str| -> Result<f64, String> {
                    v.parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite() && *x > 0.0)
                        .ok_or_else(|| format!("{what} must be a positive number, got {v:?}"))
                };
                match part.split_once('=') {
                    Some(("rtol", v)) => rtol = positive(v, "rtol")?,
                    Some(("atol", v)) => atol = positive(v, "atol")?,
                    Some(("max-nfe" | "max_nfe", v)) => {
                        max_nfe = Some(
                            v.parse::<usize>()
                                .ok()
                                .filter(|&n| n > 0)
                                .ok_or_else(|| format!("max-nfe must be >= 1, got {v:?}"))?,
                        )
                    }
                    Some((k, _)) => return Err(format!("unknown adaptive option {k:?} in {s:?}")),
                    None => solver = parse_method(part)?,
                }
            }
            if !solver.is_adaptive() {
                return Err(format!(
                    "solver {solver} has no error estimate and cannot be adaptive; use \
                     `steps=N:{solver}` or an adaptive solver (bosh3, dopri5, tsit5, ...)"
                ));
            }
            return Ok(Setting::Adaptive {
                solver,
                rtol,
                atol,
                max_nfe,
            });
        }
        let steps_text = head.strip_prefix("steps=").unwrap_or(head);
        let steps = steps_text.parse::<usize>().map_err(|_| {
            format!(
                "unknown setting {s:?}; expected `base`, `lora`, `N[:SOLVER]` or `adaptive[:...]`"
            )
        })?;
        if steps == 0 {
            return Err("diffusion steps must be at least 1 (use `base` for none)".into());
        }
        let solver = match parts.next() {
            None => DEFAULT_FIXED_SOLVER,
            Some(name) => parse_method(name)?,
        };
        if let Some(extra) = parts.next() {
            return Err(format!("unexpected {extra:?} in {s:?}"));
        }
        Ok(Setting::Fixed { steps, solver })
    }
}
