//! Solver linearity on linear fields (proptest) and Dahlquist stability polynomials per step.

mod common;

use common::stability_coefficients;
use l2d_solvers::{Method, Solver, StepController};
use proptest::prelude::*;

fn one_step(method: Method, lambda: f64, h: f64) -> (f64, usize) {
    let mut f = |_t: f64, y: &Vec<f64>| vec![lambda * y[0]];
    let sol = Solver::new(method)
        .with_controller(StepController::RequestedTimes)
        .solve(&mut f, vec![1.0], &[0.0, h])
        .unwrap();
    (sol.ys[1][0], sol.stats.nfe)
}

#[test]
fn dahlquist_stability_polynomials() {
    let (lambda, h) = (-0.7, 0.3);
    let z: f64 = lambda * h;
    let taylor = |p: i32| {
        (0..=p)
            .map(|k| z.powi(k) / (1..=k).product::<i32>().max(1) as f64)
            .sum::<f64>()
    };
    let cases: [(Method, f64); 10] = [
        (Method::Euler, 1.0 + z),
        (Method::Midpoint, taylor(2)),
        (Method::Heun2, taylor(2)),
        (Method::Rk4Classic, taylor(4)),
        (Method::Rk4ThreeEighths, taylor(4)),
        (Method::AdaptiveHeun, taylor(2)),
        // b = [1/512, 255/256, 1/512]: b·A·c = 255/512² (hand computed).
        (Method::Fehlberg2, taylor(2) + 255.0 / 262144.0 * z.powi(3)),
        (Method::Bosh3, taylor(3)),
        (Method::Dopri5, taylor(5) + z.powi(6) / 600.0),
        // Tsit5: order 5 (z^k/k! up to k = 5 is checked on the tableau), plus b·A^5·1·z^6.
        (
            Method::Tsit5,
            taylor(5) + stability_coefficients(Method::Tsit5.tableau(), 7)[5] * z.powi(6),
        ),
    ];
    for (m, expected) in cases {
        let (y, nfe) = one_step(m, lambda, h);
        assert_eq!(nfe, m.tableau().stages(), "{m}");
        assert!((y - expected).abs() <= 1e-15, "{m}: {y} vs {expected}");
    }
}

#[test]
fn adaptive_heun_reuses_the_predictor_stage() {
    // torchdiffeq's pseudo-FSAL: the second step starts from f(t1, y0 + h·f0) (the Euler
    // predictor), not f(t1, y1).
    let (lambda, h) = (-0.7, 0.3);
    let z = lambda * h;
    let mut f = |_t: f64, y: &Vec<f64>| vec![lambda * y[0]];
    let sol = Solver::new(Method::AdaptiveHeun)
        .with_controller(StepController::RequestedTimes)
        .solve(&mut f, vec![1.0], &[0.0, h, 2.0 * h])
        .unwrap();
    let y1 = 1.0 + z + z * z / 2.0;
    let y2 = y1 + z / 2.0 * ((1.0 + z) + y1 + z * (1.0 + z));
    assert!((sol.ys[1][0] - y1).abs() < 1e-15);
    assert!(
        (sol.ys[2][0] - y2).abs() < 1e-15,
        "{} vs {y2}",
        sol.ys[2][0]
    );
    assert!((y2 - y1 * y1).abs() > 1e-4, "the quirk is visible");
    assert_eq!(sol.stats.nfe, 3);
    // heun2 (no reuse) is the plain Heun method.
    let sol = Solver::new(Method::Heun2)
        .solve(&mut f, vec![1.0], &[0.0, h, 2.0 * h])
        .unwrap();
    assert!((sol.ys[2][0] - y1 * y1).abs() < 1e-15);
    assert_eq!(sol.stats.nfe, 4);
}

fn linear_solve(method: Method, a: &[f64; 9], b: &[f64; 9], y0: Vec<f64>) -> Vec<Vec<f64>> {
    // y' = (A + sin(t)·B) y: linear in y, non-autonomous.
    let mut f = |t: f64, y: &Vec<f64>| {
        (0..3)
            .map(|i| {
                (0..3)
                    .map(|j| (a[3 * i + j] + t.sin() * b[3 * i + j]) * y[j])
                    .sum()
            })
            .collect::<Vec<f64>>()
    };
    Solver::new(method)
        .with_controller(StepController::RequestedTimes)
        .solve(&mut f, y0, &[0.0, 0.1, 0.25, 0.5, 0.7, 1.0])
        .unwrap()
        .ys
}

fn close(x: &[Vec<f64>], y: &[Vec<f64>], scale: f64) -> bool {
    x.iter()
        .flatten()
        .zip(y.iter().flatten())
        .all(|(a, b)| (a - b).abs() <= 1e-12 * scale)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn solvers_are_linear_on_linear_fields(
        a in prop::array::uniform9(-1.0f64..1.0),
        b in prop::array::uniform9(-1.0f64..1.0),
        y0 in prop::array::uniform3(-2.0f64..2.0),
        z0 in prop::array::uniform3(-2.0f64..2.0),
        c in -3.0f64..3.0,
    ) {
        for m in Method::ALL {
            let ys = linear_solve(m, &a, &b, y0.to_vec());
            let zs = linear_solve(m, &a, &b, z0.to_vec());
            let scale = 1.0 + ys.iter().chain(&zs).flatten().fold(0.0f64, |m, v| m.max(v.abs()));
            // Homogeneity: solve(c·y0) = c·solve(y0).
            let cy = linear_solve(m, &a, &b, y0.iter().map(|v| c * v).collect());
            let c_ys: Vec<Vec<f64>> = ys.iter().map(|y| y.iter().map(|v| c * v).collect()).collect();
            prop_assert!(close(&cy, &c_ys, 3.0 * scale), "{} homogeneity", m);
            // Superposition: solve(y0 + z0) = solve(y0) + solve(z0).
            let sum0: Vec<f64> = y0.iter().zip(&z0).map(|(y, z)| y + z).collect();
            let s = linear_solve(m, &a, &b, sum0);
            let sum: Vec<Vec<f64>> =
                ys.iter().zip(&zs).map(|(y, z)| y.iter().zip(z).map(|(a, b)| a + b).collect()).collect();
            prop_assert!(close(&s, &sum, scale), "{} superposition", m);
        }
    }
}
