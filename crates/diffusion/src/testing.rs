//! Test helpers shared by the unit tests.

use candle_core::{Device, Tensor};

/// `max |a - b|` over all elements.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    a.sub(b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_dtype(candle_core::DType::F64))
        .and_then(|d| d.to_scalar::<f64>())
        .expect("max_abs_diff")
}

/// A `[2, 1, 2, 2]` f64 tensor from eight values.
pub(crate) fn small(values: [f64; 8]) -> Tensor {
    Tensor::from_vec(values.to_vec(), (2, 1, 2, 2), &Device::Cpu).unwrap()
}
