//! The sampler's distributions against exact probabilities on tiny vocabularies (seeded, so
//! deterministic): 20 000 rows of the same logits are sampled in one call and the counts are
//! compared with a chi-square test at the 0.1 % level; tokens the warpers remove must never
//! appear. Also: greedy = argmax, seeds reproduce, bad parameters are typed errors.

use burn::tensor::{Device, Tensor, TensorData};
use l2d_models::sampling::{Sampler, SamplingConfig, SamplingError};

const ROWS: usize = 20_000;

fn logits_rows(logits: &[f32], rows: usize) -> Tensor<2> {
    let data: Vec<f32> = (0..rows).flat_map(|_| logits.iter().copied()).collect();
    Tensor::from_data(TensorData::new(data, [rows, logits.len()]), &Device::flex())
}

fn counts(config: SamplingConfig, logits: &[f32]) -> Vec<usize> {
    let ids = Sampler::new(config)
        .unwrap()
        .sample(logits_rows(logits, ROWS))
        .unwrap();
    assert_eq!(ids.len(), ROWS);
    let mut c = vec![0; logits.len()];
    for id in ids {
        c[id as usize] += 1;
    }
    c
}

/// Pearson's chi-square of `counts` against `probs` over the tokens with p > 0.
fn chi_square(counts: &[usize], probs: &[f64]) -> (f64, usize) {
    let n: usize = counts.iter().sum();
    let mut chi = 0.0;
    let mut cells = 0;
    for (&c, &p) in counts.iter().zip(probs) {
        if p > 0.0 {
            let e = p * n as f64;
            chi += (c as f64 - e).powi(2) / e;
            cells += 1;
        }
    }
    (chi, cells - 1)
}

/// The 99.9 % quantile of chi-square with `df` degrees of freedom (df ≤ 7).
fn chi_square_999(df: usize) -> f64 {
    // df = 0: a single possible token, checked by the zero-probability assertions.
    [
        f64::INFINITY,
        10.83,
        13.82,
        16.27,
        18.47,
        20.52,
        22.46,
        24.32,
    ][df]
}

fn assert_distribution(config: SamplingConfig, logits: &[f32], probs: &[f64], label: &str) {
    let sum: f64 = probs.iter().sum();
    assert!(
        (sum - 1.0).abs() < 1e-12,
        "{label}: expected probabilities sum to {sum}"
    );
    let c = counts(config, logits);
    for (i, (&n, &p)) in c.iter().zip(probs).enumerate() {
        if p == 0.0 {
            assert_eq!(n, 0, "{label}: token {i} must never be drawn");
        }
    }
    let (chi, df) = chi_square(&c, probs);
    assert!(
        chi < chi_square_999(df),
        "{label}: chi² = {chi:.2} (df {df}), counts {c:?}, p {probs:?}"
    );
}

/// Hugging Face's warpers in f64: temperature, top-k (ties kept), top-p (ascending cumsum
/// ≤ 1 − p removed, the best token kept), min-p; the final normalised distribution.
fn reference(
    logits: &[f32],
    t: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
    min_p: Option<f64>,
) -> Vec<f64> {
    let mut s: Vec<f64> = logits.iter().map(|&l| f64::from(l) / t).collect();
    let softmax = |s: &[f64]| {
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|&x| (x - m).exp()).collect();
        let z: f64 = e.iter().sum();
        e.into_iter().map(|x| x / z).collect::<Vec<_>>()
    };
    if let Some(k) = top_k {
        let mut sorted = s.clone();
        sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
        let kth = sorted[k.min(s.len()) - 1];
        s.iter_mut()
            .filter(|x| **x < kth)
            .for_each(|x| *x = f64::NEG_INFINITY);
    }
    if let Some(p) = top_p {
        let probs = softmax(&s);
        let mut order: Vec<usize> = (0..s.len()).collect();
        order.sort_by(|&a, &b| probs[a].partial_cmp(&probs[b]).unwrap()); // ascending
        let mut cum = 0.0;
        for (rank, &i) in order.iter().enumerate() {
            cum += probs[i];
            if cum <= 1.0 - p && rank + 1 < order.len() {
                s[i] = f64::NEG_INFINITY;
            }
        }
    }
    if let Some(m) = min_p {
        let probs = softmax(&s);
        let top = probs.iter().cloned().fold(0.0, f64::max);
        for (x, &p) in s.iter_mut().zip(&probs) {
            if p < m * top {
                *x = f64::NEG_INFINITY;
            }
        }
    }
    softmax(&s)
}

fn cfg(
    t: f32,
    top_k: Option<usize>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    seed: u64,
) -> SamplingConfig {
    SamplingConfig {
        temperature: t,
        top_k,
        top_p,
        min_p,
        seed,
    }
}

/// Logits whose softmax is exactly `[0.5, 0.3, 0.15, 0.05]` (shuffled so order matters).
fn quarter_logits() -> (Vec<f32>, Vec<f64>) {
    let p = [0.15, 0.5, 0.05, 0.3];
    (p.iter().map(|&x: &f64| x.ln() as f32).collect(), p.to_vec())
}

#[test]
fn temperature_sampling_follows_the_softmax() {
    let logits = [2.0f32, 1.0, 0.5, 0.0, -1.0, 0.25];
    for (t, seed) in [(1.0, 1), (0.7, 2), (2.0, 3)] {
        let probs = reference(&logits, t, None, None, None);
        assert_distribution(
            cfg(t as f32, None, None, None, seed),
            &logits,
            &probs,
            &format!("T={t}"),
        );
    }
    // Hand check of one case: T = 1, logits ln p → p.
    let (logits, p) = quarter_logits();
    assert_distribution(cfg(1.0, None, None, None, 4), &logits, &p, "ln p");
}

#[test]
fn the_test_detects_a_wrong_distribution() {
    // Power check: samples at T = 1 judged against the T = 0.7 probabilities fail.
    let logits = [2.0f32, 1.0, 0.5, 0.0, -1.0, 0.25];
    let c = counts(cfg(1.0, None, None, None, 1), &logits);
    let (chi, df) = chi_square(&c, &reference(&logits, 0.7, None, None, None));
    assert!(chi > 10.0 * chi_square_999(df), "chi² = {chi}");
}

#[test]
fn top_k_keeps_the_k_best_and_their_ties() {
    let (logits, _) = quarter_logits();
    // k = 2: {0.5, 0.3} renormalised.
    let mut want = vec![0.0, 0.625, 0.0, 0.375];
    assert_distribution(cfg(1.0, Some(2), None, None, 5), &logits, &want, "top-k 2");
    want = reference(&logits, 1.0, Some(3), None, None);
    assert_distribution(cfg(1.0, Some(3), None, None, 6), &logits, &want, "top-k 3");
    // Ties with the k-th logit stay (transformers compares with the k-th value).
    let tied = [1.0f32, 0.0, 1.0, 1.0, -1.0];
    let want = [1.0 / 3.0, 0.0, 1.0 / 3.0, 1.0 / 3.0, 0.0];
    assert_distribution(cfg(1.0, Some(2), None, None, 7), &tied, &want, "top-k ties");
    // k ≥ vocab changes nothing.
    let (logits, p) = quarter_logits();
    assert_distribution(cfg(1.0, Some(10), None, None, 8), &logits, &p, "top-k 10");
}

#[test]
fn top_p_keeps_the_smallest_set_reaching_p() {
    let (logits, _) = quarter_logits();
    // Sorted 0.5, 0.3, 0.15, 0.05: p = 0.75 keeps {0.5, 0.3}; p = 0.9 keeps three; a tiny p
    // keeps the best token only.
    let want = [0.0, 0.625, 0.0, 0.375];
    assert_distribution(
        cfg(1.0, None, Some(0.75), None, 9),
        &logits,
        &want,
        "top-p 0.75",
    );
    let want = [0.15 / 0.95, 0.5 / 0.95, 0.0, 0.3 / 0.95];
    assert_distribution(
        cfg(1.0, None, Some(0.9), None, 10),
        &logits,
        &want,
        "top-p 0.9",
    );
    let want = [0.0, 1.0, 0.0, 0.0];
    assert_distribution(
        cfg(1.0, None, Some(0.01), None, 11),
        &logits,
        &want,
        "top-p 0.01",
    );
}

#[test]
fn min_p_drops_tokens_below_a_fraction_of_the_best() {
    let (logits, _) = quarter_logits();
    // min_p = 0.25 → threshold 0.125: drops 0.05.
    let want = [0.15 / 0.95, 0.5 / 0.95, 0.0, 0.3 / 0.95];
    assert_distribution(
        cfg(1.0, None, None, Some(0.25), 12),
        &logits,
        &want,
        "min-p 0.25",
    );
    let want = [0.0, 0.625, 0.0, 0.375];
    assert_distribution(
        cfg(1.0, None, None, Some(0.5), 13),
        &logits,
        &want,
        "min-p 0.5",
    );
}

#[test]
fn warpers_apply_in_hugging_face_order() {
    let logits = [3.0f32, 2.2, 2.0, 1.0, 0.4, -0.5, 0.9];
    // Temperature before top-p: T = 2 flattens, so top-p keeps more tokens than at T = 1.
    let flat = reference(&logits, 2.0, None, Some(0.8), None);
    let sharp = reference(&logits, 1.0, None, Some(0.8), None);
    let kept = |p: &[f64]| p.iter().filter(|&&x| x > 0.0).count();
    assert!(kept(&flat) > kept(&sharp));
    assert_distribution(
        cfg(2.0, None, Some(0.8), None, 14),
        &logits,
        &flat,
        "T then top-p",
    );
    // Top-k before top-p: top-p works on the renormalised top-k set.
    let want = reference(&logits, 1.0, Some(4), Some(0.7), None);
    assert!(kept(&want) < 4);
    assert_distribution(
        cfg(1.0, Some(4), Some(0.7), None, 15),
        &logits,
        &want,
        "top-k then top-p",
    );
    // All four together.
    let want = reference(&logits, 0.8, Some(5), Some(0.95), Some(0.1));
    assert_distribution(
        cfg(0.8, Some(5), Some(0.95), Some(0.1), 16),
        &logits,
        &want,
        "all",
    );
}

#[test]
fn greedy_is_argmax() {
    let (rows, vocab) = (16, 1000);
    // Deterministic pseudo-random logits with distinct values per row.
    let data: Vec<f32> = (0..rows * vocab)
        .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 20.0 + (i % 7) as f32 * 1e-3)
        .collect();
    let argmax: Vec<u32> = data
        .chunks(vocab)
        .map(|r| {
            r.iter()
                .enumerate()
                .max_by(|a, b| a.1.partial_cmp(b.1).unwrap())
                .unwrap()
                .0 as u32
        })
        .collect();
    let logits = Tensor::<2>::from_data(TensorData::new(data, [rows, vocab]), &Device::flex());
    let mut greedy = Sampler::new(SamplingConfig::greedy()).unwrap();
    assert_eq!(greedy.sample(logits.clone()).unwrap(), argmax);
    // top-k = 1 is greedy too, whatever the seed.
    let mut top1 = Sampler::new(cfg(1.3, Some(1), None, None, 99)).unwrap();
    assert_eq!(top1.sample(logits).unwrap(), argmax);
}

#[test]
fn seeds_reproduce_and_streams_continue() {
    let logits = [0.3f32, 0.1, 0.0, -0.2, 0.5, 0.4, 0.2, 0.0];
    let draw = |seed| {
        let mut s = Sampler::new(cfg(1.0, None, Some(0.9), None, seed)).unwrap();
        let a = s.sample(logits_rows(&logits, 64)).unwrap();
        let b = s.sample(logits_rows(&logits, 64)).unwrap();
        (a, b)
    };
    let (a1, b1) = draw(42);
    let (a2, b2) = draw(42);
    assert_eq!((&a1, &b1), (&a2, &b2), "same seed, same tokens");
    assert_ne!(a1, b1, "the RNG stream continues between calls");
    assert_ne!(draw(43).0, a1, "another seed, other tokens");
}

#[test]
fn bad_parameters_are_typed_errors() {
    for (config, name) in [
        (cfg(-1.0, None, None, None, 0), "temperature"),
        (cfg(f32::NAN, None, None, None, 0), "temperature"),
        (cfg(1.0, Some(0), None, None, 0), "top_k"),
        (cfg(1.0, None, Some(0.0), None, 0), "top_p"),
        (cfg(1.0, None, Some(1.5), None, 0), "top_p"),
        (cfg(1.0, None, None, Some(-0.1), 0), "min_p"),
    ] {
        match Sampler::new(config) {
            Err(SamplingError::InvalidParameter { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{name}: expected InvalidParameter, got {other:?}"),
        }
    }
    let empty = Tensor::<2>::from_data(TensorData::new(Vec::<f32>::new(), [0, 4]), &Device::flex());
    let err = Sampler::new(SamplingConfig::default())
        .unwrap()
        .sample(empty)
        .unwrap_err();
    assert!(
        matches!(err, SamplingError::EmptyLogits { shape: [0, 4] }),
        "{err}"
    );
}
