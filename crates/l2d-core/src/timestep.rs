//! The sinusoidal timestep embedding that conditions L2D's diffusion path, as the reference
//! computes it (its `FrequencyEmbedder.timestep_embedding`).
//!
//! For `dim = 2·half` and `i = 0 … half-1`, the frequencies are
//! `f_i = exp(-ln(max_period) · i / half)` and the embedding of `t` is
//! `[cos(t f_0), …, cos(t f_{half-1}), sin(t f_0), …, sin(t f_{half-1})]`: cosines first.
//! Unlike DiT, `t ∈ [0, 1]` is used raw, not multiplied by 1000, so the highest frequency is 1.
//! The reference requires an even size (its embedder asserts it), and so does this module.

use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};

/// The reference's maximum period, `10000`.
pub const DEFAULT_MAX_PERIOD: f64 = 10_000.0;

/// The `dim / 2` frequencies `exp(-ln(max_period) · i / (dim/2))`, computed in `f64`.
///
/// # Errors
/// [`Error::InvalidValue`] if `dim` is zero or odd, or `max_period` is not finite and positive.
pub fn timestep_frequencies(dim: usize, max_period: f64) -> Result<Vec<f64>> {
    if dim == 0 || !dim.is_multiple_of(2) {
        return Err(Error::invalid(
            "timestep embedding dim",
            dim,
            "the embedding size must be even and positive (half cosines, half sines)",
        ));
    }
    if !(max_period.is_finite() && max_period > 0.0) {
        return Err(Error::invalid(
            "max_period",
            max_period,
            "the maximum period must be finite and positive",
        ));
    }
    let half = dim / 2;
    let log_period = max_period.ln();
    Ok((0..half)
        .map(|i| (-log_period * i as f64 / half as f64).exp())
        .collect())
}

/// The sinusoidal embedding of each time in `t`, with the reference's maximum period 10000.
///
/// The output has `t`'s device and dtype (the reference computes it in `f32`).
///
/// # Shapes
/// - `t`: `[n]`, raw times (in `[0, 1]` for L2D)
/// - output: `[n, dim]`, cosines in columns `0..dim/2`, sines in `dim/2..dim`
///
/// # Errors
/// [`Error::InvalidValue`] if `dim` is zero or odd.
///
/// # Example
/// ```
/// use burn::tensor::{Device, Tensor};
/// use l2d_core::timestep::timestep_embedding;
///
/// let device = Device::flex();
/// let t = Tensor::<1>::from_floats([0.0, 0.5], &device);
/// let emb = timestep_embedding(t, 8)?;
/// assert_eq!(emb.dims(), [2, 8]);
/// // At t = 0 every cosine is 1 and every sine 0.
/// let row0 = emb.narrow(0, 0, 1).into_data().to_vec::<f32>().unwrap();
/// assert_eq!(row0, vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
/// # Ok::<(), l2d_core::Error>(())
/// ```
pub fn timestep_embedding(t: Tensor<1>, dim: usize) -> Result<Tensor<2>> {
    timestep_embedding_with_period(t, dim, DEFAULT_MAX_PERIOD)
}

/// [`timestep_embedding`] with a chosen maximum period.
///
/// # Shapes
/// - `t`: `[n]`; output: `[n, dim]`
///
/// # Errors
/// [`Error::InvalidValue`] if `dim` is zero or odd, or `max_period` is not finite and positive.
pub fn timestep_embedding_with_period(
    t: Tensor<1>,
    dim: usize,
    max_period: f64,
) -> Result<Tensor<2>> {
    let frequencies = timestep_frequencies(dim, max_period)?;
    let half = frequencies.len();
    let [n] = t.dims();
    let frequencies = Tensor::<2>::from_data(
        TensorData::new(frequencies, [1, half]),
        (&t.device(), t.dtype()),
    );
    let args = t.reshape([n, 1]).mul(frequencies);
    Ok(Tensor::cat(vec![args.clone().cos(), args.sin()], 1))
}
