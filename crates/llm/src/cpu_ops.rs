//! The decoder's row-wise ops on ferrite-kernels (RMSNorm, softmax, fused attention for decode and
//! prompt chunks), reading candle's CPU storage in place; other devices and dtypes fall back to candle.

use anyhow::{Context, Result};
use candle_core::{DType, Storage, Tensor};
use ferrite_kernels::attention::{attend, AttentionShape, HeadsView};
use ferrite_kernels::{pool, rope, rows};

/// Calls `f` with the f32 elements of a CPU tensor from its first element on, and its strides;
/// `None` when the tensor lives elsewhere or is not f32.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32], &[usize]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => {
            let data = cpu.as_slice::<f32>().ok()?;
            Some(f(&data[layout.start_offset()..], layout.stride()))
        }
        _ => None,
    }
}

/// RMSNorm over the last dimension of `x` with gain `weight`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let x = x.contiguous()?;
    let y = with_f32(&x, |xs, _| {
        with_f32(weight, |g, _| {
            let mut y = vec![0f32; x.elem_count()];
            rows::rms_norm_rows(
                &xs[..y.len()],
                &g[..weight.elem_count()],
                eps,
                &mut y,
                pool::global(),
            );
            y
        })
    })
    .flatten();
    match y {
        Some(y) => Ok(Tensor::from_vec(y, x.dims(), x.device())?),
        None => Ok(candle_nn::ops::rms_norm(&x, weight, eps)?),
    }
}

/// Calls `f` with the elements of a CPU tensor `t` as one contiguous f32 slice: in place when
/// `t` is contiguous f32, else from a contiguous f32 copy.
pub(crate) fn with_f32_contiguous<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let copy;
    let t = if t.is_contiguous() && t.dtype() == DType::F32 {
        t
    } else {
        copy = t.to_dtype(DType::F32)?.contiguous()?;
        &copy
    };
    let n = t.elem_count();
    with_f32(t, |data, _| f(&data[..n])).context("reading a tensor that is not on the CPU")
}

/// `silu(gate) ⊙ up` for same-shaped CPU f32 tensors on ferrite-kernels (one pass, the
/// vectorised `exp`), else candle's ops.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.dims() == up.dims() && gate.dtype() == DType::F32 && up.device().is_cpu() {
        let mut g = gate.flatten_all()?.to_vec1::<f32>()?;
        let cols = gate.dim(candle_core::D::Minus1)?;
        with_f32_contiguous(up, |u| rows::swiglu_rows(&mut g, u, cols, pool::global()))?;
        return Ok(Tensor::from_vec(g, gate.dims(), gate.device())?);
    }
    Ok((candle_nn::ops::silu(gate)? * up)?)
}

/// Causal attention weights from raw scores `[.., t, total]` (see
/// [`rows::causal_softmax_rows`]): `softmax(scale · scores)` over the keys each query sees.
pub fn causal_softmax(scores: &Tensor, t: usize, scale: f32) -> Result<Tensor> {
    let cols = scores.dim(candle_core::D::Minus1)?;
    let mut v = scores
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    rows::causal_softmax_rows(&mut v, cols, t, scale, pool::global());
    Ok(Tensor::from_vec(v, scores.dims(), scores.device())?)
}

/// Fused causal attention `[t, n_head·d]` for `q: [n_head, t, d]` over the cache's
/// `k, v: [n_kv_head, total, d]` views, or `None` when the views are not CPU f32 with
/// contiguous rows (the caller then takes candle's GEMM path).
pub fn fused_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
    let (n_head, t, d) = q.dims3()?;
    let (n_kv_head, total, _) = k.dims3()?;
    let readable = |x: &Tensor| {
        x.device().is_cpu() && x.dtype() == DType::F32 && x.stride().get(2) == Some(&1)
    };
    if !(readable(k) && readable(v)) {
        return Ok(None);
    }
    let q = q.contiguous()?;
    let shape = AttentionShape {
        n_head,
        n_kv_head,
        t,
        total,
        d,
    };
    let mut out = vec![0f32; t * n_head * d];
    let done = with_f32(&q, |qs, _| {
        with_f32(k, |ks, k_stride| {
            with_f32(v, |vs, v_stride| {
                let (kv, vv) = (heads(ks, k_stride), heads(vs, v_stride));
                attend(
                    &qs[..n_head * t * d],
                    kv,
                    vv,
                    shape,
                    &mut out,
                    pool::global(),
                )
            })
        })
    });
    Ok(match done {
        Some(Some(Some(()))) => Some(Tensor::from_vec(out, (t, n_head * d), q.device())?),
        _ => None,
    })
}

/// The `[heads, rows, d]` view of strided storage (`stride[2]` is 1).
fn heads<'a>(data: &'a [f32], stride: &[usize]) -> HeadsView<'a> {
    HeadsView {
        data,
        head_stride: stride[0],
        row_stride: stride[1],
    }
}

/// RoPE of `x: [heads, t, d]` with angles `cos, sin: [t, d/2]` on ferrite-kernels.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor> {
    let (_, t, d) = x.dims3()?;
    let flat = |a: &Tensor| -> Result<Vec<f32>> {
        Ok(a.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let mut v = flat(x)?;
    rope::rotate(&mut v, &flat(cos)?, &flat(sin)?, t, d, interleaved);
    Ok(Tensor::from_vec(v, x.dims(), x.device())?)
}
