//! Hand-computed values for every formula of the crate.

mod common;

use burn::tensor::DType;
use common::{assert_close, t32, t64, values};
use l2d_core::{
    Error,
    flow_repr::{Rescaling, normalize_flow_representation},
    input_norm::InputNormalization,
    interpolant::{flow_state, target_velocity},
    schedule::NoiseSchedule,
    temperature::TemperatureSchedule,
    timestep::{timestep_embedding, timestep_embedding_with_period, timestep_frequencies},
    velocity::VelocitySchedule,
};

// ---------------------------------------------------------------- timestep embedding

#[test]
fn timestep_embedding_dim8_matches_decimal_frequencies() {
    // dim 8, half 4: f_i = exp(-ln(1e4)·i/4) = 10^-i, so the embedding of t is
    // [cos t, cos t/10, cos t/100, cos t/1000, sin t, sin t/10, sin t/100, sin t/1000].
    let ts = [0.0, 0.25, 1.0];
    let emb = timestep_embedding(t64(&ts, [3]), 8).unwrap();
    assert_eq!(emb.dims(), [3, 8]);
    let mut expected = Vec::new();
    for t in ts {
        let args = [t, t / 10.0, t / 100.0, t / 1000.0];
        expected.extend(args.iter().map(|a: &f64| a.cos()));
        expected.extend(args.iter().map(|a: &f64| a.sin()));
    }
    assert_close(&values(emb), &expected, 0.0, 1e-15);
}

#[test]
fn timestep_embedding_f32_matches_reference_printout() {
    // Printed by the reference's FrequencyEmbedder.timestep_embedding (torch 2, float32) for
    // t = [0.25, 1.0], dim 8:
    //   [9.689124227e-01, 9.996874928e-01, 9.999969006e-01, 1.0, 2.474039644e-01,
    //    2.499739453e-02, 2.499997383e-03, 2.499999828e-04]
    //   [5.403023362e-01, 9.950041771e-01, 9.999499917e-01, 9.999995232e-01, 8.414709568e-01,
    //    9.983341396e-02, 9.999833070e-03, 9.999998147e-04]
    // and for t = 0.7, dim 6 (f = 1, 10^-4/3, 10^-8/3):
    //   [0.764842212, 0.999472201, 0.999998868, 0.644217670, 0.032485411, 0.001508104]
    let emb = timestep_embedding(t32(&[0.25, 1.0], [2]), 8).unwrap();
    assert_eq!(emb.dtype(), DType::F32);
    #[rustfmt::skip]
    let expected = [
        9.689124227e-01, 9.996874928e-01, 9.999969006e-01, 1.0,
        2.474039644e-01, 2.499739453e-02, 2.499997383e-03, 2.499999828e-04,
        5.403023362e-01, 9.950041771e-01, 9.999499917e-01, 9.999995232e-01,
        8.414709568e-01, 9.983341396e-02, 9.999833070e-03, 9.999998147e-04,
    ];
    assert_close(&values(emb), &expected, 0.0, 2e-7);

    let emb = timestep_embedding(t32(&[0.7], [1]), 6).unwrap();
    let expected = [
        0.764842212,
        0.999472201,
        0.999998868,
        0.644217670,
        0.032485411,
        0.001508104,
    ];
    assert_close(&values(emb), &expected, 0.0, 2e-7);
}

#[test]
fn timestep_frequencies_and_period() {
    // max period 100, dim 4: f = [1, 100^-1/2] = [1, 0.1].
    assert_close(
        &timestep_frequencies(4, 100.0).unwrap(),
        &[1.0, 0.1],
        1e-15,
        0.0,
    );
    let emb = timestep_embedding_with_period(t64(&[2.0], [1]), 4, 100.0).unwrap();
    let expected = [2f64.cos(), 0.2f64.cos(), 2f64.sin(), 0.2f64.sin()];
    assert_close(&values(emb), &expected, 0.0, 1e-15);
}

#[test]
fn timestep_embedding_rejects_odd_and_zero_dims() {
    for dim in [0, 7] {
        let err = timestep_embedding(t32(&[0.5], [1]), dim).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidValue {
                field: "timestep embedding dim",
                ..
            }
        ));
    }
    let err = timestep_frequencies(8, 0.0).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidValue {
            field: "max_period",
            ..
        }
    ));
}

// ---------------------------------------------------------------- noise schedules

#[test]
fn noise_schedules_hand_values() {
    // cosmap(t) = tan(πt/2) / (tan(πt/2) + 1): at 1/4, tan(π/8) = √2 - 1 gives 1 - 1/√2;
    // at 1/2 it is 1/2; at 3/4, tan(3π/8) = √2 + 1 gives 1/√2.
    let cosmap = NoiseSchedule::Cosmap;
    let r = std::f64::consts::FRAC_1_SQRT_2;
    for (t, expected) in [
        (0.0, 0.0),
        (0.25, 1.0 - r),
        (0.5, 0.5),
        (0.75, r),
        (1.0, 1.0),
    ] {
        assert!((cosmap.apply(t) - expected).abs() < 1e-15, "cosmap({t})");
    }
    // The reference's own form 1 - 1/(tan(πt/2)+1) at 0.9 (torch float64: 0.863271264).
    assert!((cosmap.apply(0.9) - 0.863271264).abs() < 1e-9);

    // Shifted, s = 3: t/(3 - 2t): 0.25 -> 0.1, 0.5 -> 0.25, 1 -> 1.
    let shifted = NoiseSchedule::shifted(3.0).unwrap();
    for (t, expected) in [(0.0, 0.0), (0.25, 0.1), (0.5, 0.25), (1.0, 1.0)] {
        assert!((shifted.apply(t) - expected).abs() < 1e-15, "shifted({t})");
    }
    assert_eq!(NoiseSchedule::Identity.apply(0.37), 0.37);

    // The tensor form computes the same values (f64 here).
    let ts = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0];
    for schedule in [cosmap, shifted, NoiseSchedule::Identity] {
        let on_device = values(schedule.apply_tensor(t64(&ts, [7])));
        let on_host: Vec<f64> = ts.iter().map(|&t| schedule.apply(t)).collect();
        assert_close(&on_device, &on_host, 1e-14, 1e-15);
    }
}

#[test]
fn noise_schedule_names() {
    assert_eq!(
        "identity".parse::<NoiseSchedule>().unwrap(),
        NoiseSchedule::Identity
    );
    assert_eq!(
        "COSMAP".parse::<NoiseSchedule>().unwrap(),
        NoiseSchedule::Cosmap
    );
    assert_eq!(
        "shifted_3.0".parse::<NoiseSchedule>().unwrap(),
        NoiseSchedule::Shifted { shift: 3.0 }
    );
    for s in [
        NoiseSchedule::Identity,
        NoiseSchedule::Cosmap,
        NoiseSchedule::shifted(0.5).unwrap(),
    ] {
        assert_eq!(s.to_string().parse::<NoiseSchedule>().unwrap(), s);
    }
    assert!(matches!(
        "logit_normal".parse::<NoiseSchedule>(),
        Err(Error::UnknownName {
            field: "noise_schedule",
            ..
        })
    ));
    assert!(matches!(
        "shifted_abc".parse::<NoiseSchedule>(),
        Err(Error::Parse {
            field: "noise_schedule",
            ..
        })
    ));
    for bad in ["shifted_0", "shifted_-2", "shifted_inf", "shifted_nan"] {
        assert!(
            matches!(
                bad.parse::<NoiseSchedule>(),
                Err(Error::InvalidValue { field: "shift", .. })
            ),
            "{bad}"
        );
    }
    assert!(NoiseSchedule::Shifted { shift: -1.0 }.validate().is_err());
}

// ---------------------------------------------------------------- interpolant and velocity

#[test]
fn flow_state_scalar_and_per_position() {
    let x0 = t32(&[0.0, 2.0, -4.0, 8.0], [2, 2]);
    let x1 = t32(&[4.0, 6.0, 4.0, 0.0], [2, 2]);
    // t = 0.25: 0.75·x0 + 0.25·x1.
    let xt = flow_state(x0.clone(), x1.clone(), 0.25);
    assert_close(&values(xt), &[1.0, 3.0, -2.0, 6.0], 0.0, 0.0);

    // Per-row times [0.5, 1.0] as a [2, 1] tensor broadcast over the last dim.
    let t = t32(&[0.5, 1.0], [2, 1]);
    let xt = flow_state(x0.clone(), x1.clone(), t);
    assert_close(&values(xt), &[2.0, 4.0, 4.0, 0.0], 0.0, 0.0);

    assert_close(
        &values(target_velocity(x0, x1)),
        &[4.0, 4.0, 8.0, -8.0],
        0.0,
        0.0,
    );
}

#[test]
fn flow_state_with_batch_sequence_times() {
    // x of [b=2, s=2, d=3] against t of [2, 2, 1]: every position has its own time.
    let x0: Vec<f64> = (0..12).map(|i| i as f64).collect();
    let x1: Vec<f64> = (0..12).map(|i| 100.0 - i as f64).collect();
    let ts = [0.0, 0.25, 0.5, 1.0];
    let xt = flow_state(
        t64(&x0, [2, 2, 3]),
        t64(&x1, [2, 2, 3]),
        t64(&ts, [2, 2, 1]),
    );
    let expected: Vec<f64> = (0..12)
        .map(|i| (1.0 - ts[i / 3]) * x0[i] + ts[i / 3] * x1[i])
        .collect();
    assert_close(&values(xt), &expected, 0.0, 1e-13);
}

#[test]
fn velocity_schedules_hand_values() {
    let x1_hat = t32(&[3.0, -1.0], [1, 2]);
    let xt = t32(&[1.0, 1.0], [1, 2]);
    // t = 0.75: (x1_hat - x_t) = [2, -2]; /0.25 = [8, -8]; /0.0625 = [32, -32].
    let v = VelocitySchedule::Constant.velocity(x1_hat.clone(), xt.clone(), 0.75);
    assert_close(&values(v), &[8.0, -8.0], 0.0, 0.0);
    let v = VelocitySchedule::Edm.velocity(x1_hat.clone(), xt.clone(), 0.75);
    assert_close(&values(v), &[32.0, -32.0], 0.0, 0.0);

    // Tensor times, one per row: rows at t = 0 and t = 0.5.
    let x1_hat = t32(&[3.0, -1.0, 3.0, -1.0], [2, 2]);
    let xt = t32(&[1.0, 1.0, 1.0, 1.0], [2, 2]);
    let t = t32(&[0.0, 0.5], [2, 1]);
    let v = VelocitySchedule::Constant.velocity(x1_hat.clone(), xt.clone(), t.clone());
    assert_close(&values(v), &[2.0, -2.0, 4.0, -4.0], 0.0, 0.0);
    let v = VelocitySchedule::Edm.velocity(x1_hat, xt, t);
    assert_close(&values(v), &[2.0, -2.0, 8.0, -8.0], 0.0, 0.0);

    assert_eq!(VelocitySchedule::Constant.divisor(0.75), 0.25);
    assert_eq!(VelocitySchedule::Edm.divisor(0.75), 0.0625);
    assert_eq!(
        "edm".parse::<VelocitySchedule>().unwrap(),
        VelocitySchedule::Edm
    );
    assert_eq!(
        "Constant".parse::<VelocitySchedule>().unwrap(),
        VelocitySchedule::Constant
    );
    assert!(matches!(
        "cosine".parse::<VelocitySchedule>(),
        Err(Error::UnknownName {
            field: "velocity_schedule",
            ..
        })
    ));
}

// ---------------------------------------------------------------- flow representations

#[test]
fn normalisation_and_rescaling_modes() {
    // Rows [3, 0, 0, 4] (norm 5) and [0, 0, 0, 0]; d = 4 so sqrt(d) = 2.
    let x = t32(&[3.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0], [2, 4]);
    let cases = [
        (Rescaling::Mult, 2.0),
        (Rescaling::Div, 0.5),
        (Rescaling::None, 1.0),
    ];
    for (rescaling, scale) in cases {
        let v = values(normalize_flow_representation(x.clone(), rescaling));
        let expected = [0.6 * scale, 0.0, 0.0, 0.8 * scale, 0.0, 0.0, 0.0, 0.0];
        assert_close(&v, &expected, 1e-7, 0.0);
        assert_eq!(rescaling.factor(4), scale);
    }
    // var_x1 of the reference's FlowToLMEmbedder: div 1/d², mult 1, none 1/d.
    assert_eq!(Rescaling::Div.x1_variance(4), 1.0 / 16.0);
    assert_eq!(Rescaling::Mult.x1_variance(4), 1.0);
    assert_eq!(Rescaling::None.x1_variance(4), 0.25);
    // A tiny row is scaled by 1/eps, as F.normalize does: [1e-13, 0] / 1e-12 = [0.1, 0].
    let tiny = normalize_flow_representation(t64(&[1e-13, 0.0], [1, 2]), Rescaling::None);
    assert_close(&values(tiny), &[0.1, 0.0], 1e-12, 0.0);

    assert_eq!("MULT".parse::<Rescaling>().unwrap(), Rescaling::Mult);
    assert!(matches!(
        "sqrt".parse::<Rescaling>(),
        Err(Error::UnknownName {
            field: "flow_representation_rescaling",
            ..
        })
    ));
}

// ---------------------------------------------------------------- input normalisation

#[test]
fn input_normalisation_hand_values() {
    // s = 64, mult (var_x1 = 1), c = 1, t = 0.5: std = sqrt(0.25·4096 + 0.25) = sqrt(1024.25).
    let norm = InputNormalization::new(64.0, Rescaling::Mult, 256, 1.0).unwrap();
    assert!((norm.std_at(0.5) - 1024.25f64.sqrt()).abs() < 1e-12);
    assert_eq!(norm.std_at(0.0), 64.0);
    assert_eq!(norm.std_at(1.0), 1.0);
    let y = norm.apply(t64(&[1024.25f64.sqrt(), -2.0], [1, 2]), 0.5);
    assert_close(&values(y), &[1.0, -2.0 / 1024.25f64.sqrt()], 1e-15, 0.0);

    // div with d = 4: var_x1 = 1/16, so at t = 1 the std is 1/4; c = 2 doubles the result.
    let norm = InputNormalization::new(64.0, Rescaling::Div, 4, 2.0).unwrap();
    let y = norm.apply(t64(&[1.0, -0.5], [1, 2]), 1.0);
    assert_close(&values(y), &[8.0, -4.0], 1e-15, 0.0);
    // none with d = 4: var_x1 = 1/4, std 1/2 at t = 1.
    let norm = InputNormalization::new(64.0, Rescaling::None, 4, 1.0).unwrap();
    assert_close(
        &values(norm.apply(t64(&[1.0], [1, 1]), 1.0)),
        &[2.0],
        1e-15,
        0.0,
    );
}

#[test]
fn input_normalisation_per_position_times_match_scalar_times() {
    let norm = InputNormalization::new(64.0, Rescaling::Mult, 3, 1.0).unwrap();
    let x: Vec<f64> = (0..12).map(|i| (i as f64 - 5.0) * 7.5).collect();
    let ts = [0.0, 0.3, 0.9, 1.0];
    let y = values(norm.apply(t32(&x, [2, 2, 3]), t32(&ts, [2, 2, 1])));
    let expected: Vec<f64> = (0..12).map(|i| x[i] / norm.std_at(ts[i / 3])).collect();
    // f32 on the device against f64 on the host.
    assert_close(&y, &expected, 1e-6, 1e-7);
}

#[test]
fn input_normalisation_rejects_bad_parameters() {
    let cases = [
        (
            InputNormalization::new(0.0, Rescaling::Mult, 4, 1.0),
            "noise_rescaling",
        ),
        (
            InputNormalization::new(f64::NAN, Rescaling::Mult, 4, 1.0),
            "noise_rescaling",
        ),
        (
            InputNormalization::new(64.0, Rescaling::Mult, 0, 1.0),
            "flow_representation_dim",
        ),
        (
            InputNormalization::new(64.0, Rescaling::Mult, 4, 0.0),
            "flow_to_lm_timestep_rescaling",
        ),
    ];
    for (result, name) in cases {
        match result {
            Err(Error::InvalidValue { field, .. }) => assert_eq!(field, name),
            other => panic!("expected an error on {name}, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- temperature schedules

#[test]
fn temperature_schedules_hand_values() {
    // polynomial_2_0.8: (1 - t/0.8)² for t < 0.8, else 0 (torch float64 printout of the
    // reference's polynomial_temperature: [1, 0.390625, 0.140625, 0, 0] at t = [0, .3, .5, .9, 1]).
    let p = "polynomial_2_0.8".parse::<TemperatureSchedule>().unwrap();
    assert_eq!(
        p,
        TemperatureSchedule::Polynomial {
            power: 2.0,
            end: 0.8
        }
    );
    let ts = [0.0, 0.3, 0.5, 0.8, 0.9, 1.0];
    let expected = [1.0, 0.390625, 0.140625, 0.0, 0.0, 0.0];
    for (t, e) in ts.iter().zip(expected) {
        assert!((p.at(*t) - e).abs() < 1e-15, "polynomial_2_0.8 at {t}");
    }
    // The released code-task schedule polynomial_1_1.0 is 1 - t, as is OneMinusT.
    let linear = "polynomial_1_1.0".parse::<TemperatureSchedule>().unwrap();
    for t in [0.0, 0.3, 0.5, 0.9, 1.0] {
        assert!((linear.at(t) - (1.0 - t)).abs() < 1e-15);
        assert!((TemperatureSchedule::OneMinusT.at(t) - (1.0 - t)).abs() < 1e-15);
    }
    let constant = "0.0".parse::<TemperatureSchedule>().unwrap();
    assert_eq!(constant, TemperatureSchedule::Constant(0.0));
    assert_eq!(constant.at(0.7), 0.0);
    assert!(constant.is_constant() && !linear.is_constant());
    assert_eq!("1".parse::<TemperatureSchedule>().unwrap().at(0.2), 1.0);
    assert_eq!(TemperatureSchedule::try_from(0.5).unwrap().at(0.9), 0.5);
    assert_eq!(
        "1-t".parse::<TemperatureSchedule>().unwrap(),
        TemperatureSchedule::OneMinusT
    );
    assert_eq!(
        TemperatureSchedule::default(),
        TemperatureSchedule::Constant(0.0)
    );
}

#[test]
fn temperature_schedule_parse_errors_and_round_trips() {
    for bad in [
        "polynomial_1",
        "polynomial_1_2_3",
        "polynomial_a_1.0",
        "cosine",
        "",
    ] {
        assert!(
            matches!(
                bad.parse::<TemperatureSchedule>(),
                Err(Error::Parse {
                    field: "temperature_schedule",
                    ..
                })
            ),
            "{bad:?} should not parse"
        );
    }
    assert!(matches!(
        "polynomial_1_0".parse::<TemperatureSchedule>(),
        Err(Error::InvalidValue { field: "end", .. })
    ));
    assert!(matches!(
        "nan".parse::<TemperatureSchedule>(),
        Err(Error::InvalidValue {
            field: "temperature",
            ..
        })
    ));
    for s in [
        TemperatureSchedule::Constant(0.5),
        TemperatureSchedule::Polynomial {
            power: 1.5,
            end: 0.9,
        },
        TemperatureSchedule::OneMinusT,
    ] {
        assert_eq!(s.to_string().parse::<TemperatureSchedule>().unwrap(), s);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            serde_json::from_str::<TemperatureSchedule>(&json).unwrap(),
            s
        );
    }
    // JSON numbers and strings, as the reference's configuration holds them.
    assert_eq!(
        serde_json::from_str::<TemperatureSchedule>("1.0").unwrap(),
        TemperatureSchedule::Constant(1.0)
    );
    assert_eq!(
        serde_json::from_str::<TemperatureSchedule>("\"polynomial_1_1.0\"").unwrap(),
        TemperatureSchedule::Polynomial {
            power: 1.0,
            end: 1.0
        }
    );
    assert!(serde_json::from_str::<TemperatureSchedule>("\"polynomial_x\"").is_err());
}

#[test]
fn f32_and_f64_paths_agree() {
    // The same formula on f32 and f64 tensors (dtype is preserved).
    let x = [0.3, -1.2, 2.5, 0.0];
    let a = flow_state(t32(&x, [2, 2]), t32(&[1.0, 2.0, 3.0, 4.0], [2, 2]), 0.4);
    let b = flow_state(t64(&x, [2, 2]), t64(&[1.0, 2.0, 3.0, 4.0], [2, 2]), 0.4);
    assert_eq!(a.dtype(), DType::F32);
    assert_eq!(b.dtype(), DType::F64);
    assert_close(&values(a), &values(b), 1e-6, 1e-7);
}
