//! Every `SolverError` variant is reachable and reported with its context; nothing panics.
#![allow(clippy::ptr_arg)] // fields take `&Vec<f64>`, the integrated `State` type

use l2d_solvers::{
    AdaptiveController, Diffusion, FlowSdeSampler, Method, Solver, SolverError, StepController,
    TimeGrid,
};

fn decay(_t: f64, y: &Vec<f64>) -> Vec<f64> {
    y.iter().map(|v| -v).collect()
}

fn rotation(_t: f64, y: &Vec<f64>) -> Vec<f64> {
    vec![-0.5 * y[0] + 2.0 * y[1], -2.0 * y[0] - 0.5 * y[1]]
}

#[test]
fn invalid_tolerances() {
    for (rtol, atol, name) in [
        (0.0, 1e-6, "rtol"),
        (1e-6, -1.0, "atol"),
        (f64::NAN, 1e-6, "rtol"),
        (1e-6, f64::INFINITY, "atol"),
    ] {
        let err = Solver::new(Method::Dopri5)
            .with_tolerances(rtol, atol)
            .solve(&mut decay, vec![1.0], &[0.0, 1.0])
            .unwrap_err();
        assert!(
            matches!(err, SolverError::InvalidTolerance { name: n, .. } if n == name),
            "{err}"
        );
    }
}

#[test]
fn invalid_options() {
    let mut c = AdaptiveController::new(1e-6, 1e-6);
    c.safety = 1.5;
    let err = Solver::new(Method::Dopri5)
        .with_controller(StepController::Adaptive(c))
        .solve(&mut decay, vec![1.0], &[0.0, 1.0])
        .unwrap_err();
    assert!(
        matches!(err, SolverError::InvalidOption { name: "safety", .. }),
        "{err}"
    );
    let c = AdaptiveController::new(1e-6, 1e-6).with_first_step(-0.1);
    let err = Solver::new(Method::Dopri5)
        .with_controller(StepController::Adaptive(c))
        .solve(&mut decay, vec![1.0], &[0.0, 1.0])
        .unwrap_err();
    assert!(
        matches!(
            err,
            SolverError::InvalidOption {
                name: "first_step",
                ..
            }
        ),
        "{err}"
    );
    let err = TimeGrid::shifted(0.0, 1.0, 4, -2.0).times().unwrap_err();
    assert!(
        matches!(err, SolverError::InvalidOption { name: "shift", .. }),
        "{err}"
    );
    let sde = FlowSdeSampler::new(1.0, Diffusion::Constant(1.0));
    let mut noise = l2d_solvers::SeededNoise::new(0);
    let err = sde
        .sample(&mut decay, &mut noise, vec![1.0], &[1.0, 0.5])
        .unwrap_err();
    assert!(
        matches!(err, SolverError::InvalidOption { name: "times", .. }),
        "{err}"
    );
    let err = sde
        .sample(&mut decay, &mut noise, vec![1.0], &[0.0, 1.5])
        .unwrap_err();
    assert!(
        matches!(err, SolverError::InvalidOption { name: "times", .. }),
        "{err}"
    );
    let err = FlowSdeSampler::new(0.0, Diffusion::Zero)
        .sample(&mut decay, &mut noise, vec![1.0], &[0.0, 1.0])
        .unwrap_err();
    assert!(
        matches!(
            err,
            SolverError::InvalidOption {
                name: "noise_scale",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn bad_times() {
    let s = Solver::new(Method::Midpoint);
    assert_eq!(
        s.solve(&mut decay, vec![1.0], &[]).unwrap_err(),
        SolverError::EmptyGrid { name: "times" }
    );
    assert_eq!(
        s.solve(&mut decay, vec![1.0], &[0.5]).unwrap_err(),
        SolverError::SinglePointGrid {
            name: "times",
            t: 0.5
        }
    );
    assert_eq!(
        s.solve(&mut decay, vec![1.0], &[0.0, 0.5, 0.3])
            .unwrap_err(),
        SolverError::UnorderedGrid {
            name: "times",
            index: 2,
            prev: 0.5,
            next: 0.3
        }
    );
    assert!(matches!(
        s.solve(&mut decay, vec![1.0], &[0.0, f64::NAN])
            .unwrap_err(),
        SolverError::NonFiniteTime {
            name: "times",
            index: 1,
            ..
        }
    ));
    let grid = Solver::new(Method::Euler)
        .with_controller(StepController::Grid(TimeGrid::uniform(0.0, 1.0, 5)));
    assert_eq!(
        grid.solve(&mut decay, vec![1.0], &[0.0, 2.0]).unwrap_err(),
        SolverError::GridMismatch {
            grid_start: 0.0,
            grid_end: 1.0,
            start: 0.0,
            end: 2.0
        }
    );
    // A bad stepping grid is reported as such.
    let bad =
        Solver::new(Method::Euler).with_controller(StepController::Grid(TimeGrid::Given(vec![
            0.0, 0.7, 0.6, 1.0,
        ])));
    assert!(matches!(
        bad.solve(&mut decay, vec![1.0], &[0.0, 1.0]).unwrap_err(),
        SolverError::UnorderedGrid {
            name: "grid",
            index: 2,
            ..
        }
    ));
}

#[test]
fn no_error_estimate() {
    let err = Solver::new(Method::Euler)
        .with_tolerances(1e-6, 1e-6)
        .solve(&mut decay, vec![1.0], &[0.0, 1.0])
        .unwrap_err();
    assert_eq!(err, SolverError::NoErrorEstimate { method: "euler" });
}

#[test]
fn step_size_underflow() {
    // A jump of 1e20 in the velocity at t = 0.5 under an (effectively) absolute tolerance:
    // no representable step across it meets the tolerance.
    let mut jump = |t: f64, _y: &Vec<f64>| vec![if t > 0.5 { 1e20 } else { 0.0 }];
    let err = Solver::new(Method::Dopri5)
        .with_tolerances(1e-300, 1e-6)
        .solve(&mut jump, vec![0.0], &[0.0, 1.0])
        .unwrap_err();
    match err {
        SolverError::StepSizeUnderflow { t, dt, step } => {
            assert!(
                (t - 0.5).abs() < 1e-12 && dt.abs() < 1e-15 && step > 10,
                "{err}"
            );
        }
        other => panic!("expected underflow, got {other}"),
    }
}

#[test]
fn budgets() {
    let err = Solver::new(Method::Dopri5)
        .with_tolerances(1e-9, 1e-9)
        .with_max_steps(3)
        .solve(&mut rotation, vec![1.0, 0.0], &[0.0, 5.0])
        .unwrap_err();
    assert!(
        matches!(err, SolverError::MaxStepsExceeded { max_steps: 3, t } if t > 0.0),
        "{err}"
    );
    // Fixed grid: 10 intervals of Euler need 10 evaluations.
    let ts = TimeGrid::uniform(0.0, 1.0, 11).times().unwrap();
    let err = Solver::new(Method::Euler)
        .with_max_nfe(5)
        .solve(&mut decay, vec![1.0], &ts)
        .unwrap_err();
    assert!(
        matches!(
            err,
            SolverError::MaxNfeExceeded {
                max_nfe: 5,
                nfe: 5,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        Solver::new(Method::Euler)
            .with_max_nfe(10)
            .solve(&mut decay, vec![1.0], &ts)
            .is_ok()
    );
    // Adaptive: the budget is never overrun, the error says how many were done.
    let err = Solver::new(Method::Dopri5)
        .with_tolerances(1e-9, 1e-9)
        .with_max_nfe(50)
        .solve(&mut rotation, vec![1.0, 0.0], &[0.0, 5.0])
        .unwrap_err();
    match err {
        SolverError::MaxNfeExceeded {
            max_nfe: 50, nfe, ..
        } => assert!(nfe <= 50 && nfe + 6 > 50),
        other => panic!("{other}"),
    }
}

#[test]
fn non_finite_states() {
    let mut nan_late = |t: f64, y: &Vec<f64>| {
        if t > 0.35 {
            vec![f64::NAN; y.len()]
        } else {
            decay(t, y)
        }
    };
    let ts = TimeGrid::uniform(0.0, 1.0, 11).times().unwrap();
    // Fixed grid: the step from 0.4 to 0.5 (index 4) is the first with a NaN velocity.
    let err = Solver::new(Method::Euler)
        .solve(&mut nan_late, vec![1.0], &ts)
        .unwrap_err();
    assert_eq!(err, SolverError::NonFiniteState { t: ts[5], step: 4 });
    // Adaptive: non-finite error ratios reject and shrink until the state is given up on.
    let err = Solver::new(Method::Dopri5)
        .with_tolerances(1e-6, 1e-6)
        .solve(&mut nan_late, vec![1.0], &[0.0, 1.0])
        .unwrap_err();
    assert!(
        matches!(err, SolverError::NonFiniteState { t, .. } if t > 0.35 && t < 0.36),
        "{err}"
    );
    // A non-finite initial state.
    let err = Solver::new(Method::Midpoint)
        .solve(&mut decay, vec![f64::INFINITY], &ts)
        .unwrap_err();
    assert_eq!(err, SolverError::NonFiniteState { t: 0.0, step: 0 });
    let err = Solver::new(Method::Tsit5)
        .solve(&mut decay, vec![f64::NAN], &ts)
        .unwrap_err();
    assert_eq!(err, SolverError::NonFiniteState { t: 0.0, step: 0 });
    // The SDE sampler too.
    let err = FlowSdeSampler::new(1.0, Diffusion::Sigma { norm: 1.0 })
        .sample(
            &mut nan_late,
            &mut l2d_solvers::SeededNoise::new(0),
            vec![1.0],
            &ts,
        )
        .unwrap_err();
    assert_eq!(err, SolverError::NonFiniteState { t: ts[5], step: 4 });
    // With the check off, the NaN is returned instead.
    let sol = Solver::new(Method::Euler)
        .with_check_finite(false)
        .solve(&mut nan_late, vec![1.0], &ts)
        .unwrap();
    assert!(sol.ys[10][0].is_nan());
}

#[test]
fn errors_display_their_context() {
    let e = SolverError::NonFiniteState { t: 0.25, step: 3 };
    assert_eq!(e.to_string(), "non-finite state at t = 0.25 (step 3)");
    let e = SolverError::StepSizeUnderflow {
        t: 0.5,
        dt: 1e-17,
        step: 40,
    };
    assert!(e.to_string().contains("t = 0.5") && e.to_string().contains("step 40"));
}
