//! Butcher tableaux as data, and the [`Method`]s built from them.
//!
//! Coefficients are torchdiffeq 0.2.5's (`rk_common.py`, `fixed_grid.py`, `adaptive_heun.py`,
//! `fehlberg2.py`, `bosh3.py`, `dopri5.py`) written as the same `f64` expressions, except
//! Tsit5, which is diffrax's FSAL order-5 tableau (torchdiffeq's `tsit5` propagates the
//! embedded order-4 row). Tsitouras' dense-output weights at θ = ½ give its `b_mid`.

// Tsit5's literals are copied digit for digit from diffrax; Rust rounds them correctly.
#![allow(clippy::excessive_precision)]

use serde::{Deserialize, Serialize};

/// Which time a stage with node `c = 1` is evaluated at on a fixed grid.
///
/// Both equal the interval end whenever `t1 − t0` is exact in floating point (always the case
/// for `t0 >= t1/2`, e.g. every interval of a uniform grid starting at 0). Adaptive steps in
/// torchdiffeq mode ignore this and use the float just before `t1` (torchdiffeq's
/// `Perturb.PREV`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndStageTime {
    /// The interval end `t1` itself (torchdiffeq's `rk4`).
    T1,
    /// `t0 + 1·dt` (torchdiffeq's `heun2`, via `rk2_step_func`).
    T0PlusDt,
}

/// An explicit Runge–Kutta method: `kᵢ = v(t0 + cᵢ·dt, y0 + dt·Σⱼ aᵢⱼ·kⱼ)`,
/// `y1 = y0 + dt·Σ bᵢ·kᵢ`, error estimate `dt·Σ eᵢ·kᵢ`, and the dense-output midpoint
/// `y(t0 + dt/2) ≈ y0 + dt·Σ midᵢ·kᵢ`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ButcherTableau {
    /// The method's name (`"dopri5"`, ...).
    pub name: &'static str,
    /// Nodes `c`, one per stage; `c[0] = 0`.
    pub c: &'static [f64],
    /// Strictly lower-triangular `A` without its zero first row: `a[i]` (length `i + 1`) gives
    /// stage `i + 1`.
    pub a: &'static [&'static [f64]],
    /// Solution weights `b`.
    pub b: &'static [f64],
    /// Error weights `b − b̂` (difference to the embedded method), if the method is adaptive.
    pub b_error: Option<&'static [f64]>,
    /// Weights of the half-step value used by the 4th-order dense output, if any.
    pub b_mid: Option<&'static [f64]>,
    /// Order of the propagated solution (the exponent of the I/PID step-size rule).
    pub order: u32,
    /// Whether the last stage of an accepted step is reused as the first stage of the next.
    /// True for FSAL tableaux, and for torchdiffeq's adaptive_heun and fehlberg2 whose last
    /// stage is evaluated at the *embedded* solution, not at `y1` (torchdiffeq's
    /// "pseudo-FSAL": 1 resp. 2 evaluations per step; see [`ButcherTableau::is_pseudo_fsal`]).
    pub reuse_last_stage: bool,
    /// Time of a `c = 1` stage on fixed grids.
    pub end_stage_time: EndStageTime,
}

impl ButcherTableau {
    /// Number of stages.
    pub fn stages(&self) -> usize {
        self.c.len()
    }

    /// "First same as last": the last stage is evaluated at `(t1, y1)` (`c = 1`, last row of
    /// `A` equals `b`, last `b` is zero), so reusing it is exact.
    pub fn is_fsal(&self) -> bool {
        let s = self.stages();
        s >= 2
            && self.c[s - 1] == 1.0
            && self.b[s - 1] == 0.0
            && self.a[s - 2].len() == s - 1
            && self.a[s - 2].iter().zip(self.b).all(|(a, b)| a == b)
    }

    /// Reuses its last stage although it is not FSAL (torchdiffeq's adaptive_heun and
    /// fehlberg2): still of the stated order, with a larger error constant.
    pub fn is_pseudo_fsal(&self) -> bool {
        self.reuse_last_stage && !self.is_fsal()
    }

    /// Whether some stage is evaluated at the end of the step (`c = 1`), i.e. where a field
    /// singular at the end point needs [`crate::EndpointPolicy::ZeroAtOrAfter`].
    pub fn evaluates_endpoint(&self) -> bool {
        self.c.contains(&1.0)
    }

    /// Whether the tableau has an embedded error estimate (can take adaptive steps).
    pub fn is_adaptive(&self) -> bool {
        self.b_error.is_some()
    }

    /// New vector-field evaluations per step once the first stage is reused
    /// (torchdiffeq's `s` in `NFE = 2 + s·steps`).
    pub fn evals_per_step(&self) -> usize {
        self.stages() - usize::from(self.reuse_last_stage)
    }
}

/// The solver methods, each a [`ButcherTableau`].
///
/// Two RK4s exist and are named apart: [`Method::Rk4Classic`] (the ½-node "classic" one) and
/// [`Method::Rk4ThreeEighths`], which is what torchdiffeq (and so L2D) calls `"rk4"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Forward Euler, order 1, 1 evaluation per step (never evaluates at the step end).
    Euler,
    /// Explicit midpoint, order 2, 2 evaluations (never evaluates at the step end; L2D's
    /// default).
    Midpoint,
    /// Heun's method (torchdiffeq `heun2`), order 2, 2 evaluations, the second at the step end.
    Heun2,
    /// The classic RK4 (nodes 0, ½, ½, 1; weights 1/6, 1/3, 1/3, 1/6).
    Rk4Classic,
    /// Kutta's 3/8 rule (nodes 0, ⅓, ⅔, 1; weights 1/8, 3/8, 3/8, 1/8): torchdiffeq's `rk4`.
    #[serde(rename = "rk4_38")]
    Rk4ThreeEighths,
    /// torchdiffeq's adaptive Heun 2(1), pseudo-FSAL: 1 evaluation per step.
    AdaptiveHeun,
    /// torchdiffeq's Fehlberg 2(1), pseudo-FSAL: 2 evaluations per step.
    Fehlberg2,
    /// Bogacki–Shampine 3(2), FSAL: 3 evaluations per step.
    Bosh3,
    /// Dormand–Prince 5(4), FSAL: 6 evaluations per step.
    Dopri5,
    /// Tsitouras 5(4), FSAL: 6 evaluations per step (diffrax's order-5 tableau).
    Tsit5,
}

impl Method {
    /// Every method, fixed-grid ones first.
    pub const ALL: [Method; 10] = [
        Method::Euler,
        Method::Midpoint,
        Method::Heun2,
        Method::Rk4Classic,
        Method::Rk4ThreeEighths,
        Method::AdaptiveHeun,
        Method::Fehlberg2,
        Method::Bosh3,
        Method::Dopri5,
        Method::Tsit5,
    ];

    /// The method's tableau.
    pub fn tableau(self) -> &'static ButcherTableau {
        match self {
            Method::Euler => &EULER,
            Method::Midpoint => &MIDPOINT,
            Method::Heun2 => &HEUN2,
            Method::Rk4Classic => &RK4_CLASSIC,
            Method::Rk4ThreeEighths => &RK4_THREE_EIGHTHS,
            Method::AdaptiveHeun => &ADAPTIVE_HEUN,
            Method::Fehlberg2 => &FEHLBERG2,
            Method::Bosh3 => &BOSH3,
            Method::Dopri5 => &DOPRI5,
            Method::Tsit5 => &TSIT5,
        }
    }

    /// The method's name in this crate (`"rk4_38"`, `"rk4_classic"`, `"dopri5"`, ...).
    pub fn name(self) -> &'static str {
        self.tableau().name
    }

    /// Parses a name of this crate ([`Method::name`]).
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Parses a torchdiffeq method name: `"rk4"` is the 3/8 rule, `"heun"` (L2D's alias) is
    /// `heun2`; `"tsit5"` maps to this crate's order-5 Tsit5. Methods torchdiffeq has and this
    /// crate lacks (dopri8, heun3, adams, implicit ones) give `None`.
    pub fn from_torchdiffeq_name(name: &str) -> Option<Method> {
        match name {
            "rk4" => Some(Method::Rk4ThreeEighths),
            "heun" | "heun2" => Some(Method::Heun2),
            "rk4_classic" | "rk4_38" => None,
            other => Method::from_name(other),
        }
    }

    /// Order of the propagated solution.
    pub fn order(self) -> u32 {
        self.tableau().order
    }

    /// Whether the method has an error estimate (can take adaptive steps).
    pub fn is_adaptive(self) -> bool {
        self.tableau().is_adaptive()
    }
}

/// A solver name that [`Method`]'s [`FromStr`](std::str::FromStr) does not know; its message
/// lists the known names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown solver {name:?}; known: {known} (and torchdiffeq's rk4 = rk4_38, heun = heun2)")]
pub struct UnknownMethod {
    /// The name given.
    pub name: String,
    /// The known names, comma-separated.
    pub known: String,
}

/// Parses this crate's names ([`Method::name`]) and torchdiffeq's
/// ([`Method::from_torchdiffeq_name`]): the one parser of solver names for command lines and
/// configuration files.
///
/// ```
/// use l2d_solvers::Method;
///
/// assert_eq!("dopri5".parse::<Method>()?, Method::Dopri5);
/// assert_eq!("rk4".parse::<Method>()?, Method::Rk4ThreeEighths);
/// assert_eq!("rk4_classic".parse::<Method>()?, Method::Rk4Classic);
/// let err = "rk45".parse::<Method>().unwrap_err().to_string();
/// assert!(err.contains("rk45") && err.contains("bosh3"));
/// # Ok::<(), l2d_solvers::UnknownMethod>(())
/// ```
impl std::str::FromStr for Method {
    type Err = UnknownMethod;

    fn from_str(name: &str) -> Result<Self, UnknownMethod> {
        Method::from_name(name)
            .or_else(|| Method::from_torchdiffeq_name(name))
            .ok_or_else(|| UnknownMethod {
                name: name.to_string(),
                known: Method::ALL
                    .iter()
                    .map(|m| m.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Forward Euler.
pub static EULER: ButcherTableau = ButcherTableau {
    name: "euler",
    c: &[0.0],
    a: &[],
    b: &[1.0],
    b_error: None,
    b_mid: None,
    order: 1,
    reuse_last_stage: false,
    end_stage_time: EndStageTime::T1,
};

/// Explicit midpoint.
pub static MIDPOINT: ButcherTableau = ButcherTableau {
    name: "midpoint",
    c: &[0.0, 0.5],
    a: &[&[0.5]],
    b: &[0.0, 1.0],
    b_error: None,
    b_mid: None,
    order: 2,
    reuse_last_stage: false,
    end_stage_time: EndStageTime::T1,
};

/// Heun's method (torchdiffeq `heun2`).
pub static HEUN2: ButcherTableau = ButcherTableau {
    name: "heun2",
    c: &[0.0, 1.0],
    a: &[&[1.0]],
    b: &[0.5, 0.5],
    b_error: None,
    b_mid: None,
    order: 2,
    reuse_last_stage: false,
    end_stage_time: EndStageTime::T0PlusDt,
};

/// The classic RK4.
pub static RK4_CLASSIC: ButcherTableau = ButcherTableau {
    name: "rk4_classic",
    c: &[0.0, 0.5, 0.5, 1.0],
    a: &[&[0.5], &[0.0, 0.5], &[0.0, 0.0, 1.0]],
    b: &[1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0],
    b_error: None,
    b_mid: None,
    order: 4,
    reuse_last_stage: false,
    end_stage_time: EndStageTime::T1,
};

/// Kutta's 3/8 rule (torchdiffeq `rk4`, `rk4_alt_step_func`).
pub static RK4_THREE_EIGHTHS: ButcherTableau = ButcherTableau {
    name: "rk4_38",
    c: &[0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0],
    a: &[&[1.0 / 3.0], &[-1.0 / 3.0, 1.0], &[1.0, -1.0, 1.0]],
    b: &[0.125, 0.375, 0.375, 0.125],
    b_error: None,
    b_mid: None,
    order: 4,
    reuse_last_stage: false,
    end_stage_time: EndStageTime::T1,
};

/// torchdiffeq's adaptive Heun 2(1).
pub static ADAPTIVE_HEUN: ButcherTableau = ButcherTableau {
    name: "adaptive_heun",
    c: &[0.0, 1.0],
    a: &[&[1.0]],
    b: &[0.5, 0.5],
    b_error: Some(&[0.5, -0.5]),
    b_mid: Some(&[0.5, 0.0]),
    order: 2,
    reuse_last_stage: true,
    end_stage_time: EndStageTime::T1,
};

/// torchdiffeq's Fehlberg 2(1).
pub static FEHLBERG2: ButcherTableau = ButcherTableau {
    name: "fehlberg2",
    c: &[0.0, 0.5, 1.0],
    a: &[&[0.5], &[1.0 / 256.0, 255.0 / 256.0]],
    b: &[1.0 / 512.0, 255.0 / 256.0, 1.0 / 512.0],
    b_error: Some(&[-1.0 / 512.0, 0.0, 1.0 / 512.0]),
    b_mid: Some(&[0.0, 0.5, 0.0]),
    order: 2,
    reuse_last_stage: true,
    end_stage_time: EndStageTime::T1,
};

/// Bogacki–Shampine 3(2).
pub static BOSH3: ButcherTableau = ButcherTableau {
    name: "bosh3",
    c: &[0.0, 0.5, 0.75, 1.0],
    a: &[&[0.5], &[0.0, 0.75], &[2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0]],
    b: &[2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0, 0.0],
    b_error: Some(&[
        2.0 / 9.0 - 7.0 / 24.0,
        1.0 / 3.0 - 1.0 / 4.0,
        4.0 / 9.0 - 1.0 / 3.0,
        -1.0 / 8.0,
    ]),
    b_mid: Some(&[0.0, 0.5, 0.0, 0.0]),
    order: 3,
    reuse_last_stage: true,
    end_stage_time: EndStageTime::T1,
};

/// Dormand–Prince 5(4) with Shampine's dense-output midpoint.
pub static DOPRI5: ButcherTableau = ButcherTableau {
    name: "dopri5",
    c: &[0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0],
    a: &[
        &[1.0 / 5.0],
        &[3.0 / 40.0, 9.0 / 40.0],
        &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
        &[
            19372.0 / 6561.0,
            -25360.0 / 2187.0,
            64448.0 / 6561.0,
            -212.0 / 729.0,
        ],
        &[
            9017.0 / 3168.0,
            -355.0 / 33.0,
            46732.0 / 5247.0,
            49.0 / 176.0,
            -5103.0 / 18656.0,
        ],
        &[
            35.0 / 384.0,
            0.0,
            500.0 / 1113.0,
            125.0 / 192.0,
            -2187.0 / 6784.0,
            11.0 / 84.0,
        ],
    ],
    b: &[
        35.0 / 384.0,
        0.0,
        500.0 / 1113.0,
        125.0 / 192.0,
        -2187.0 / 6784.0,
        11.0 / 84.0,
        0.0,
    ],
    b_error: Some(&[
        35.0 / 384.0 - 1951.0 / 21600.0,
        0.0,
        500.0 / 1113.0 - 22642.0 / 50085.0,
        125.0 / 192.0 - 451.0 / 720.0,
        -2187.0 / 6784.0 - -12231.0 / 42400.0,
        11.0 / 84.0 - 649.0 / 6300.0,
        -1.0 / 60.0,
    ]),
    b_mid: Some(&[
        6025192743.0 / 30085553152.0 / 2.0,
        0.0,
        51252292925.0 / 65400821598.0 / 2.0,
        -2691868925.0 / 45128329728.0 / 2.0,
        187940372067.0 / 1594534317056.0 / 2.0,
        -1776094331.0 / 19743644256.0 / 2.0,
        11237099.0 / 235043384.0 / 2.0,
    ]),
    order: 5,
    reuse_last_stage: true,
    end_stage_time: EndStageTime::T1,
};

const TSIT5_B: [f64; 7] = [
    0.09646076681806522951816731316512876333711995238157997181903319145764851595234062815396,
    1.0 / 100.0,
    0.4798896504144995747752495322905965199130404621990332488332634944254542060153074523509,
    1.379008574103741893192274821856872770756462643091360525934940067397245698027561293331,
    -3.290069515436080679901047585711363850115683290894936158531296799594813811049925401677,
    2.324710524099773982415355918398765796109060233222962411944060046314465391054716027841,
    0.0,
];

/// Tsitouras' continuous-extension weights `bᵢ(θ)` (diffrax `_Tsit5Interpolation`), so that
/// `y(t0 + θ·dt) ≈ y0 + dt·Σ bᵢ(θ)·kᵢ`; `bᵢ(1)` is the solution row.
pub const fn tsit5_dense_weights(t: f64) -> [f64; 7] {
    let t2 = t * t;
    [
        -1.0530884977290216
            * t
            * (t - 1.3299890189751412)
            * (t2 - 1.4364028541716351 * t + 0.7139816917074209),
        0.1017 * t2 * (t2 - 2.1966568338249754 * t + 1.2949852507374631),
        2.490627285651252793 * t2 * (t2 - 2.38535645472061657 * t + 1.57803468208092486),
        -16.54810288924490272 * (t - 1.21712927295533244) * (t - 0.61620406037800089) * t2,
        47.37952196281928122 * (t - 1.203071208372362603) * (t - 0.658047292653547382) * t2,
        -34.87065786149660974 * (t - 1.2) * (t - 0.666666666666666667) * t2,
        2.5 * (t - 1.0) * (t - 0.6) * t2,
    ]
}

const TSIT5_MID: [f64; 7] = tsit5_dense_weights(0.5);

/// Tsitouras 5(4) (diffrax's tableau: FSAL, order 5).
pub static TSIT5: ButcherTableau = ButcherTableau {
    name: "tsit5",
    c: &[
        0.0,
        161.0 / 1000.0,
        327.0 / 1000.0,
        9.0 / 10.0,
        0.9800255409045096857298102862870245954942137979563024768854764293221195950761080302604,
        1.0,
        1.0,
    ],
    a: &[
        &[161.0 / 1000.0],
        &[
            -0.8480655492356988544426874250230774675121177393430391537369234245294192976164141156943e-2,
            0.3354806554923569885444268742502307746751211773934303915373692342452941929761641411569,
        ],
        &[
            2.897153057105493432130432594192938764924887287701866490314866693455023795137503079289,
            -6.359448489975074843148159912383825625952700647415626703305928850207288721235210244366,
            4.362295432869581411017727318190886861027813359713760212991062156752264926097707165077,
        ],
        &[
            5.325864828439256604428877920840511317836476253097040101202360397727981648835607691791,
            -11.74888356406282787774717033978577296188744178259862899288666928009020615663593781589,
            7.495539342889836208304604784564358155658679161518186721010132816213648793440552049753,
            -0.9249506636175524925650207933207191611349983406029535244034750452930469056411389539635e-1,
        ],
        &[
            5.861455442946420028659251486982647890394337666164814434818157239052507339770711679748,
            -12.92096931784710929170611868178335939541780751955743459166312250439928519268343184452,
            8.159367898576158643180400794539253485181918321135053305748355423955009222648673734986,
            -0.7158497328140099722453054252582973869127213147363544882721139659546372402303777878835e-1,
            -0.2826905039406838290900305721271224146717633626879770007617876201276764571291579142206e-1,
        ],
        &[TSIT5_B[0], TSIT5_B[1], TSIT5_B[2], TSIT5_B[3], TSIT5_B[4], TSIT5_B[5]],
    ],
    b: &TSIT5_B,
    b_error: Some(&[
        TSIT5_B[0]
            - 0.9468075576583945807478876255758922856117527357724631226139574065785592789071067303271e-1,
        TSIT5_B[1]
            - 0.9183565540343253096776363936645313759813746240984095238905939532922955247253608687270e-2,
        TSIT5_B[2]
            - 0.4877705284247615707855642599631228241516691959761363774365216240304071651579571959813,
        TSIT5_B[3]
            - 1.234297566930478985655109673884237654035539930748192848315425833500484878378061439761,
        TSIT5_B[4]
            + 2.707712349983525454881109975059321670689605166938197378763992255714444407154902012702,
        TSIT5_B[5]
            - 1.866628418170587035753719399566211498666255505244122593996591602841258328965767580089,
        -1.0 / 66.0,
    ]),
    b_mid: Some(&TSIT5_MID),
    order: 5,
    reuse_last_stage: true,
    end_stage_time: EndStageTime::T1,
};
