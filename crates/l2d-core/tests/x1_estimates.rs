//! x1 estimation on tiny tables, with hand-computed expectations, and the host RNG.

mod common;

use burn::tensor::{DType, Int, Tensor};
use common::{assert_close, device, t32, t64, values};
use l2d_core::{
    Error,
    flow_repr::Rescaling,
    rng::HostRng,
    x1_estimate::{
        X1Estimation, X1Estimator, inverse_cdf, x1_argmax, x1_average, x1_clamp, x1_sample,
        x1_sample_with_uniforms,
    },
};

/// Rows (1, 0), (0, 1), (-1, -1).
fn table3() -> Tensor<2> {
    t32(&[1.0, 0.0, 0.0, 1.0, -1.0, -1.0], [3, 2])
}

fn ln(x: f64) -> f64 {
    x.ln()
}

#[test]
fn average_at_two_temperatures() {
    // logits ln[1, 2, 1]: at T = 1 the probabilities are [1/4, 1/2, 1/4], so the average is
    // (1/4)(1,0) + (1/2)(0,1) + (1/4)(-1,-1) = (0, 1/4).
    // At T = 1/2 they are ∝ [1, 4, 1] = [1/6, 4/6, 1/6]: average (0, 1/2).
    let logits = t32(&[0.0, ln(2.0), 0.0], [1, 3]);
    let avg = x1_average(logits.clone(), &table3(), 1.0).unwrap();
    assert_close(&values(avg), &[0.0, 0.25], 0.0, 1e-7);
    let avg = x1_average(logits, &table3(), 0.5).unwrap();
    assert_close(&values(avg), &[0.0, 0.5], 0.0, 1e-7);
}

#[test]
fn argmax_at_zero_temperature_whatever_the_estimator() {
    // Two rows of logits: the argmax tokens are 2 and 0.
    let logits = t32(&[0.1, 0.2, 0.3, 5.0, -1.0, 4.0], [2, 3]);
    let expected = [-1.0, -1.0, 1.0, 0.0];
    assert_close(
        &values(x1_argmax(logits.clone(), &table3()).unwrap()),
        &expected,
        0.0,
        0.0,
    );
    let mut rng = HostRng::new(3);
    for estimator in [
        X1Estimator::Average,
        X1Estimator::Sample,
        X1Estimator::Clamp,
    ] {
        for temperature in [0.0, -1.0] {
            let rule = X1Estimation::new(estimator).with_renormalize(Rescaling::Mult);
            let x1 = rule
                .estimate(logits.clone(), &table3(), temperature, &mut rng)
                .unwrap();
            // No renormalisation at T <= 0 (the reference returns the raw row).
            assert_close(&values(x1), &expected, 0.0, 0.0);
        }
    }
}

#[test]
fn clamp_snaps_to_largest_inner_product_not_to_argmax() {
    // Table (1, 0), (0, 1), (0, 1.2); probabilities [0.4, 0.3, 0.3] (argmax token 0).
    // Average = (0.4, 0.3 + 0.36) = (0.4, 0.66); inner products with the rows:
    // 0.4, 0.66, 0.792, so clamp picks row 2 = (0, 1.2).
    let table = t32(&[1.0, 0.0, 0.0, 1.0, 0.0, 1.2], [3, 2]);
    let logits = t32(&[ln(0.4), ln(0.3), ln(0.3)], [1, 3]);
    let clamped = x1_clamp(logits.clone(), &table, 1.0).unwrap();
    assert_close(&values(clamped), &[0.0, 1.2], 0.0, 1e-7);
    let argmax = x1_argmax(logits.clone(), &table).unwrap();
    assert_close(&values(argmax), &[1.0, 0.0], 0.0, 0.0);
    // The dispatcher maps `Clamp` to the same thing and ignores renormalisation, as the
    // reference does.
    let rule = X1Estimation::new(X1Estimator::Clamp).with_renormalize(Rescaling::Mult);
    let x1 = rule
        .estimate(logits, &table, 1.0, &mut HostRng::new(0))
        .unwrap();
    assert_close(&values(x1), &[0.0, 1.2], 0.0, 1e-7);
}

#[test]
fn renormalised_average_has_the_representation_norm() {
    // Average (0, 1/4) renormalised with `mult` in d = 2 becomes (0, sqrt 2).
    let logits = t32(&[0.0, ln(2.0), 0.0], [1, 3]);
    let rule = X1Estimation::new(X1Estimator::Average).with_renormalize(Rescaling::Mult);
    let x1 = rule
        .estimate(logits, &table3(), 1.0, &mut HostRng::new(0))
        .unwrap();
    assert_close(&values(x1), &[0.0, 2f64.sqrt()], 1e-6, 1e-7);
}

#[test]
fn leading_dimensions_are_kept() {
    // [2, 2, 3] logits -> [2, 2, 2] estimates, row by row equal to the flattened computation.
    let raw: Vec<f64> = (0..12).map(|i| ((i * 7) % 5) as f64 * 0.3).collect();
    let x1 = x1_average(t32(&raw, [2, 2, 3]), &table3(), 0.7).unwrap();
    assert_eq!(x1.dims(), [2, 2, 2]);
    let flat = x1_average(t32(&raw, [4, 3]), &table3(), 0.7).unwrap();
    assert_eq!(values(x1), values(flat));
}

#[test]
fn sample_frequencies_match_the_softmax_probabilities() {
    // Five tokens with probabilities [0.1, 0.2, 0, 0.3, 0.4] at T = 0.5: logits = 0.5·ln p
    // (the zero-probability token gets -1e4). With a one-hot table the estimate names the token.
    let p = [0.1, 0.2, 0.0, 0.3, 0.4];
    let n = 40_000;
    let row: Vec<f64> = p
        .iter()
        .map(|&q| if q > 0.0 { 0.5 * ln(q) } else { -1e4 })
        .collect();
    let logits: Vec<f64> = row.iter().cycle().take(n * 5).copied().collect();
    let mut eye = vec![0.0; 25];
    for i in 0..5 {
        eye[i * 5 + i] = 1.0;
    }
    let table = t32(&eye, [5, 5]);
    let mut rng = HostRng::new(2025);
    let x1 = x1_sample(t32(&logits, [n, 5]), &table, 0.5, &mut rng).unwrap();
    let onehots = values(x1);
    let mut counts = [0usize; 5];
    for draw in onehots.chunks(5) {
        assert_eq!(draw.iter().sum::<f64>(), 1.0, "each draw is one table row");
        counts[draw.iter().position(|&v| v == 1.0).unwrap()] += 1;
    }
    assert_eq!(counts[2], 0, "a zero-probability token is never drawn");
    for (k, &q) in p.iter().enumerate() {
        let freq = counts[k] as f64 / n as f64;
        let sigma = (q * (1.0 - q) / n as f64).sqrt();
        assert!(
            (freq - q).abs() <= 4.5 * sigma + 1e-12,
            "token {k}: frequency {freq} vs probability {q} (sigma {sigma})"
        );
    }

    // A fixed seed reproduces the draws exactly, in f32 and in f64 alike.
    let logits32 = t32(&logits[..5 * 200], [200, 5]);
    let logits64 = t64(&logits[..5 * 200], [200, 5]);
    let a = values(x1_sample(logits32.clone(), &table, 0.5, &mut HostRng::new(9)).unwrap());
    let b = values(x1_sample(logits32, &table, 0.5, &mut HostRng::new(9)).unwrap());
    let c = values(x1_sample(logits64, &table, 0.5, &mut HostRng::new(9)).unwrap());
    assert_eq!(a, b);
    assert_eq!(a, c);
    let d = values(
        x1_sample(
            t32(&logits[..5 * 200], [200, 5]),
            &table,
            0.5,
            &mut HostRng::new(10),
        )
        .unwrap(),
    );
    assert_ne!(a, d, "another seed gives other draws");
}

#[test]
fn inverse_cdf_hand_values() {
    // Weights [1, 0, 3] (cumulative 1, 1, 4 of total 4): u·4 in (0, 1] -> 0, in (1, 4] -> 2.
    let weights = t32(
        &[1.0, 0.0, 3.0, 1.0, 0.0, 3.0, 1.0, 0.0, 3.0, 1.0, 0.0, 3.0],
        [4, 3],
    );
    let uniforms = t32(&[0.1, 0.25, 0.2501, 0.999], [4]);
    let indices: Tensor<1, Int> = inverse_cdf(weights, uniforms);
    let got: Vec<i64> = indices.into_data().iter::<i64>().collect();
    assert_eq!(got, vec![0, 0, 2, 2]);
    // Through the estimator with given uniforms.
    let logits = t32(&[0.0, ln(3.0), 0.0, ln(3.0)], [2, 2]);
    let table = t32(&[1.0, 0.0, 0.0, 1.0], [2, 2]);
    let x1 = x1_sample_with_uniforms(logits, &table, 1.0, t32(&[0.2, 0.3], [2])).unwrap();
    assert_eq!(values(x1), vec![1.0, 0.0, 0.0, 1.0]);
}

#[test]
fn shape_and_temperature_errors() {
    let logits = t32(&[0.0, 1.0], [1, 2]);
    let mut rng = HostRng::new(0);
    let rule = X1Estimation::new(X1Estimator::Average);
    assert!(matches!(
        rule.estimate(logits.clone(), &table3(), 1.0, &mut rng),
        Err(Error::Shape {
            tensor: "flow embedding table",
            ..
        })
    ));
    let table = t32(&[1.0, 0.0, 0.0, 1.0], [2, 2]);
    for bad in [f64::NAN, f64::INFINITY] {
        assert!(matches!(
            rule.estimate(logits.clone(), &table, bad, &mut rng),
            Err(Error::InvalidValue {
                field: "temperature",
                ..
            })
        ));
    }
    assert!(matches!(
        x1_average(logits.clone(), &table, 0.0),
        Err(Error::InvalidValue {
            field: "temperature",
            ..
        })
    ));
    assert!(matches!(
        x1_sample_with_uniforms(logits, &table, 1.0, t32(&[0.5, 0.5], [2])),
        Err(Error::Shape {
            tensor: "uniforms",
            ..
        })
    ));
}

#[test]
fn estimator_names() {
    assert_eq!(
        X1Estimator::from_reference("sample", true).unwrap(),
        X1Estimator::Sample
    );
    assert_eq!(
        X1Estimator::from_reference("average", true).unwrap(),
        X1Estimator::Clamp
    );
    assert_eq!(
        X1Estimator::from_reference("Average", false).unwrap(),
        X1Estimator::Average
    );
    assert!(matches!(
        X1Estimator::from_reference("mode", false),
        Err(Error::UnknownName {
            field: "nstep_x1_estimation",
            ..
        })
    ));
    for e in [
        X1Estimator::Average,
        X1Estimator::Sample,
        X1Estimator::Clamp,
    ] {
        assert_eq!(e.to_string().parse::<X1Estimator>().unwrap(), e);
    }
}

#[test]
fn table_in_another_dtype_is_converted() {
    let logits = t64(&[0.0, ln(2.0), 0.0], [1, 3]);
    let avg = x1_average(logits, &table3(), 1.0).unwrap();
    assert_eq!(avg.dtype(), DType::F64);
    assert_close(&values(avg), &[0.0, 0.25], 0.0, 1e-7);
}

// ---------------------------------------------------------------- host RNG

#[test]
fn host_rng_is_reproducible_and_dtype_independent() {
    let dev = device();
    let a = values(HostRng::new(42).normal([3, 4], &dev));
    let b = values(HostRng::new(42).normal([3, 4], &dev));
    assert_eq!(a, b);
    let c = values(HostRng::new(42).normal([3, 4], (&dev, DType::F64)));
    // The f32 tensor is the f64 draw rounded to f32.
    let rounded: Vec<f64> = c.iter().map(|&v| v as f32 as f64).collect();
    assert_eq!(a, rounded);
    assert_ne!(a, values(HostRng::new(43).normal([3, 4], &dev)));
    // The host vectors are the tensor's values.
    assert_eq!(HostRng::new(42).normal_vec(12), c);
}

#[test]
fn host_rng_moments() {
    let mut rng = HostRng::new(1);
    let n = 200_000;
    let z = rng.normal_vec(n);
    let mean = z.iter().sum::<f64>() / n as f64;
    let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
    let kurt = z.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
    // Standard errors: mean 1/sqrt(n) ≈ 0.0022, variance sqrt(2/n) ≈ 0.0032.
    assert!(mean.abs() < 0.011, "mean {mean}");
    assert!((var - 1.0).abs() < 0.016, "variance {var}");
    assert!((kurt - 3.0).abs() < 0.05, "kurtosis {kurt}");
    let u = rng.uniform_vec(n);
    assert!(u.iter().all(|&v| v > 0.0 && v < 1.0));
    let mean = u.iter().sum::<f64>() / n as f64;
    assert!((mean - 0.5).abs() < 0.004, "uniform mean {mean}");
    let below = u.iter().filter(|&&v| v < 0.1).count() as f64 / n as f64;
    assert!((below - 0.1).abs() < 0.004, "P(u < 0.1) = {below}");
}

#[test]
fn host_rng_streams_forks_and_children() {
    let first = |mut r: HostRng| r.uniform_vec(4);
    // Streams of one seed differ; the same (seed, stream) repeats.
    assert_eq!(
        first(HostRng::with_stream(5, 3)),
        first(HostRng::with_stream(5, 3))
    );
    assert_ne!(
        first(HostRng::with_stream(5, 3)),
        first(HostRng::with_stream(5, 4))
    );
    assert_eq!(HostRng::with_stream(5, 3).stream(), 3);
    assert_eq!(first(HostRng::with_stream(5, 0)), first(HostRng::new(5)));

    // derive depends on the key and id only, not on how much the parent has drawn.
    let mut parent = HostRng::new(11);
    let child_before = first(parent.derive(7));
    parent.uniform_vec(10);
    assert_eq!(first(parent.derive(7)), child_before);
    assert_ne!(first(parent.derive(8)), child_before);
    assert_ne!(first(HostRng::new(11)), first(HostRng::new(11).derive(0)));

    // fork advances the parent and gives a child unlike it.
    let mut a = HostRng::new(11);
    let mut b = HostRng::new(11);
    let child = first(a.fork());
    assert_eq!(child, first(b.fork()));
    assert_eq!(a.uniform_vec(4), b.uniform_vec(4));
    assert_ne!(first(HostRng::new(11)), child);
    let mut c = HostRng::new(11);
    let _ = c.fork();
    assert_ne!(
        c.uniform_vec(4),
        first(HostRng::new(11)),
        "the parent advanced"
    );
}
