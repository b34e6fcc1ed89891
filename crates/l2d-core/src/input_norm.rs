//! The time-dependent input normalisation of the diffusion path (the reference's
//! `FlowToLMEmbedder` with `flow_to_lm_timestep_rescaling > 0`).
//!
//! Before the flow state enters the flow-to-LM MLP it is divided by its expected per-component
//! standard deviation at time `t`,
//! `std(t) = sqrt((1 - t)² · s² + t² · var_x1)`,
//! where `s` is the noise scale (`noise_rescaling`, 64 in the released configurations) and
//! `var_x1` follows from the flow representation's rescaling mode
//! ([`Rescaling::x1_variance`]: 1 for `mult`), then multiplied by a constant `c`
//! (`flow_to_lm_timestep_rescaling`, 1.0 in the released configurations). The reference does
//! this in `f32` (`flow_to_lm_rescale_in_float32`); pass `f32` tensors to match it bit for bit.

use burn::tensor::Tensor;

use crate::{
    error::{Error, Result},
    flow_repr::Rescaling,
    time::Time,
};

/// The parameters of the diffusion-path input normalisation `x / std(t) · c`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputNormalization {
    noise_scale: f64,
    x1_variance: f64,
    rescale: f64,
}

impl InputNormalization {
    /// Builds the normalisation from the reference's configuration values.
    ///
    /// - `noise_scale`: `noise_rescaling` (`s`), finite and positive
    /// - `rescaling`, `dim`: `flow_representation_rescaling` and `flow_representation_dim`,
    ///   which give `var_x1` ([`Rescaling::x1_variance`]); the reference requires normalised
    ///   flow representations when this normalisation is on
    /// - `rescale`: `flow_to_lm_timestep_rescaling` (`c`), finite and positive (the reference
    ///   skips the normalisation altogether when it is 0 or absent)
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a bad `noise_scale`, `dim` or `rescale`.
    pub fn new(noise_scale: f64, rescaling: Rescaling, dim: usize, rescale: f64) -> Result<Self> {
        if !(noise_scale.is_finite() && noise_scale > 0.0) {
            return Err(Error::invalid(
                "noise_rescaling",
                noise_scale,
                "the noise scale must be finite and positive",
            ));
        }
        if dim == 0 {
            return Err(Error::invalid(
                "flow_representation_dim",
                dim,
                "the flow representation needs at least one dimension",
            ));
        }
        if !(rescale.is_finite() && rescale > 0.0) {
            return Err(Error::invalid(
                "flow_to_lm_timestep_rescaling",
                rescale,
                "the rescaling constant must be finite and positive",
            ));
        }
        Ok(Self {
            noise_scale,
            x1_variance: rescaling.x1_variance(dim),
            rescale,
        })
    }

    /// The noise scale `s`.
    pub fn noise_scale(&self) -> f64 {
        self.noise_scale
    }

    /// The per-component data variance `var_x1`.
    pub fn x1_variance(&self) -> f64 {
        self.x1_variance
    }

    /// The constant `c` applied after the division.
    pub fn rescale(&self) -> f64 {
        self.rescale
    }

    /// The expected per-component standard deviation `sqrt((1-t)² s² + t² var_x1)` at `t`.
    pub fn std_at(&self, t: f64) -> f64 {
        let one_minus_t = 1.0 - t;
        (one_minus_t * one_minus_t * self.noise_scale * self.noise_scale + t * t * self.x1_variance)
            .sqrt()
    }

    /// Normalises the flow state: `x / std(t) · c`, on `x`'s device and in its dtype.
    ///
    /// # Shapes
    /// - `x`: `[..., d]` (the reference: `[b, s, d]`)
    /// - `t`: scalar, or a tensor broadcastable to `x` (per-position times `[b, s, 1]`)
    /// - output: the shape of `x`
    ///
    /// # Panics
    /// If the shapes do not agree (burn's broadcasting rules).
    ///
    /// # Example
    /// ```
    /// use burn::tensor::{Device, Tensor};
    /// use l2d_core::{flow_repr::Rescaling, input_norm::InputNormalization};
    ///
    /// let norm = InputNormalization::new(64.0, Rescaling::Mult, 256, 1.0)?;
    /// let device = Device::flex();
    /// let x = Tensor::<1>::from_floats([128.0, -64.0], &device);
    /// // At t = 0 the state is pure noise of std 64.
    /// let y = norm.apply(x, 0.0);
    /// assert_eq!(y.into_data().to_vec::<f32>().unwrap(), vec![2.0, -1.0]);
    /// # Ok::<(), l2d_core::Error>(())
    /// ```
    pub fn apply<const D: usize>(&self, x: Tensor<D>, t: impl Into<Time<D>>) -> Tensor<D> {
        match t.into() {
            Time::Scalar(t) => x.div_scalar(self.std_at(t)).mul_scalar(self.rescale),
            Time::Tensor(t) => {
                let noise_part = t
                    .clone()
                    .neg()
                    .add_scalar(1.0)
                    .square()
                    .mul_scalar(self.noise_scale * self.noise_scale);
                let variance = noise_part.add(t.square().mul_scalar(self.x1_variance));
                x.div(variance.sqrt()).mul_scalar(self.rescale)
            }
        }
    }
}
