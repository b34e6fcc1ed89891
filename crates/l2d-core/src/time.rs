//! Flow time as either one scalar for the whole state or a tensor broadcast against it.
//!
//! L2D uses both: the ODE solver integrates all positions at one scalar `t`, while training
//! draws an independent `t` per sequence position (shape `[batch, seq, 1]` against a state of
//! `[batch, seq, dim]`).

use burn::tensor::Tensor;

/// The time argument of the functions of this crate: a scalar, or a tensor of the same rank
/// as the state whose dimensions are either equal to the state's or 1 (broadcast).
///
/// Build it with `.into()` from an `f64`, an `f32` or a `Tensor<D>`, so a call reads
/// `flow_state(x0, x1, 0.25)` or `flow_state(x0, x1, t)`.
// A `Tensor` handle is large next to an `f64`, but a `Time` is built per call and consumed at
// once, never stored, so boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Time<const D: usize> {
    /// One time for every element.
    Scalar(f64),
    /// A time per element, broadcast against the state (same rank, dimensions equal or 1).
    Tensor(Tensor<D>),
}

impl<const D: usize> From<f64> for Time<D> {
    fn from(t: f64) -> Self {
        Time::Scalar(t)
    }
}

impl<const D: usize> From<f32> for Time<D> {
    fn from(t: f32) -> Self {
        Time::Scalar(f64::from(t))
    }
}

impl<const D: usize> From<Tensor<D>> for Time<D> {
    fn from(t: Tensor<D>) -> Self {
        Time::Tensor(t)
    }
}

impl<const D: usize> Time<D> {
    /// The scalar, if this is one.
    pub fn as_scalar(&self) -> Option<f64> {
        match self {
            Time::Scalar(t) => Some(*t),
            Time::Tensor(_) => None,
        }
    }

    /// All zeros, with the same layout.
    pub fn zeros_like(&self) -> Self {
        match self {
            Time::Scalar(_) => Time::Scalar(0.0),
            Time::Tensor(t) => Time::Tensor(t.zeros_like()),
        }
    }
}
