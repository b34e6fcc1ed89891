//! Hand-computed guidance values and error cases.

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use l2d_guidance::{
    Error, Guidance, GuidanceInterval, cfg, cfg_rescale, split_branches, stack_branches,
    stack_labels,
};

fn t<const D: usize>(values: &[f64], shape: [usize; D]) -> Tensor<D> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), shape),
        (&Device::flex(), DType::F64),
    )
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

#[track_caller]
fn assert_close(actual: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tol, "element {i}: {a} vs {e}");
    }
}

#[test]
fn cfg_hand_values() {
    let v_c = t(&[1.0, 2.0, -3.0], [1, 3]);
    let v_u = t(&[0.0, 4.0, 1.0], [1, 3]);
    // w = 2: 2 v_c - v_u = [2, 0, -7]; w = 0.5: the mean [0.5, 3, -1].
    assert_close(
        &values(cfg(v_c.clone(), v_u.clone(), 2.0)),
        &[2.0, 0.0, -7.0],
        0.0,
    );
    assert_close(&values(cfg(v_c, v_u, 0.5)), &[0.5, 3.0, -1.0], 0.0);
}

#[test]
fn cfg_rescale_hand_values() {
    // v_c = [1, -1] (std 1), v_u = 0, w = 3: v_cfg = [3, -3] (std 3), so v_rs = [1, -1];
    // phi = 0.7: 0.7·[1, -1] + 0.3·[3, -3] = [1.6, -1.6].
    // Second sample: v_c = [2, 4] (std 1), v_u = [1, 1]: v_cfg = 3 v_c - 2 v_u = [4, 10]
    // (std 3), v_rs = [4/3, 10/3], output 0.7·v_rs + 0.3·v_cfg = [2.1333.., 5.3333..].
    let v_c = t(&[1.0, -1.0, 2.0, 4.0], [2, 2]);
    let v_u = t(&[0.0, 0.0, 1.0, 1.0], [2, 2]);
    let guidance = Guidance::new(3.0).unwrap().with_rescale(0.7).unwrap();
    let v = guidance
        .combine(0.5, v_c.clone(), Some(v_u.clone()))
        .unwrap();
    let expected = [1.6, -1.6, 0.7 * 4.0 / 3.0 + 1.2, 0.7 * 10.0 / 3.0 + 3.0];
    assert_close(&values(v), &expected, 1e-12);

    let plain = cfg(v_c.clone(), v_u, 3.0);
    let full = values(cfg_rescale(plain, v_c.clone(), 1.0));
    assert_close(&full, &[1.0, -1.0, 4.0 / 3.0, 10.0 / 3.0], 1e-12);

    // A constant guided velocity (zero deviation) is left as it is.
    let flat = t(&[2.0, 2.0], [1, 2]);
    let out = values(cfg_rescale(flat, t(&[1.0, -1.0], [1, 2]), 0.7));
    assert_close(&out, &[2.0, 2.0], 0.0);
}

#[test]
fn rescale_works_on_higher_rank_tensors_per_sample() {
    // [2, 2, 2]: the deviations are per sample over 4 values each.
    let v_c = t(&[1.0, -1.0, 1.0, -1.0, 0.0, 0.0, 0.0, 8.0], [2, 2, 2]);
    let v_u = t(&[0.0; 8], [2, 2, 2]);
    let guidance = Guidance::new(2.0).unwrap().with_rescale(1.0).unwrap();
    // v_cfg = 2 v_c, whose std is twice v_c's: full rescale gives v_c back.
    let v = values(guidance.combine(0.1, v_c.clone(), Some(v_u)).unwrap());
    assert_close(&v, &values(v_c), 1e-12);
}

#[test]
fn interval_switches_guidance_on_and_off() {
    let guidance = Guidance::new(2.0).unwrap().with_interval(0.2, 0.6).unwrap();
    let v_c = t(&[1.0], [1, 1]);
    let v_u = t(&[3.0], [1, 1]);
    for (time, active) in [
        (0.0, false),
        (0.2, true),
        (0.4, true),
        (0.6, true),
        (0.61, false),
        (1.0, false),
    ] {
        assert_eq!(guidance.needs_unconditional(time), active, "t = {time}");
        let v = values(
            guidance
                .combine(time, v_c.clone(), Some(v_u.clone()))
                .unwrap(),
        );
        // Active: 2·1 - 3 = -1; inactive: v_c.
        assert_eq!(v, vec![if active { -1.0 } else { 1.0 }], "t = {time}");
    }
    // Outside the interval the unconditional branch may be absent.
    assert_eq!(
        values(guidance.combine(0.9, v_c.clone(), None).unwrap()),
        vec![1.0]
    );
    assert!(matches!(
        guidance.combine(0.3, v_c, None),
        Err(Error::MissingUnconditional { .. })
    ));
}

#[test]
fn weight_one_never_needs_the_unconditional_branch() {
    let guidance = Guidance::new(1.0).unwrap();
    for time in [0.0, 0.5, 1.0] {
        assert!(!guidance.needs_unconditional(time));
        assert!(!Guidance::disabled().needs_unconditional(time));
    }
    assert_eq!(Guidance::default(), Guidance::disabled());
    assert_eq!(Guidance::disabled().weight(), 1.0);
}

#[test]
fn one_batched_forward_for_both_branches() {
    // Stack [b = 2, s = 3, d = 2] states and [b] labels; the "model" scales by label + 1.
    let x = t(&(0..12).map(f64::from).collect::<Vec<_>>(), [2, 3, 2]);
    let labels = Tensor::<1, Int>::from_ints([0, 1], &Device::flex());
    let null_class = 2;
    let stacked_x = stack_branches(x.clone());
    let stacked_labels = stack_labels(labels, null_class);
    assert_eq!(stacked_x.dims(), [4, 3, 2]);
    let got: Vec<i64> = stacked_labels.clone().into_data().iter::<i64>().collect();
    assert_eq!(got, vec![0, 1, 2, 2]);

    let scale = stacked_labels
        .float()
        .cast(DType::F64)
        .add_scalar(1.0)
        .reshape([4, 1, 1]);
    let out = stacked_x.mul(scale);
    let guidance = Guidance::new(4.0).unwrap();
    let v = guidance.combine_stacked(0.5, out).unwrap();
    // Sample 0: 4·(1x) - 3·(3x) = -5x; sample 1: 4·(2x) - 3·(3x) = -x.
    let xs = values(x);
    let expected: Vec<f64> = xs
        .iter()
        .enumerate()
        .map(|(i, v)| if i < 6 { -5.0 * v } else { -v })
        .collect();
    assert_close(&values(v), &expected, 1e-12);

    // Per-position labels [b, s] stack the same way.
    let per_position = Tensor::<2, Int>::from_ints([[0, 1, 1]], &Device::flex());
    let got: Vec<i64> = stack_labels(per_position, 5)
        .into_data()
        .iter::<i64>()
        .collect();
    assert_eq!(got, vec![0, 1, 1, 5, 5, 5]);
}

#[test]
fn errors_name_the_problem() {
    assert!(matches!(
        split_branches(t(&[1.0, 2.0, 3.0], [3, 1])),
        Err(Error::OddBatch { batch: 3 })
    ));
    assert!(matches!(
        Guidance::new(2.0)
            .unwrap()
            .combine_stacked(0.5, t(&[1.0], [1, 1])),
        Err(Error::OddBatch { batch: 1 })
    ));
    for bad in [-0.5, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            Guidance::new(bad),
            Err(Error::InvalidValue {
                field: "guidance weight",
                ..
            })
        ));
    }
    for bad in [-0.1, 1.5, f64::NAN] {
        assert!(matches!(
            Guidance::disabled().with_rescale(bad),
            Err(Error::InvalidValue {
                field: "cfg rescale phi",
                ..
            })
        ));
    }
    assert!(matches!(
        GuidanceInterval::new(0.7, 0.2),
        Err(Error::InvalidValue { .. })
    ));
    assert!(matches!(
        GuidanceInterval::new(f64::NAN, 0.2),
        Err(Error::InvalidValue { .. })
    ));
    // Times outside the flow's [0, 1] would never (or always) apply: a mistake, refused.
    for (a, b) in [(-0.1, 0.5), (0.5, 1.2), (-2.0, 3.0)] {
        assert!(matches!(
            GuidanceInterval::new(a, b),
            Err(Error::InvalidValue { .. })
        ));
    }
    assert!(GuidanceInterval::new(0.0, 1.0).is_ok());
    let g = Guidance::new(2.0).unwrap();
    assert!(matches!(
        g.combine(0.5, t(&[1.0, 2.0], [1, 2]), Some(t(&[1.0, 2.0], [2, 1]))),
        Err(Error::Shape { .. })
    ));
    let interval = GuidanceInterval::new(0.1, 0.3).unwrap();
    assert_eq!((interval.start(), interval.end()), (0.1, 0.3));
    assert!(interval.contains(0.1) && interval.contains(0.3) && !interval.contains(0.31));
}
