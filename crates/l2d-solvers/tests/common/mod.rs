//! Shared helpers of the integration tests (included with `mod common;`).
#![allow(clippy::ptr_arg)] // fields take `&Vec<f64>`, the integrated `State` type
#![allow(dead_code)]

use l2d_solvers::{ButcherTableau, Method, Solver, StepController, TimeGrid};

/// `y' = λy + sin(ωt)`, exact solution, with λ = −1.3, ω = 3, y0 = 1 (non-autonomous: the
/// stage times `c` matter).
pub const LAMBDA: f64 = -1.3;
/// Forcing frequency.
pub const OMEGA: f64 = 3.0;

pub fn forced(t: f64, y: &Vec<f64>) -> Vec<f64> {
    vec![LAMBDA * y[0] + (OMEGA * t).sin()]
}

pub fn forced_exact(t: f64) -> Vec<f64> {
    let d = OMEGA * OMEGA + LAMBDA * LAMBDA;
    let (a, b) = (-LAMBDA / d, -OMEGA / d);
    let c = 1.0 - b;
    vec![c * (LAMBDA * t).exp() + a * (OMEGA * t).sin() + b * (OMEGA * t).cos()]
}

/// Max-norm error at `t1` of `method` with `n` uniform steps on `[0, t1]`.
pub fn fixed_error(
    method: Method,
    field: fn(f64, &Vec<f64>) -> Vec<f64>,
    exact: fn(f64) -> Vec<f64>,
    y0: &[f64],
    t1: f64,
    n: usize,
) -> f64 {
    let mut f = field;
    let sol = Solver::new(method)
        .with_controller(StepController::RequestedTimes)
        .solve_grid(&mut f, y0.to_vec(), &TimeGrid::uniform(0.0, t1, n + 1))
        .unwrap();
    let y = sol.into_last().unwrap();
    y.iter()
        .zip(exact(t1))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// `b·A^(k−1)·1`: the coefficient of `z^k` in the stability polynomial.
pub fn stability_coefficients(tab: &ButcherTableau, kmax: usize) -> Vec<f64> {
    let s = tab.stages();
    let a = |i: usize, j: usize| {
        if i >= 1 && j < i {
            tab.a[i - 1][j]
        } else {
            0.0
        }
    };
    let mut v = vec![1.0; s];
    let mut out = Vec::new();
    for _ in 0..kmax {
        out.push(tab.b.iter().zip(&v).map(|(b, v)| b * v).sum());
        v = (0..s)
            .map(|i| (0..s).map(|j| a(i, j) * v[j]).sum())
            .collect();
    }
    out
}
