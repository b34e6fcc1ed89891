//! The burn tensor `State` (on `Device::flex()`) agrees with the exact `Vec<f64>` one.

use burn::tensor::{DType, Device, Tensor, TensorData};
use l2d_solvers::reference_problems::{FLOW_W, problems};
use l2d_solvers::{
    Diffusion, EndpointPolicy, FlowSdeSampler, Method, Noise, SeededNoise, Solver, State,
    StepController, TimeGrid,
};

fn tensor<const D: usize>(values: &[f64], shape: [usize; D], dtype: DType) -> Tensor<D> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), shape),
        (&Device::flex(), dtype),
    )
}

fn host<const D: usize>(t: &Tensor<D>) -> Vec<f64> {
    t.to_data().try_to_vec_as::<f64>().unwrap()
}

/// y' = y·Aᵀ for a row state [1, 2] (damped_rotation).
fn rotation_tensor(dtype: DType) -> impl FnMut(f64, &Tensor<2>) -> Tensor<2> {
    let at = tensor(&[-0.5, -2.0, 2.0, -0.5], [2, 2], dtype);
    move |_t, y: &Tensor<2>| y.clone().matmul(at.clone())
}

/// flow_to_one on a row state [1, 3].
fn flow_tensor(dtype: DType) -> impl FnMut(f64, &Tensor<2>) -> Tensor<2> {
    let wt: Vec<f64> = (0..9).map(|k| FLOW_W[k % 3][k / 3]).collect();
    let wt = tensor(&wt, [3, 3], dtype);
    move |t, y: &Tensor<2>| {
        (y.clone().matmul(wt.clone()).tanh().mul_scalar(2.0) - y.clone()).div_scalar(1.0 - t)
    }
}

fn rel_close(a: &[f64], b: &[f64], tol: f64) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

#[test]
fn f64_tensor_matches_vec_on_the_reference_problems() {
    let [rot, _, flow] = problems();
    let cases: [(Method, StepController, Vec<f64>); 4] = [
        (
            Method::Dopri5,
            StepController::adaptive(1e-8, 1e-8),
            vec![0.0, 1.7, 5.0],
        ),
        (
            Method::Tsit5,
            StepController::adaptive(1e-6, 1e-6),
            vec![0.0, 5.0],
        ),
        (
            Method::Midpoint,
            StepController::RequestedTimes,
            TimeGrid::uniform(0.0, 5.0, 11).times().unwrap(),
        ),
        (
            Method::Rk4ThreeEighths,
            StepController::RequestedTimes,
            TimeGrid::uniform(0.0, 5.0, 11).times().unwrap(),
        ),
    ];
    for (method, controller, ts) in cases {
        let solver = Solver::new(method).with_controller(controller);
        let mut vf = rot.field;
        let v = solver.solve(&mut vf, rot.y0.to_vec(), &ts).unwrap();
        let t = solver
            .solve(
                &mut rotation_tensor(DType::F64),
                tensor(rot.y0, [1, 2], DType::F64),
                &ts,
            )
            .unwrap();
        assert_eq!(v.stats, t.stats, "{method}");
        for (a, b) in t.ys.iter().zip(&v.ys) {
            assert_eq!(a.dims(), [1, 2]);
            assert_eq!(a.dtype(), DType::F64);
            assert!(
                rel_close(&host(a), b, 1e-13),
                "{method}: {:?} vs {b:?}",
                host(a)
            );
        }
    }
    // flow_to_one with the L2D guard: heun2 (guarded last stage) and adaptive bosh3.
    for (method, controller, ts) in [
        (
            Method::Heun2,
            StepController::RequestedTimes,
            TimeGrid::uniform(0.0, 1.0, 11).times().unwrap(),
        ),
        (
            Method::Bosh3,
            StepController::adaptive(1e-5, 1e-5),
            vec![0.0, 0.99],
        ),
    ] {
        let solver = Solver::new(method)
            .with_controller(controller)
            .with_endpoint(EndpointPolicy::ZeroAtOrAfter(1.0));
        let mut vf = flow.field;
        let v = solver.solve(&mut vf, flow.y0.to_vec(), &ts).unwrap();
        let t = solver
            .solve(
                &mut flow_tensor(DType::F64),
                tensor(flow.y0, [1, 3], DType::F64),
                &ts,
            )
            .unwrap();
        assert_eq!(v.stats, t.stats, "{method}");
        let (a, b) = (host(t.ys.last().unwrap()), v.ys.last().unwrap());
        assert!(rel_close(&a, b, 1e-11), "{method}: {a:?} vs {b:?}");
    }
}

#[test]
fn f32_tensor_solves_to_f32_accuracy() {
    let [rot, ..] = problems();
    let solver = Solver::new(Method::Dopri5).with_tolerances(1e-5, 1e-5);
    let mut vf = rot.field;
    let v = solver.solve(&mut vf, rot.y0.to_vec(), &[0.0, 5.0]).unwrap();
    let t = solver
        .solve(
            &mut rotation_tensor(DType::F32),
            tensor(rot.y0, [1, 2], DType::F32),
            &[0.0, 5.0],
        )
        .unwrap();
    let end = t.ys.last().unwrap();
    assert_eq!(end.dtype(), DType::F32);
    assert!(rel_close(&host(end), v.ys.last().unwrap(), 1e-5));
    let (a, b) = (t.stats.nfe as f64, v.stats.nfe as f64);
    assert!((a - b).abs() <= 0.1 * b, "nfe {a} vs {b}");
}

#[test]
fn rank3_batch_state() {
    // Two independent rows in a [2, 1, 3] state on a fixed grid are each the Vec solution.
    let [_, _, flow] = problems();
    let y0b = [0.5, -1.0, 2.0, -0.3, 0.8, 0.1];
    let wt: Vec<f64> = (0..9).map(|k| FLOW_W[k % 3][k / 3]).collect();
    let wt = tensor(&wt, [1, 3, 3], DType::F64);
    let mut field = |t: f64, y: &Tensor<3>| {
        (y.clone().matmul(wt.clone()).tanh().mul_scalar(2.0) - y.clone()).div_scalar(1.0 - t)
    };
    let ts = TimeGrid::uniform(0.0, 1.0, 11).times().unwrap();
    let solver = Solver::new(Method::Midpoint);
    let t = solver
        .solve(&mut field, tensor(&y0b, [2, 1, 3], DType::F64), &ts)
        .unwrap();
    let out = host(t.ys.last().unwrap());
    for row in 0..2 {
        let mut vf = flow.field;
        let v = solver
            .solve(&mut vf, y0b[3 * row..3 * row + 3].to_vec(), &ts)
            .unwrap();
        assert!(rel_close(
            &out[3 * row..3 * row + 3],
            v.ys.last().unwrap(),
            1e-13
        ));
    }
}

#[test]
fn state_operations_agree() {
    let a = vec![1.0, -2.0, 0.5, 3.0];
    let b = vec![0.25, 4.0, -1.0, 0.0];
    let e = vec![1e-3, -2e-4, 5e-5, 1e-6];
    let ta = tensor(&a, [2, 2], DType::F64);
    let tb = tensor(&b, [2, 2], DType::F64);
    let te = tensor(&e, [2, 2], DType::F64);
    let n_vec = Vec::scaled_rms_norm(&e, &a, &b, 1e-6, 1e-3);
    let n_t = Tensor::scaled_rms_norm(&te, &ta, &tb, 1e-6, 1e-3);
    assert!((n_vec - n_t).abs() <= 1e-15 * n_vec, "{n_vec} vs {n_t}");
    // By hand: sqrt(mean((e / (1e-6 + 1e-3·max(|a|,|b|)))²)).
    let by_hand = (e
        .iter()
        .zip(a.iter().zip(&b))
        .map(|(e, (a, b))| (e / (1e-6 + 1e-3 * f64::max(a.abs(), b.abs()))).powi(2))
        .sum::<f64>()
        / 4.0)
        .sqrt();
    assert!((n_vec - by_hand).abs() <= 1e-15 * by_hand);
    let lc = a.lin_comb(&[(0.5, &b), (-2.0, &e)]);
    assert_eq!(host(&ta.lin_comb(&[(0.5, &tb), (-2.0, &te)])), lc);
    assert_eq!(lc[1], -2.0 + (0.5 * 4.0 + -2.0 * -2e-4));
    let ws = Vec::weighted_sum((3.0, &a), &[(0.5, &b)]);
    assert_eq!(host(&Tensor::weighted_sum((3.0, &ta), &[(0.5, &tb)])), ws);
    assert!(State::is_finite(&ta) && a.is_finite());
    let bad = tensor(&[1.0, f64::NAN, 0.0, 1.0], [2, 2], DType::F64);
    assert!(!State::is_finite(&bad));
    assert!(!State::is_finite(&tensor(
        &[f64::NEG_INFINITY],
        [1],
        DType::F32
    )));
    assert_eq!(host(&State::zeros_like(&ta)), vec![0.0; 4]);
    assert_eq!(host(&ta.scale(-2.0)), a.scale(-2.0));
}

#[test]
fn seeded_noise_is_the_same_on_every_state_type() {
    let like_v = vec![0.0; 6];
    let like_t = tensor(&like_v, [2, 3], DType::F64);
    let v = SeededNoise::new(42).standard_normal_like(&like_v);
    let t = SeededNoise::new(42).standard_normal_like(&like_t);
    assert_eq!(host(&t), v);
    assert_eq!(t.dims(), [2, 3]);
    let t32 = SeededNoise::new(42).standard_normal_like(&tensor(&like_v, [2, 3], DType::F32));
    assert_eq!(t32.dtype(), DType::F32);
    assert!(rel_close(&host(&t32), &v, 1e-7));
    // The sampler on tensors equals the sampler on vectors.
    let mut fv = |t: f64, x: &Vec<f64>| {
        x.iter()
            .map(|x| (1.5 - x) / (1.0 - t))
            .collect::<Vec<f64>>()
    };
    let mut ft = |t: f64, x: &Tensor<2>| x.clone().neg().add_scalar(1.5).div_scalar(1.0 - t);
    let ts = TimeGrid::uniform(0.0, 1.0, 9).times().unwrap();
    let sampler = FlowSdeSampler::new(2.0, Diffusion::Sigma { norm: 0.5 });
    let x0 = vec![0.3, -1.0, 2.0, 0.0, 0.1, -0.2];
    let sv = sampler
        .sample(&mut fv, &mut SeededNoise::new(5), x0.clone(), &ts)
        .unwrap();
    let st = sampler
        .sample(
            &mut ft,
            &mut SeededNoise::new(5),
            tensor(&x0, [2, 3], DType::F64),
            &ts,
        )
        .unwrap();
    for (a, b) in st.ys.iter().zip(&sv.ys) {
        assert!(rel_close(&host(a), b, 1e-13));
    }
}
