//! The reference-problem matrix shared by the `reference_problems` example and the
//! torchdiffeq parity test (`scripts/torchdiffeq_reference.py` runs the same matrix).
//!
//! Problems (all `f64`):
//! - `damped_rotation`: `y' = A·y`, `A = [[-0.5, 2], [-2, -0.5]]`, `y0 = [1, 0]`, `t: 0 → 5`;
//!   exact `e^{-t/2}·[cos 2t, −sin 2t]`.
//! - `logistic`: `y' = y(1 − y)`, `y0 = 0.1`, `t: 0 → 4`; exact `1/(1 + 9e^{−t})`.
//! - `flow_to_one`: `y' = (2·tanh(W·y) − y)/(1 − t)` with zero velocity at `t >= 1`,
//!   `y0 = [0.5, −1, 2]`, `t: 0 → 1` on grids and `0 → 0.99` for adaptive methods.
//!
//! Runs: euler/midpoint/rk4_38/heun2 on a uniform grid of 11 points, euler/midpoint on 101
//! points, dopri5 at rtol = atol = 1e-6 and 1e-9, bosh3 at 1e-5, fehlberg2 and adaptive_heun
//! at 1e-4.

// Fields take `&Vec<f64>`: that is the `State` type the solvers integrate.
#![allow(clippy::ptr_arg)]

use serde::{Deserialize, Serialize};

use crate::{EndpointPolicy, Method, Solver, StepController, TimeGrid};

/// `W` of `flow_to_one`.
pub const FLOW_W: [[f64; 3]; 3] = [[0.9, -1.3, 0.4], [0.7, 0.2, -1.1], [-0.6, 1.5, 0.3]];

/// One test problem.
#[derive(Debug, Clone, Copy)]
pub struct Problem {
    /// The problem's name.
    pub name: &'static str,
    /// The velocity field.
    pub field: fn(f64, &Vec<f64>) -> Vec<f64>,
    /// Initial state at `t = 0`.
    pub y0: &'static [f64],
    /// End time on fixed grids.
    pub t1_grid: f64,
    /// End time for adaptive methods.
    pub t1_adaptive: f64,
    /// End-point policy (the L2D guard for `flow_to_one`).
    pub endpoint: EndpointPolicy,
    /// The exact solution, where known in closed form.
    pub exact: Option<fn(f64) -> Vec<f64>>,
}

fn damped_rotation(_t: f64, y: &Vec<f64>) -> Vec<f64> {
    vec![-0.5 * y[0] + 2.0 * y[1], -2.0 * y[0] - 0.5 * y[1]]
}

fn damped_rotation_exact(t: f64) -> Vec<f64> {
    let e = (-0.5 * t).exp();
    vec![e * (2.0 * t).cos(), -e * (2.0 * t).sin()]
}

fn logistic(_t: f64, y: &Vec<f64>) -> Vec<f64> {
    vec![y[0] * (1.0 - y[0])]
}

fn logistic_exact(t: f64) -> Vec<f64> {
    vec![1.0 / (1.0 + 9.0 * (-t).exp())]
}

fn flow_to_one(t: f64, y: &Vec<f64>) -> Vec<f64> {
    FLOW_W
        .iter()
        .zip(y.iter())
        .map(|(row, yi)| {
            let wy: f64 = row.iter().zip(y.iter()).map(|(w, y)| w * y).sum();
            (2.0 * wy.tanh() - yi) / (1.0 - t)
        })
        .collect()
}

/// The three problems.
pub fn problems() -> [Problem; 3] {
    [
        Problem {
            name: "damped_rotation",
            field: damped_rotation,
            y0: &[1.0, 0.0],
            t1_grid: 5.0,
            t1_adaptive: 5.0,
            endpoint: EndpointPolicy::Evaluate,
            exact: Some(damped_rotation_exact),
        },
        Problem {
            name: "logistic",
            field: logistic,
            y0: &[0.1],
            t1_grid: 4.0,
            t1_adaptive: 4.0,
            endpoint: EndpointPolicy::Evaluate,
            exact: Some(logistic_exact),
        },
        Problem {
            name: "flow_to_one",
            field: flow_to_one,
            y0: &[0.5, -1.0, 2.0],
            t1_grid: 1.0,
            t1_adaptive: 0.99,
            endpoint: EndpointPolicy::ZeroAtOrAfter(1.0),
            exact: None,
        },
    ]
}

/// How a run steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RunKind {
    /// A uniform grid with this many points (the grid is the output times).
    Grid(usize),
    /// Adaptive with `rtol = atol =` this.
    Tol(f64),
}

/// One column of the matrix: a method and its setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunSpec {
    /// The method.
    pub method: Method,
    /// The setting's name (`"uniform_11"`, `"tol_1e-6"`, ...).
    pub setting: &'static str,
    /// Grid or tolerance.
    pub kind: RunKind,
}

/// The eleven method × setting runs.
pub fn run_specs() -> [RunSpec; 11] {
    let grid = |method, setting, n| RunSpec {
        method,
        setting,
        kind: RunKind::Grid(n),
    };
    let tol = |method, setting, tol| RunSpec {
        method,
        setting,
        kind: RunKind::Tol(tol),
    };
    [
        grid(Method::Euler, "uniform_11", 11),
        grid(Method::Midpoint, "uniform_11", 11),
        grid(Method::Rk4ThreeEighths, "uniform_11", 11),
        grid(Method::Heun2, "uniform_11", 11),
        grid(Method::Euler, "uniform_101", 101),
        grid(Method::Midpoint, "uniform_101", 101),
        tol(Method::Dopri5, "tol_1e-6", 1e-6),
        tol(Method::Dopri5, "tol_1e-9", 1e-9),
        tol(Method::Bosh3, "tol_1e-5", 1e-5),
        tol(Method::Fehlberg2, "tol_1e-4", 1e-4),
        tol(Method::AdaptiveHeun, "tol_1e-4", 1e-4),
    ]
}

/// One output line: `{problem, method, setting, t1, y_final, nfe}` or `{…, error}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Problem name.
    pub problem: String,
    /// Method name ([`Method::name`]).
    pub method: String,
    /// Setting name.
    pub setting: String,
    /// End time.
    pub t1: f64,
    /// Final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y_final: Option<Vec<f64>>,
    /// Vector-field evaluations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfe: Option<usize>,
    /// The error, if the run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs one problem × setting.
pub fn run(problem: &Problem, spec: &RunSpec) -> RunRecord {
    let (times, controller, t1) = match spec.kind {
        RunKind::Grid(n) => (
            TimeGrid::uniform(0.0, problem.t1_grid, n).times(),
            StepController::RequestedTimes,
            problem.t1_grid,
        ),
        RunKind::Tol(tol) => (
            Ok(vec![0.0, problem.t1_adaptive]),
            StepController::adaptive(tol, tol),
            problem.t1_adaptive,
        ),
    };
    let solver = Solver::new(spec.method)
        .with_controller(controller)
        .with_endpoint(problem.endpoint);
    let mut field = problem.field;
    let result = times.and_then(|ts| solver.solve(&mut field, problem.y0.to_vec(), &ts));
    let mut rec = RunRecord {
        problem: problem.name.to_string(),
        method: spec.method.name().to_string(),
        setting: spec.setting.to_string(),
        t1,
        y_final: None,
        nfe: None,
        error: None,
    };
    match result {
        Ok(sol) => {
            rec.nfe = Some(sol.stats.nfe);
            rec.y_final = sol.into_last();
        }
        Err(e) => rec.error = Some(e.to_string()),
    }
    rec
}

/// Every run of the matrix, problem by problem.
pub fn run_all() -> Vec<RunRecord> {
    problems()
        .iter()
        .flat_map(|p| run_specs().map(|s| run(p, &s)))
        .collect()
}
