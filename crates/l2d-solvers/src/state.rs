//! The state an ODE/SDE solver integrates: host vectors or burn tensors on any device.

use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// What a solver needs from the integrated state.
///
/// Every method is one logical operation, so a device backend can implement it as one fused
/// kernel; [`State::scaled_rms_norm`] and [`State::is_finite`] are the only ones that return a
/// host value (one scalar each), and an adaptive step calls the norm exactly once. Time is
/// always host `f64`; only the state lives on the device.
///
/// Implemented for `Vec<f64>` (exact host arithmetic, used by the math tests) and for burn's
/// `Tensor<D>` of any rank, device and float dtype.
pub trait State: Clone {
    /// `self + Σ cᵢ·xᵢ`. Terms with a zero coefficient may be skipped.
    fn lin_comb(&self, terms: &[(f64, &Self)]) -> Self;

    /// `c₀·x₀ + Σ cᵢ·xᵢ` (a linear combination without the implicit `1·self`).
    fn weighted_sum(first: (f64, &Self), rest: &[(f64, &Self)]) -> Self {
        first.1.scale(first.0).lin_comb(rest)
    }

    /// `c·self`.
    fn scale(&self, c: f64) -> Self;

    /// The scaled RMS norm of an error estimate,
    /// `sqrt(mean((err / (atol + rtol·max(|a|, |b|)))²))`, over every element, as one host
    /// `f64` (torchdiffeq's `_rms_norm` of `_compute_error_ratio`). With `a == b` it is the
    /// norm `_select_initial_step` uses.
    fn scaled_rms_norm(err: &Self, a: &Self, b: &Self, atol: f64, rtol: f64) -> f64;

    /// A state of zeros with the shape (and device, dtype) of `self`.
    fn zeros_like(&self) -> Self;

    /// Whether every element is finite (no NaN, no ±∞).
    fn is_finite(&self) -> bool;

    /// A state shaped like `self` whose elements are independent standard normal samples
    /// drawn, in row-major order, from the host generator `rng` (so a seed gives the same
    /// numbers on every backend, up to the dtype's rounding).
    fn standard_normal_like<R: Rng + ?Sized>(&self, rng: &mut R) -> Self;
}

/// Host vectors: every operation is exact IEEE `f64` arithmetic, element by element.
///
/// # Panics
/// The element-wise operations panic if the vectors have different lengths (a vector field
/// returned a wrongly sized velocity).
impl State for Vec<f64> {
    /// Sums the terms first, then adds `self` (torchdiffeq's `y0 + sum(k·(β·dt))` order).
    fn lin_comb(&self, terms: &[(f64, &Self)]) -> Self {
        let terms: Vec<(f64, &Vec<f64>)> = terms
            .iter()
            .filter(|(c, _)| *c != 0.0)
            .map(|(c, x)| {
                assert_eq!(x.len(), self.len(), "state length mismatch in lin_comb");
                (*c, *x)
            })
            .collect();
        if terms.is_empty() {
            return self.clone();
        }
        (0..self.len())
            .map(|i| {
                let acc = terms.iter().fold(0.0, |acc, (c, x)| acc + c * x[i]);
                self[i] + acc
            })
            .collect()
    }

    fn weighted_sum(first: (f64, &Self), rest: &[(f64, &Self)]) -> Self {
        for (_, x) in rest {
            assert_eq!(
                x.len(),
                first.1.len(),
                "state length mismatch in weighted_sum"
            );
        }
        (0..first.1.len())
            .map(|i| {
                rest.iter()
                    .filter(|(c, _)| *c != 0.0)
                    .fold(first.0 * first.1[i], |acc, (c, x)| acc + c * x[i])
            })
            .collect()
    }

    fn scale(&self, c: f64) -> Self {
        self.iter().map(|x| c * x).collect()
    }

    fn scaled_rms_norm(err: &Self, a: &Self, b: &Self, atol: f64, rtol: f64) -> f64 {
        assert!(
            err.len() == a.len() && a.len() == b.len(),
            "state length mismatch in scaled_rms_norm"
        );
        if err.is_empty() {
            return 0.0;
        }
        let sum: f64 = err
            .iter()
            .zip(a.iter().zip(b.iter()))
            .map(|(e, (a, b))| {
                let r = e / (atol + rtol * a.abs().max(b.abs()));
                r * r
            })
            .sum();
        (sum / err.len() as f64).sqrt()
    }

    fn zeros_like(&self) -> Self {
        vec![0.0; self.len()]
    }

    fn is_finite(&self) -> bool {
        self.iter().all(|x| x.is_finite())
    }

    fn standard_normal_like<R: Rng + ?Sized>(&self, rng: &mut R) -> Self {
        (0..self.len())
            .map(|_| StandardNormal.sample(rng))
            .collect()
    }
}

/// burn tensors of any rank on any device and float dtype.
///
/// The combinations run as tensor ops on the tensor's device; the norm reduces on the device
/// and reads back one scalar (half-precision states are widened to `f32` for the norm so the
/// squares cannot overflow). Normal samples are drawn on the host in `f64` and uploaded in
/// the tensor's dtype.
impl<const D: usize> State for Tensor<D> {
    fn lin_comb(&self, terms: &[(f64, &Self)]) -> Self {
        let mut nonzero = terms.iter().filter(|(c, _)| *c != 0.0);
        match nonzero.next() {
            None => self.clone(),
            Some((c0, x0)) => {
                let sum = nonzero.fold((*x0).clone().mul_scalar(*c0), |acc, (c, x)| {
                    acc + (*x).clone().mul_scalar(*c)
                });
                self.clone() + sum
            }
        }
    }

    fn weighted_sum(first: (f64, &Self), rest: &[(f64, &Self)]) -> Self {
        let mut acc = first.1.clone().mul_scalar(first.0);
        for (c, x) in rest {
            if *c != 0.0 {
                acc = acc + (*x).clone().mul_scalar(*c);
            }
        }
        acc
    }

    fn scale(&self, c: f64) -> Self {
        self.clone().mul_scalar(c)
    }

    fn scaled_rms_norm(err: &Self, a: &Self, b: &Self, atol: f64, rtol: f64) -> f64 {
        let widen = |x: &Self| match x.dtype() {
            DType::F16 | DType::BF16 => x.clone().cast(FloatDType::F32),
            _ => x.clone(),
        };
        let tol = widen(a)
            .abs()
            .max_pair(widen(b).abs())
            .mul_scalar(rtol)
            .add_scalar(atol);
        widen(err)
            .div(tol)
            .square()
            .mean()
            .sqrt()
            .into_scalar::<f64>()
    }

    fn zeros_like(&self) -> Self {
        Tensor::zeros_like(self)
    }

    fn is_finite(&self) -> bool {
        self.clone().is_finite().all().into_scalar::<bool>()
    }

    fn standard_normal_like<R: Rng + ?Sized>(&self, rng: &mut R) -> Self {
        let shape = self.shape();
        let n = shape.num_elements();
        let values: Vec<f64> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
        let data = TensorData::new(values, shape);
        Tensor::from_data(data, (&self.device(), self.dtype()))
    }
}
