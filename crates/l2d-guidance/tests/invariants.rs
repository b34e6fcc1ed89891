//! Property tests of classifier-free guidance.

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use l2d_guidance::{Guidance, cfg, cfg_rescale, split_branches, stack_branches, stack_labels};
use proptest::prelude::*;

fn t(values: &[f64], shape: [usize; 3]) -> Tensor<3> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), shape),
        (&Device::flex(), DType::F64),
    )
}

fn values(t: Tensor<3>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

/// Two velocities of shape [2, 3, 2].
fn pair() -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
    (
        prop::collection::vec(-50.0f64..50.0, 12),
        prop::collection::vec(-50.0f64..50.0, 12),
    )
}

const SHAPE: [usize; 3] = [2, 3, 2];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn weight_one_is_the_conditional_and_zero_the_unconditional((c, u) in pair(), time in 0.0f64..=1.0) {
        prop_assert_eq!(values(cfg(t(&c, SHAPE), t(&u, SHAPE), 1.0)), c.clone());
        prop_assert_eq!(values(cfg(t(&c, SHAPE), t(&u, SHAPE), 0.0)), u.clone());
        let off = Guidance::new(1.0).unwrap();
        prop_assert_eq!(values(off.combine(time, t(&c, SHAPE), Some(t(&u, SHAPE))).unwrap()), c.clone());
        let zero = Guidance::new(0.0).unwrap();
        prop_assert_eq!(values(zero.combine(time, t(&c, SHAPE), Some(t(&u, SHAPE))).unwrap()), u);
    }

    #[test]
    fn guidance_is_affine_in_the_weight((c, u) in pair(), w1 in 0.0f64..10.0, w2 in 0.0f64..10.0, a in 0.0f64..=1.0) {
        let at = |w: f64| values(cfg(t(&c, SHAPE), t(&u, SHAPE), w));
        let mixed = at(a * w1 + (1.0 - a) * w2);
        let (g1, g2) = (at(w1), at(w2));
        for i in 0..12 {
            let expected = a * g1[i] + (1.0 - a) * g2[i];
            prop_assert!((mixed[i] - expected).abs() <= 1e-9, "{} vs {}", mixed[i], expected);
            // Also the Imagen form v_u + w (v_c - v_u).
            let imagen = u[i] + w1 * (c[i] - u[i]);
            prop_assert!((g1[i] - imagen).abs() <= 1e-9);
        }
    }

    #[test]
    fn rescale_zero_is_plain_cfg_and_one_restores_the_conditional_deviation(
        (c, u) in pair(),
        w in 0.0f64..8.0,
        time in 0.0f64..=1.0,
    ) {
        let plain = values(cfg(t(&c, SHAPE), t(&u, SHAPE), w));
        let rescaled0 = values(cfg_rescale(t(&plain, SHAPE), t(&c, SHAPE), 0.0));
        prop_assert_eq!(&rescaled0, &plain);
        let g = Guidance::new(w).unwrap().with_rescale(0.0).unwrap();
        prop_assert_eq!(values(g.combine(time, t(&c, SHAPE), Some(t(&u, SHAPE))).unwrap()), plain.clone());

        let full = values(cfg_rescale(t(&plain, SHAPE), t(&c, SHAPE), 1.0));
        let std = |x: &[f64]| {
            let m = x.iter().sum::<f64>() / x.len() as f64;
            (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
        };
        for sample in 0..2 {
            let range = sample * 6..(sample + 1) * 6;
            if std(&plain[range.clone()]) > 1e-9 {
                prop_assert!((std(&full[range.clone()]) - std(&c[range])).abs() <= 1e-9);
            }
        }
    }

    #[test]
    fn stacking_then_splitting_is_the_identity(x in prop::collection::vec(-50.0f64..50.0, 12), labels in prop::collection::vec(0i64..4, 2)) {
        let (a, b) = split_branches(stack_branches(t(&x, SHAPE))).unwrap();
        prop_assert_eq!(values(a), x.clone());
        prop_assert_eq!(values(b), x);
        let stacked = stack_labels(Tensor::<1, Int>::from_ints(labels.as_slice(), &Device::flex()), 4);
        let got: Vec<i64> = stacked.into_data().iter::<i64>().collect();
        prop_assert_eq!(&got[..2], labels.as_slice());
        prop_assert_eq!(&got[2..], &[4, 4]);
    }

    #[test]
    fn outside_the_interval_the_conditional_velocity_is_returned(
        (c, u) in pair(),
        w in 0.0f64..8.0,
        start in 0.0f64..0.5,
        len in 0.0f64..0.5,
        time in 0.0f64..=1.0,
    ) {
        let g = Guidance::new(w).unwrap().with_interval(start, start + len).unwrap();
        let v = values(g.combine(time, t(&c, SHAPE), Some(t(&u, SHAPE))).unwrap());
        let inside = start <= time && time <= start + len;
        prop_assert_eq!(g.needs_unconditional(time), inside && w != 1.0);
        if inside {
            prop_assert_eq!(v, values(cfg(t(&c, SHAPE), t(&u, SHAPE), w)));
        } else {
            prop_assert_eq!(v, c);
        }
    }
}
