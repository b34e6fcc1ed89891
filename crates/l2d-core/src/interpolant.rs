//! The rectified-flow interpolant between noise `x0` (at `t = 0`) and data `x1` (at `t = 1`).
//!
//! L2D draws `x0 ~ N(0, s² I)` (noise scale `s = 64` in the released configurations) and takes
//! `x1` as the flow representation of the next token, so `x_t = (1 - t) x0 + t x1` and the
//! velocity of this straight path is `x1 - x0` at every `t`.

use burn::tensor::Tensor;

use crate::time::Time;

/// The flow state `x_t = (1 - t) · x0 + t · x1`.
///
/// `t` is a scalar (`0.3.into()`, or just `0.3`) or a tensor of the same rank that broadcasts
/// against the state, e.g. per-position timesteps of shape `[b, s, 1]` for states of shape
/// `[b, s, d]`.
///
/// # Shapes
/// - `x0`, `x1`: `[..., d]` (equal shapes)
/// - `t`: scalar, or a tensor broadcastable to `x0`'s shape
/// - output: the shape of `x0`
///
/// # Panics
/// If the shapes do not agree (burn's broadcasting rules).
///
/// # Example
/// ```
/// use burn::tensor::{Device, Tensor};
/// use l2d_core::interpolant::flow_state;
///
/// let device = Device::flex();
/// let x0 = Tensor::<2>::from_floats([[0.0, 2.0]], &device);
/// let x1 = Tensor::<2>::from_floats([[4.0, 6.0]], &device);
/// let xt = flow_state(x0, x1, 0.25);
/// assert_eq!(xt.into_data().to_vec::<f32>().unwrap(), vec![1.0, 3.0]);
/// ```
pub fn flow_state<const D: usize>(
    x0: Tensor<D>,
    x1: Tensor<D>,
    t: impl Into<Time<D>>,
) -> Tensor<D> {
    match t.into() {
        Time::Scalar(t) => x0.mul_scalar(1.0 - t).add(x1.mul_scalar(t)),
        Time::Tensor(t) => {
            let one_minus_t = t.clone().neg().add_scalar(1.0);
            x0.mul(one_minus_t).add(x1.mul(t))
        }
    }
}

/// The target velocity of the straight path, `x1 - x0`, independent of `t`.
///
/// # Shapes
/// - `x0`, `x1`: `[..., d]` (equal shapes); output: the same shape
pub fn target_velocity<const D: usize>(x0: Tensor<D>, x1: Tensor<D>) -> Tensor<D> {
    x1.sub(x0)
}
