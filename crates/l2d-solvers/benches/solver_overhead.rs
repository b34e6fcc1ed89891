//! Solver overhead per step on a 1×256 state with a no-op field (`v = x`, a clone), for
//! euler, midpoint (100 fixed steps on [0, 1]) and dopri5 (adaptive, rtol = atol = 1e-6 on
//! [0, 1]; its step count is measured first and used as the throughput counter, so the
//! reported "item" rate is steps per second).
//!
//! States: `Vec<f64>` and a flex `f32` `Tensor<2>` of shape [1, 256] (with the default
//! per-step finiteness check, and without it).
//!
//! Run: `cargo bench -p l2d-solvers --bench solver_overhead`

use burn::tensor::{Device, Tensor};
use divan::Bencher;
use divan::counter::ItemsCount;
use l2d_solvers::{Method, SaveAt, Solver, State, StepController, TimeGrid, VectorField};

fn main() {
    divan::main();
}

const FIXED_STEPS: usize = 100;

fn solver(method: Method, check_finite: bool) -> (Solver, Vec<f64>) {
    let base = Solver::new(method)
        .with_save_at(SaveAt::Last)
        .with_check_finite(check_finite);
    if method.is_adaptive() {
        (
            base.with_controller(StepController::adaptive(1e-6, 1e-6)),
            vec![0.0, 1.0],
        )
    } else {
        (
            base,
            TimeGrid::uniform(0.0, 1.0, FIXED_STEPS + 1)
                .times()
                .unwrap(),
        )
    }
}

fn run<S: State, F: VectorField<S>>(
    bencher: Bencher,
    method: Method,
    check: bool,
    y0: S,
    mut field: F,
) {
    let (solver, ts) = solver(method, check);
    let steps = solver
        .solve(&mut field, y0.clone(), &ts)
        .unwrap()
        .stats
        .steps;
    bencher.counter(ItemsCount::new(steps)).bench_local(|| {
        solver
            .solve(&mut field, divan::black_box(y0.clone()), &ts)
            .unwrap()
    });
}

const METHODS: [Method; 3] = [Method::Euler, Method::Midpoint, Method::Dopri5];

#[divan::bench(args = METHODS)]
fn vec_f64(bencher: Bencher, method: Method) {
    let field = |_t: f64, x: &Vec<f64>| x.clone();
    run(bencher, method, true, vec![0.5f64; 256], field);
}

#[divan::bench(args = METHODS)]
fn tensor_f32_flex(bencher: Bencher, method: Method) {
    let y0 = Tensor::<2>::ones([1, 256], &Device::flex()).mul_scalar(0.5);
    let field = |_t: f64, x: &Tensor<2>| x.clone();
    run(bencher, method, true, y0, field);
}

#[divan::bench(args = METHODS)]
fn tensor_f32_flex_no_finite_check(bencher: Bencher, method: Method) {
    let y0 = Tensor::<2>::ones([1, 256], &Device::flex()).mul_scalar(0.5);
    let field = |_t: f64, x: &Tensor<2>| x.clone();
    run(bencher, method, false, y0, field);
}
