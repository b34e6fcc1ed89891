//! Estimating the data point `x1` from the model's logits and the flow-embedding table
//! (the reference's `get_weighted_flow_representation_for_logits`).
//!
//! Given logits over the vocabulary and the table `V` of flow representations (`[vocab, d]`,
//! one row per token), at temperature `T`:
//! - `T <= 0`: the row of the argmax token, whatever the estimator;
//! - [`X1Estimator::Average`]: `softmax(logits / T) · V` (CDCD's expected embedding);
//! - [`X1Estimator::Sample`]: the row of a token drawn from `softmax(logits / T)` (what L2D
//!   uses); the uniforms come from a [`HostRng`], the inverse-CDF search runs on the device;
//! - [`X1Estimator::Clamp`]: the reference's `clamp_predictions`: the row `V_w` with the largest
//!   inner product `⟨softmax(logits / T) · V, V_w⟩`.
//!
//! Optionally ([`X1Estimation::renormalize`], the reference's `normalize_x1_predictions`) the
//! average or the sample is L2-normalised and rescaled like the flow representations; as in the
//! reference this is skipped at `T <= 0` and for the clamp estimator.
//!
//! All functions accept logits with any number of leading dimensions `[..., vocab]` and return
//! `[..., d]`. The table is converted to the logits' dtype if they differ.

use std::{fmt, str::FromStr};

use burn::tensor::{Int, Tensor, activation::softmax};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    flow_repr::{Rescaling, normalize_flow_representation},
    rng::HostRng,
};

/// How the x1 estimate is formed from the token probabilities at a positive temperature.
///
/// Parse `"average"`, `"sample"`, `"clamp"` or `"argmax"` with [`str::parse`], or the
/// reference's pair
/// (`nstep_x1_estimation`, `nstep_clamp_predictions`) with [`X1Estimator::from_reference`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum X1Estimator {
    /// The probability-weighted average of the table rows.
    #[default]
    Average,
    /// The row of one token drawn from the probabilities (released L2D configurations).
    Sample,
    /// The row with the largest inner product with the average.
    Clamp,
    /// The row of the most likely token, at any temperature (what every estimator gives at
    /// `T <= 0`).
    Argmax,
}

impl X1Estimator {
    /// The estimator the reference runs for its `nstep_x1_estimation` name and its
    /// `nstep_clamp_predictions` flag (which only affects `average`).
    ///
    /// # Errors
    /// [`Error::UnknownName`] if `name` is neither `average` nor `sample`.
    pub fn from_reference(name: &str, clamp_predictions: bool) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "average" if clamp_predictions => Ok(X1Estimator::Clamp),
            "average" => Ok(X1Estimator::Average),
            "sample" => Ok(X1Estimator::Sample),
            _ => Err(Error::UnknownName {
                field: "nstep_x1_estimation",
                name: name.to_string(),
                expected: "average, sample",
            }),
        }
    }
}

impl FromStr for X1Estimator {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "average" => Ok(X1Estimator::Average),
            "sample" => Ok(X1Estimator::Sample),
            "clamp" => Ok(X1Estimator::Clamp),
            "argmax" => Ok(X1Estimator::Argmax),
            _ => Err(Error::UnknownName {
                field: "x1_estimator",
                name: s.to_string(),
                expected: "average, sample, clamp, argmax",
            }),
        }
    }
}

impl fmt::Display for X1Estimator {
    /// The name [`str::parse`] accepts back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            X1Estimator::Average => "average",
            X1Estimator::Sample => "sample",
            X1Estimator::Clamp => "clamp",
            X1Estimator::Argmax => "argmax",
        })
    }
}

impl TryFrom<String> for X1Estimator {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<X1Estimator> for String {
    fn from(e: X1Estimator) -> String {
        e.to_string()
    }
}

/// The full x1 estimation rule: an estimator plus the optional renormalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct X1Estimation {
    /// The estimator used at positive temperatures.
    pub estimator: X1Estimator,
    /// `Some(rescaling)` renormalises average and sampled estimates to the norm of the flow
    /// representations, `rescaling.factor(d)` (the reference's `normalize_x1_predictions`,
    /// with the model's rescaling mode). Not applied at `T <= 0` nor for the clamp estimator.
    pub renormalize: Option<Rescaling>,
}

impl X1Estimation {
    /// An estimation rule without renormalisation.
    pub fn new(estimator: X1Estimator) -> Self {
        Self {
            estimator,
            renormalize: None,
        }
    }

    /// The same rule with renormalisation to the norm given by `rescaling`.
    pub fn with_renormalize(self, rescaling: Rescaling) -> Self {
        Self {
            renormalize: Some(rescaling),
            ..self
        }
    }

    /// The x1 estimate for `logits` at `temperature`, following the reference's dispatch.
    ///
    /// `rng` supplies the uniforms of [`X1Estimator::Sample`] (one draw per row of logits);
    /// the other estimators leave it untouched.
    ///
    /// # Shapes
    /// - `logits`: `[..., vocab]`
    /// - `table`: `[vocab, d]`
    /// - output: `[..., d]`
    ///
    /// # Errors
    /// [`Error::Shape`] if the table does not match the logits' vocabulary;
    /// [`Error::InvalidValue`] for a NaN or infinite temperature.
    ///
    /// # Example
    /// ```
    /// use burn::tensor::{Device, Tensor};
    /// use l2d_core::{rng::HostRng, x1_estimate::{X1Estimation, X1Estimator}};
    ///
    /// let device = Device::flex();
    /// let table = Tensor::<2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &device);
    /// let logits = Tensor::<2>::from_floats([[0.0, 0.0]], &device);
    /// let mut rng = HostRng::new(0);
    /// let rule = X1Estimation::new(X1Estimator::Average);
    /// let x1 = rule.estimate(logits, &table, 1.0, &mut rng)?;
    /// assert_eq!(x1.into_data().to_vec::<f32>().unwrap(), vec![0.5, 0.5]);
    /// # Ok::<(), l2d_core::Error>(())
    /// ```
    pub fn estimate<const D: usize>(
        &self,
        logits: Tensor<D>,
        table: &Tensor<2>,
        temperature: f64,
        rng: &mut HostRng,
    ) -> Result<Tensor<D>> {
        check_temperature(temperature, false)?;
        if temperature <= 0.0 || self.estimator == X1Estimator::Argmax {
            return x1_argmax(logits, table);
        }
        let estimate = match self.estimator {
            X1Estimator::Average => x1_average(logits, table, temperature)?,
            X1Estimator::Sample => x1_sample(logits, table, temperature, rng)?,
            X1Estimator::Clamp | X1Estimator::Argmax => {
                return x1_clamp(logits, table, temperature);
            }
        };
        Ok(match self.renormalize {
            Some(rescaling) => normalize_flow_representation(estimate, rescaling),
            None => estimate,
        })
    }
}

/// The table row of the highest logit (ties: the backend's argmax choice).
///
/// # Shapes
/// - `logits`: `[..., vocab]`; `table`: `[vocab, d]`; output: `[..., d]`
///
/// # Errors
/// [`Error::Shape`] if the table does not match the logits' vocabulary.
pub fn x1_argmax<const D: usize>(logits: Tensor<D>, table: &Tensor<2>) -> Result<Tensor<D>> {
    let (logits, table, out_dims) = prepare(logits, table)?;
    let [n, _] = logits.dims();
    let indices = logits.argmax(1).reshape([n]);
    Ok(table.select(0, indices).reshape(out_dims))
}

/// The probability-weighted average `softmax(logits / T) · table`.
///
/// # Shapes
/// - `logits`: `[..., vocab]`; `table`: `[vocab, d]`; output: `[..., d]`
///
/// # Errors
/// [`Error::Shape`] if the table does not match the logits' vocabulary;
/// [`Error::InvalidValue`] unless `temperature` is finite and positive.
pub fn x1_average<const D: usize>(
    logits: Tensor<D>,
    table: &Tensor<2>,
    temperature: f64,
) -> Result<Tensor<D>> {
    check_temperature(temperature, true)?;
    let (logits, table, out_dims) = prepare(logits, table)?;
    let probabilities = softmax(logits.div_scalar(temperature), 1);
    Ok(probabilities.matmul(table).reshape(out_dims))
}

/// The reference's `clamp_predictions`: the row `V_w` maximising `⟨softmax(logits / T) · V, V_w⟩`.
///
/// # Shapes
/// - `logits`: `[..., vocab]`; `table`: `[vocab, d]`; output: `[..., d]`
///
/// # Errors
/// [`Error::Shape`] if the table does not match the logits' vocabulary;
/// [`Error::InvalidValue`] unless `temperature` is finite and positive.
pub fn x1_clamp<const D: usize>(
    logits: Tensor<D>,
    table: &Tensor<2>,
    temperature: f64,
) -> Result<Tensor<D>> {
    check_temperature(temperature, true)?;
    let (logits, table, out_dims) = prepare(logits, table)?;
    let [n, _] = logits.dims();
    let average = softmax(logits.div_scalar(temperature), 1).matmul(table.clone());
    let scores = average.matmul(table.clone().transpose());
    let indices = scores.argmax(1).reshape([n]);
    Ok(table.select(0, indices).reshape(out_dims))
}

/// The row of a token drawn from `softmax(logits / T)`, one independent draw per row of
/// logits, with uniforms from `rng` (uploaded once per call; the search runs on the device).
///
/// # Shapes
/// - `logits`: `[..., vocab]`; `table`: `[vocab, d]`; output: `[..., d]`
///
/// # Errors
/// [`Error::Shape`] if the table does not match the logits' vocabulary;
/// [`Error::InvalidValue`] unless `temperature` is finite and positive.
pub fn x1_sample<const D: usize>(
    logits: Tensor<D>,
    table: &Tensor<2>,
    temperature: f64,
    rng: &mut HostRng,
) -> Result<Tensor<D>> {
    check_temperature(temperature, true)?;
    let rows = logits.dims()[..D - 1].iter().product();
    let uniforms = rng.uniform([rows], (&logits.device(), logits.dtype()));
    x1_sample_with_uniforms(logits, table, temperature, uniforms)
}

/// [`x1_sample`] with the uniforms given: row `i` takes the token found by the inverse CDF of
/// its probabilities at `uniforms[i]`.
///
/// # Shapes
/// - `logits`: `[..., vocab]`; `table`: `[vocab, d]`; `uniforms`: `[n]` with `n` the product
///   of the leading dimensions of `logits`, values in `(0, 1)`; output: `[..., d]`
///
/// # Errors
/// [`Error::Shape`] if the table or the uniforms do not match the logits;
/// [`Error::InvalidValue`] unless `temperature` is finite and positive.
pub fn x1_sample_with_uniforms<const D: usize>(
    logits: Tensor<D>,
    table: &Tensor<2>,
    temperature: f64,
    uniforms: Tensor<1>,
) -> Result<Tensor<D>> {
    check_temperature(temperature, true)?;
    let (logits, table, out_dims) = prepare(logits, table)?;
    let [n, _] = logits.dims();
    if uniforms.dims() != [n] {
        return Err(Error::Shape {
            tensor: "uniforms",
            expected: format!("[{n}] (one per row of logits)"),
            got: uniforms.dims().to_vec(),
        });
    }
    let probabilities = softmax(logits.div_scalar(temperature), 1);
    let indices = inverse_cdf(probabilities, uniforms);
    Ok(table.select(0, indices).reshape(out_dims))
}

/// Inverse-CDF sampling on the device: for each row of (possibly unnormalised) non-negative
/// `weights`, the first index whose cumulative weight reaches `u · total`.
///
/// Zero-weight categories are never chosen for `u ∈ (0, 1]`, and scaling by the row total
/// (rather than assuming it is 1) keeps rounding in the cumulative sum from biasing the last
/// category.
///
/// # Shapes
/// - `weights`: `[n, k]`; `uniforms`: `[n]`; output: `[n]` indices in `0..k`
///
/// # Panics
/// If the shapes disagree (burn's shape checks) or `k = 0`.
pub fn inverse_cdf(weights: Tensor<2>, uniforms: Tensor<1>) -> Tensor<1, Int> {
    let [n, k] = weights.dims();
    let cumulative = weights.cumsum(1);
    let total = cumulative.clone().narrow(1, k - 1, 1);
    let threshold = uniforms.reshape([n, 1]).mul(total);
    cumulative
        .lower(threshold)
        .int()
        .sum_dim(1)
        .clamp(0, k as i64 - 1)
        .reshape([n])
}

/// Flattens logits to `[n, vocab]`, checks and converts the table, and returns the output dims.
fn prepare<const D: usize>(
    logits: Tensor<D>,
    table: &Tensor<2>,
) -> Result<(Tensor<2>, Tensor<2>, [usize; D])> {
    let dims = logits.dims();
    let vocab = dims[D - 1];
    let [table_vocab, d] = table.dims();
    if vocab == 0 || table_vocab != vocab {
        return Err(Error::Shape {
            tensor: "flow embedding table",
            expected: format!("[{vocab}, d] (one row per logit, vocab > 0)"),
            got: vec![table_vocab, d],
        });
    }
    let n = dims[..D - 1].iter().product();
    let mut table = table.clone();
    if table.dtype() != logits.dtype() {
        table = table.cast(logits.dtype());
    }
    let mut out_dims = dims;
    out_dims[D - 1] = d;
    Ok((logits.reshape([n, vocab]), table, out_dims))
}

fn check_temperature(temperature: f64, positive: bool) -> Result<()> {
    if !temperature.is_finite() {
        return Err(Error::invalid(
            "temperature",
            temperature,
            "the temperature must be finite",
        ));
    }
    if positive && temperature <= 0.0 {
        return Err(Error::invalid(
            "temperature",
            temperature,
            "this estimator needs a positive temperature (T <= 0 means argmax)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn names_round_trip_and_argmax_ignores_the_temperature() {
        for e in [
            X1Estimator::Average,
            X1Estimator::Sample,
            X1Estimator::Clamp,
            X1Estimator::Argmax,
        ] {
            assert_eq!(e.to_string().parse::<X1Estimator>().unwrap(), e);
        }
        assert!("mode".parse::<X1Estimator>().is_err());
        let device = Device::flex();
        let table = Tensor::<2>::from_floats([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], &device);
        let logits = Tensor::<2>::from_floats([[0.1, 0.3, 0.2]], &device);
        let mut rng = HostRng::new(0);
        let x1 = X1Estimation::new(X1Estimator::Argmax)
            .estimate(logits.clone(), &table, 2.0, &mut rng)
            .unwrap();
        let want = x1_argmax(logits, &table).unwrap();
        assert_eq!(x1.into_data(), want.into_data());
        assert_eq!(
            rng.next_u64(),
            HostRng::new(0).next_u64(),
            "no draw consumed"
        );
    }
}
