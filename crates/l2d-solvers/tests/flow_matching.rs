//! The flow-matching closed form (solvers-notes §4.3): x0 ~ N(0, s²I), x1 ~ N(μ, τ²I)
//! independent; p_t = N(tμ, σ_t²I) with σ_t² = (1−t)²s² + t²τ²; the marginal velocity is
//! v(x, t) = μ + ((tτ² − (1−t)s²)/σ_t²)·(x − tμ), and the ODE solution is exactly
//! x(t) = tμ + (σ_t/s)·x0. The SDE sampler must keep the marginal mean tμ and variance σ_t².
#![allow(clippy::ptr_arg)] // fields take `&Vec<f64>`, the integrated `State` type

use l2d_solvers::{
    Diffusion, EndpointPolicy, FlowSdeSampler, LastStep, Method, SaveAt, SeededNoise, Solver,
    StepController, TimeGrid,
};

const S: f64 = 2.0;
const TAU: f64 = 0.5;
const MU: [f64; 4] = [1.0, -2.0, 0.5, 3.0];

fn sigma2(t: f64) -> f64 {
    (1.0 - t).powi(2) * S * S + t * t * TAU * TAU
}

fn velocity(t: f64, x: &Vec<f64>) -> Vec<f64> {
    let k = (t * TAU * TAU - (1.0 - t) * S * S) / sigma2(t);
    x.iter().zip(MU).map(|(x, m)| m + k * (x - t * m)).collect()
}

fn exact(t: f64, x0: &[f64]) -> Vec<f64> {
    let r = sigma2(t).sqrt() / S;
    x0.iter().zip(MU).map(|(x, m)| t * m + r * x).collect()
}

fn max_err(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

const X0: [f64; 4] = [1.3, -0.4, 2.2, -3.1];

#[test]
fn ode_solvers_follow_the_exact_flow() {
    // Adaptive, through several output times (dense output in between steps).
    let ts = [0.0, 0.25, 0.5, 0.9, 1.0];
    for m in [Method::Dopri5, Method::Tsit5] {
        let tol = 1e-9;
        let sol = Solver::new(m)
            .with_tolerances(tol, tol)
            .solve(&mut velocity, X0.to_vec(), &ts)
            .unwrap();
        for (t, y) in sol.ts.iter().zip(&sol.ys) {
            let e = max_err(y, &exact(*t, &X0));
            assert!(e < 10.0 * tol * 4.0, "{m} at t={t}: error {e:e}");
        }
        assert_eq!(sol.stats.nfe, 2 + 6 * sol.stats.steps);
    }
    // Midpoint (L2D's default) converges at least at second order (on this field the h²
    // error term nearly cancels and the measured order is 3).
    let err = |n| {
        let sol = Solver::new(Method::Midpoint)
            .solve_grid(&mut velocity, X0.to_vec(), &TimeGrid::uniform(0.0, 1.0, n))
            .unwrap();
        assert_eq!(sol.stats.nfe, 2 * (n - 1));
        sol.ts
            .iter()
            .zip(&sol.ys)
            .map(|(t, y)| max_err(y, &exact(*t, &X0)))
            .fold(0.0, f64::max)
    };
    let (e1, e2) = (err(101), err(201));
    println!("midpoint on the Gaussian flow: {e1:e} -> {e2:e}");
    assert!((e1 / e2).log2() > 1.7 && e1 < 1e-5, "{e1:e} {e2:e}");
}

#[test]
fn endpoint_guard_zeroes_heun2_last_stage_exactly() {
    // With the L2D guard, heun2's last stage at t = 1 gets v = 0, so its last step is
    // y + (dt/2)·v(t_{n-1}, y), bit for bit.
    let grid = TimeGrid::uniform(0.0, 1.0, 11).times().unwrap();
    let guarded = Solver::new(Method::Heun2).with_endpoint(EndpointPolicy::ZeroAtOrAfter(1.0));
    let sol = guarded.solve(&mut velocity, X0.to_vec(), &grid).unwrap();
    assert_eq!(sol.stats.zero_velocity_evals, 1);
    assert_eq!(sol.stats.nfe, 20);
    let before = &sol.ys[9];
    let (t0, t1) = (grid[9], grid[10]);
    let dt = t1 - t0;
    let v = velocity(t0, before);
    let manual: Vec<f64> = before
        .iter()
        .zip(&v)
        .map(|(y, v)| y + (dt * 0.5) * v)
        .collect();
    assert_eq!(sol.ys[10], manual);
    // Without the guard the (non-singular) Gaussian field is evaluated there.
    let plain = Solver::new(Method::Heun2)
        .solve(&mut velocity, X0.to_vec(), &grid)
        .unwrap();
    assert_eq!(plain.stats.zero_velocity_evals, 0);
    assert_eq!(plain.ys[9], sol.ys[9]);
    assert_ne!(plain.ys[10], sol.ys[10]);
    // Euler and midpoint never evaluate at t = 1: the guard changes nothing.
    for m in [Method::Euler, Method::Midpoint] {
        let a = Solver::new(m).with_endpoint(EndpointPolicy::ZeroAtOrAfter(1.0));
        let a = a.solve(&mut velocity, X0.to_vec(), &grid).unwrap();
        let b = Solver::new(m)
            .solve(&mut velocity, X0.to_vec(), &grid)
            .unwrap();
        assert_eq!(a.ys, b.ys);
        assert_eq!(a.stats.zero_velocity_evals, 0);
    }
}

#[test]
fn sde_with_zero_diffusion_is_euler_exactly() {
    let grid = TimeGrid::uniform(0.0, 1.0, 17).times().unwrap();
    let mut draws = 0;
    let mut noise = |x: &Vec<f64>| {
        draws += 1;
        vec![0.0; x.len()]
    };
    let sde = FlowSdeSampler::new(S, Diffusion::Zero)
        .sample(&mut velocity, &mut noise, X0.to_vec(), &grid)
        .unwrap();
    let ode = Solver::new(Method::Euler)
        .solve(&mut velocity, X0.to_vec(), &grid)
        .unwrap();
    assert_eq!(sde.ys, ode.ys);
    assert_eq!(sde.stats.nfe, ode.stats.nfe);
    assert_eq!(draws, 0);
}

/// Mean and variance of `x − tμ` over samples and coordinates at the end of the grid.
fn sde_moments(diffusion: Diffusion, t_end: f64, last: LastStep, seed: u64) -> (f64, f64, f64) {
    let n_samples = 4000;
    let grid = TimeGrid::uniform(0.0, t_end, 201).times().unwrap();
    let sampler = FlowSdeSampler::new(S, diffusion)
        .with_last_step(last)
        .with_save_at(SaveAt::Last);
    let mut noise = SeededNoise::new(seed);
    let mut init = SeededNoise::new(seed ^ 0x5eed);
    let (mut sum, mut sum2, mut n) = (0.0, 0.0, 0.0);
    for _ in 0..n_samples {
        let z: Vec<f64> = l2d_solvers::Noise::standard_normal_like(&mut init, &vec![0.0; 4]);
        let x0: Vec<f64> = z.iter().map(|z| S * z).collect();
        let sol = sampler
            .sample(&mut velocity, &mut noise, x0, &grid)
            .unwrap();
        assert_eq!(sol.ts, [t_end]);
        for (x, m) in sol.ys[0].iter().zip(MU) {
            let d = x - t_end * m;
            sum += d;
            sum2 += d * d;
            n += 1.0;
        }
    }
    let mean = sum / n;
    (mean, sum2 / n - mean * mean, n)
}

#[test]
fn sde_keeps_the_flow_marginals() {
    let t = 0.8;
    let var = sigma2(t);
    for diffusion in [
        Diffusion::Sigma { norm: 1.0 },
        Diffusion::Constant(1.5),
        Diffusion::IncreasingDecreasing { norm: 0.5 },
    ] {
        let (mean, v, n) = sde_moments(diffusion, t, LastStep::EulerMaruyama, 7);
        let se_mean = (var / n).sqrt();
        println!("{diffusion:?}: mean {mean:.4} (se {se_mean:.4}), var {v:.4} vs {var:.4}");
        assert!(mean.abs() < 5.0 * se_mean, "{diffusion:?}: mean {mean}");
        // 5 standard errors of the variance estimate (√(2/n)) plus 2 % for the O(dt) bias.
        assert!(
            (v / var - 1.0).abs() < 5.0 * (2.0 / n).sqrt() + 0.02,
            "{diffusion:?}: var {v} vs {var}"
        );
    }
    // The noise is real: with a wrong drift (no score term, i.e. v + g dW) the variance grows.
    let bad_sigma = {
        let grid = TimeGrid::uniform(0.0, t, 201).times().unwrap();
        let mut noise = SeededNoise::new(3);
        let mut init = SeededNoise::new(4);
        let mut acc = 0.0;
        let m = 1000;
        for _ in 0..m {
            let z: Vec<f64> = l2d_solvers::Noise::standard_normal_like(&mut init, &vec![0.0; 4]);
            let mut x: Vec<f64> = z.iter().map(|z| S * z).collect();
            for w in grid.windows(2) {
                let dt = w[1] - w[0];
                let v = velocity(w[0], &x);
                let xi: Vec<f64> = l2d_solvers::Noise::standard_normal_like(&mut noise, &x);
                let g = Diffusion::Sigma { norm: 1.0 }.g(w[0], S);
                x = x
                    .iter()
                    .zip(&v)
                    .zip(&xi)
                    .map(|((x, v), e)| x + dt * v + g * dt.sqrt() * e)
                    .collect();
            }
            acc += x
                .iter()
                .zip(MU)
                .map(|(x, mu)| (x - t * mu).powi(2))
                .sum::<f64>()
                / 4.0;
        }
        acc / f64::from(m)
    };
    assert!(
        bad_sigma > 1.5 * var,
        "control run without the score: {bad_sigma} vs {var}"
    );
}

#[test]
fn sde_denoising_last_step_jumps_to_x1_hat() {
    // On a grid ending at 1 the last step is x + (1 − t)·v = E[x1 | x_t]: mean μ, and a
    // variance below τ² (the conditional mean removes the residual noise).
    let (mean, v, n) = sde_moments(Diffusion::Sigma { norm: 1.0 }, 1.0, LastStep::Denoise, 11);
    let t = 1.0 - 1.0 / 200.0;
    // Var(E[x1 | x_t]) = (tτ²)²/σ_t² for this Gaussian pair.
    let expected = (t * TAU * TAU).powi(2) / sigma2(t);
    assert!(mean.abs() < 5.0 * (TAU * TAU / n).sqrt(), "mean {mean}");
    assert!(
        v < TAU * TAU && (v / expected - 1.0).abs() < 0.1,
        "var {v} vs {expected}"
    );
}

#[test]
fn seeded_noise_is_reproducible() {
    let grid = TimeGrid::uniform(0.0, 1.0, 11).times().unwrap();
    let sampler = FlowSdeSampler::new(S, Diffusion::Sigma { norm: 1.0 });
    let run = |seed| {
        sampler
            .sample(
                &mut velocity,
                &mut SeededNoise::new(seed),
                X0.to_vec(),
                &grid,
            )
            .unwrap()
            .ys
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn adaptive_solvers_step_past_the_end_and_interpolate() {
    // torchdiffeq semantics: the last step may overshoot t_end; the output is interpolated.
    let mut max_t: f64 = 0.0;
    let mut f = |t: f64, x: &Vec<f64>| {
        max_t = max_t.max(t);
        velocity(t, x)
    };
    let sol = Solver::new(Method::Dopri5)
        .with_controller(StepController::adaptive(1e-6, 1e-6))
        .solve(&mut f, X0.to_vec(), &[0.0, 0.5])
        .unwrap();
    assert!(max_t > 0.5, "the field was evaluated past t_end ({max_t})");
    assert!(max_err(&sol.ys[1], &exact(0.5, &X0)) < 1e-5);
}
