//! Per-sample coefficients: one `f64` per batch element, shaped `[B, 1, 1, ...]` so that it
//! broadcasts against a `[B, C, H, W]` (or any rank) tensor. Every schedule quantity reaches a
//! tensor through here, so the maths stays in `f64` until the last multiply.

use candle_core::{bail, Result, Tensor};

/// `values[b]` as a `[B, 1, ..., 1]` tensor with the rank, dtype and device of `like`.
pub(crate) fn per_sample(values: &[f64], like: &Tensor) -> Result<Tensor> {
    let dims = like.dims();
    if dims.is_empty() || dims[0] != values.len() {
        bail!(
            "diffusion: {} per-sample values for a tensor of shape {:?} (batch must be dim 0)",
            values.len(),
            dims
        )
    }
    let mut shape = vec![1usize; dims.len()];
    shape[0] = values.len();
    Tensor::from_vec(values.to_vec(), shape, like.device())?.to_dtype(like.dtype())
}

/// The same value for every batch element of `like`.
pub(crate) fn uniform(value: f64, like: &Tensor) -> Result<Tensor> {
    let b = batch_size(like)?;
    per_sample(&vec![value; b], like)
}

/// Dimension 0 of `x`, with an error for a scalar.
pub(crate) fn batch_size(x: &Tensor) -> Result<usize> {
    match x.dims().first() {
        Some(&b) => Ok(b),
        None => bail!("diffusion: expected a batched tensor, got a scalar"),
    }
}

/// `a * x + b * y` with per-sample coefficient tensors (the shape of every linear combination
/// in the diffusion equations).
pub(crate) fn lincomb(a: &Tensor, x: &Tensor, b: &Tensor, y: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(a)?.add(&y.broadcast_mul(b)?)
}
