//! Helpers shared by the integration tests.
#![allow(dead_code)]

use burn::tensor::{DType, Device, Tensor, TensorData};

/// The CPU test device.
pub fn device() -> Device {
    Device::flex()
}

/// A tensor from row-major values, in `f32` or `f64`.
pub fn tensor<const D: usize>(values: &[f64], shape: [usize; D], dtype: DType) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), (&device(), dtype))
}

/// An `f32` tensor.
pub fn t32<const D: usize>(values: &[f64], shape: [usize; D]) -> Tensor<D> {
    tensor(values, shape, DType::F32)
}

/// An `f64` tensor.
pub fn t64<const D: usize>(values: &[f64], shape: [usize; D]) -> Tensor<D> {
    tensor(values, shape, DType::F64)
}

/// The values of a tensor, converted to `f64`.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

/// Asserts `|a - b| <= atol + rtol |b|` element-wise, naming the first failure.
#[track_caller]
pub fn assert_close(actual: &[f64], expected: &[f64], rtol: f64, atol: f64) {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= atol + rtol * e.abs(),
            "element {i}: got {a}, expected {e} (rtol {rtol}, atol {atol})"
        );
    }
}
