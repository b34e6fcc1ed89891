//! Property tests of the crate's invariants.

mod common;

use common::{t32, t64, values};
use l2d_core::{
    flow_repr::{Rescaling, normalize_flow_representation},
    input_norm::InputNormalization,
    interpolant::{flow_state, target_velocity},
    rng::HostRng,
    schedule::NoiseSchedule,
    temperature::TemperatureSchedule,
    velocity::VelocitySchedule,
    x1_estimate::{X1Estimation, X1Estimator, x1_average},
};
use proptest::prelude::*;

fn schedules() -> impl Strategy<Value = NoiseSchedule> {
    prop_oneof![
        Just(NoiseSchedule::Identity),
        Just(NoiseSchedule::Cosmap),
        (0.05f64..20.0).prop_map(|s| NoiseSchedule::shifted(s).unwrap()),
    ]
}

fn vector(len: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(-100.0f64..100.0, len)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn schedules_are_monotone_and_map_the_unit_interval_onto_itself(
        schedule in schedules(),
        a in 0.0f64..=1.0,
        b in 0.0f64..=1.0,
    ) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let (f_lo, f_hi) = (schedule.apply(lo), schedule.apply(hi));
        prop_assert!((0.0..=1.0).contains(&f_lo) && (0.0..=1.0).contains(&f_hi));
        prop_assert!(f_lo <= f_hi, "{schedule}: f({lo}) = {f_lo} > f({hi}) = {f_hi}");
        prop_assert!(schedule.apply(0.0).abs() < 1e-15);
        prop_assert!((schedule.apply(1.0) - 1.0).abs() < 1e-15);
        // The tensor form agrees with the scalar form (f64).
        let on_device = values(schedule.apply_tensor(t64(&[lo, hi], [2])));
        prop_assert!((on_device[0] - f_lo).abs() < 1e-14 && (on_device[1] - f_hi).abs() < 1e-14);
    }

    #[test]
    fn flow_state_hits_its_end_points(x0 in vector(6), x1 in vector(6)) {
        let a = t64(&x0, [2, 3]);
        let b = t64(&x1, [2, 3]);
        prop_assert_eq!(values(flow_state(a.clone(), b.clone(), 0.0)), x0.clone());
        prop_assert_eq!(values(flow_state(a.clone(), b.clone(), 1.0)), x1.clone());
        // Also with per-row tensor times.
        let t = t64(&[0.0, 1.0], [2, 1]);
        let mixed = values(flow_state(a, b, t));
        prop_assert_eq!(&mixed[..3], &x0[..3]);
        prop_assert_eq!(&mixed[3..], &x1[3..]);
    }

    #[test]
    fn constant_velocity_of_the_true_endpoint_is_the_target_velocity(
        x0 in vector(4),
        x1 in vector(4),
        t in prop_oneof![0.0f64..0.999, Just(0.0), 1e-12f64..1e-6],
    ) {
        let a = t64(&x0, [1, 4]);
        let b = t64(&x1, [1, 4]);
        let xt = flow_state(a.clone(), b.clone(), t);
        let v = values(VelocitySchedule::Constant.velocity(b.clone(), xt, t));
        let target = values(target_velocity(a, b));
        // Round-off of x_t is amplified by 1/(1-t).
        let tol = 1e-13 * 200.0 / (1.0 - t);
        for (got, want) in v.iter().zip(&target) {
            prop_assert!((got - want).abs() <= tol, "t = {t}: {got} vs {want}");
        }
        if t == 0.0 {
            prop_assert_eq!(v, target);
        }
    }

    #[test]
    fn averages_stay_inside_the_table_norm_bound(
        table in prop::collection::vec(-3.0f64..3.0, 5 * 3),
        logits in prop::collection::vec(-20.0f64..20.0, 4 * 5),
        temperature in 0.05f64..5.0,
    ) {
        let max_norm = table
            .chunks(3)
            .map(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt())
            .fold(0.0, f64::max);
        let x1 = values(x1_average(t32(&logits, [4, 5]), &t32(&table, [5, 3]), temperature).unwrap());
        for row in x1.chunks(3) {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            prop_assert!(norm <= max_norm * (1.0 + 1e-5) + 1e-6, "{norm} > {max_norm}");
        }
    }

    #[test]
    fn samples_and_clamps_are_table_rows(
        table in prop::collection::vec(-3.0f64..3.0, 5 * 3),
        logits in prop::collection::vec(-5.0f64..5.0, 6 * 5),
        temperature in 0.1f64..3.0,
        seed in any::<u64>(),
    ) {
        let rows: Vec<Vec<f32>> = table.chunks(3).map(|r| r.iter().map(|&v| v as f32).collect()).collect();
        let mut rng = HostRng::new(seed);
        for estimator in [X1Estimator::Sample, X1Estimator::Clamp] {
            let x1 = X1Estimation::new(estimator)
                .estimate(t32(&logits, [6, 5]), &t32(&table, [5, 3]), temperature, &mut rng)
                .unwrap();
            let got: Vec<f32> = x1.into_data().iter::<f32>().collect();
            for row in got.chunks(3) {
                prop_assert!(rows.iter().any(|r| r.as_slice() == row), "{estimator}: {row:?}");
            }
        }
    }

    #[test]
    fn normalised_rows_have_the_rescaled_norm(x in prop::collection::vec(-50.0f64..50.0, 8)) {
        prop_assume!(x.chunks(4).all(|r| r.iter().map(|v| v * v).sum::<f64>() > 1e-6));
        for (rescaling, norm) in [(Rescaling::Mult, 2.0), (Rescaling::Div, 0.5), (Rescaling::None, 1.0)] {
            let v = values(normalize_flow_representation(t64(&x, [2, 4]), rescaling));
            for row in v.chunks(4) {
                let n = row.iter().map(|v| v * v).sum::<f64>().sqrt();
                prop_assert!((n - norm).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn input_normalisation_gives_unit_variance_to_the_interpolant(
        t in 0.0f64..=1.0,
        seed in any::<u64>(),
    ) {
        // x_t = (1-t)·s·z + t·x1 with z ~ N(0, I) and a `mult` x1 (per-component variance 1):
        // after normalisation its per-component variance is 1 whatever t.
        let dim = 64;
        let n = 256;
        let mut rng = HostRng::new(seed);
        let noise = rng.normal_vec(n * dim);
        let mut x1 = rng.normal_vec(n * dim);
        for row in x1.chunks_mut(dim) {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            row.iter_mut().for_each(|v| *v *= (dim as f64).sqrt() / norm);
        }
        let s = 64.0;
        let x0: Vec<f64> = noise.iter().map(|z| s * z).collect();
        let xt = flow_state(t64(&x0, [n, dim]), t64(&x1, [n, dim]), t);
        let norm = InputNormalization::new(s, Rescaling::Mult, dim, 1.0).unwrap();
        let y = values(norm.apply(xt, t));
        let var = y.iter().map(|v| v * v).sum::<f64>() / y.len() as f64;
        prop_assert!((var - 1.0).abs() < 0.05, "t = {t}: variance {var}");
    }

    #[test]
    fn polynomial_temperatures_lie_in_the_unit_interval_and_decrease(
        power in 0.1f64..4.0,
        end in 0.1f64..=1.0,
        a in 0.0f64..=1.0,
        b in 0.0f64..=1.0,
    ) {
        let schedule = TemperatureSchedule::polynomial(power, end).unwrap();
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let (t_lo, t_hi) = (schedule.at(lo), schedule.at(hi));
        prop_assert!((0.0..=1.0).contains(&t_lo) && (0.0..=1.0).contains(&t_hi));
        prop_assert!(t_lo >= t_hi);
        prop_assert_eq!(schedule.at(0.0), 1.0);
        let reparsed: TemperatureSchedule = schedule.to_string().parse().unwrap();
        prop_assert_eq!(reparsed, schedule);
    }
}
