//! Two elementwise steps of every DiT block as single ops with analytic backwards:
//!
//! - [`add_bias`]: `y = x + b` over the rows of a linear layer's output; `∂b = Σ_rows ∂y`;
//! - [`gated_residual`]: adaLN-Zero's `y = x + α ⊙ F` with a per-sample gate `α: [B, D]`
//!   (reference `x + gate.unsqueeze(1) * F`); `∂x = ∂y`, `∂F = α ⊙ ∂y`, `∂α = Σ_tokens ∂y ⊙ F`.
//!
//! Composed from candle's broadcasting ops, the gradients of `b` and `α` are reductions over a
//! leading dimension, which candle's CPU backend walks element by element (a tenth of a training
//! step in `perf`); here they are row sums over contiguous memory.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use candle_core::{WithDType, D};

/// The elements a contiguous layout covers.
pub(crate) fn span<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op} needs contiguous inputs"),
    }
}

/// `x + b` for `x: [.., n]` and `b: [n]`, differentiable in both.
pub fn add_bias(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    if b.dims() != [x.dim(D::Minus1)?] {
        bail!("bias {:?} does not match rows of {:?}", b.dims(), x.dims());
    }
    x.contiguous()?.apply_op2(&b.contiguous()?, AddBias)
}

/// `x + gate ⊙ f` for `x, f: [B, N, D]` and `gate: [B, D]`, differentiable in all three.
pub fn gated_residual(x: &Tensor, f: &Tensor, gate: &Tensor) -> Result<Tensor> {
    let (b, _, d) = x.dims3()?;
    if f.dims() != x.dims() || gate.dims() != [b, d] {
        bail!(
            "gated residual: x {:?}, branch {:?}, gate {:?}",
            x.dims(),
            f.dims(),
            gate.dims()
        );
    }
    x.contiguous()?
        .apply_op3(&f.contiguous()?, &gate.contiguous()?, GatedResidual)
}

/// Column sums of `rows × n` values (the gradient of a bias).
fn column_sums<T: WithDType>(v: &[T], n: usize) -> Vec<T> {
    let mut acc = vec![T::from_f64(0.0); n];
    for row in v.chunks_exact(n) {
        for (a, &x) in acc.iter_mut().zip(row) {
            *a += x;
        }
    }
    acc
}

/// `x[r] + b` for every row `r`.
fn add_rows<T: WithDType>(x: &[T], b: &[T]) -> Vec<T> {
    let mut y = x.to_vec();
    for row in y.chunks_exact_mut(b.len().max(1)) {
        for (v, &c) in row.iter_mut().zip(b) {
            *v += c;
        }
    }
    y
}

/// `x + gate[b] ⊙ f` over samples of `tokens · d` values.
fn gate_forward<T: WithDType>(x: &[T], f: &[T], gate: &[T], d: usize) -> Vec<T> {
    let per_sample = x.len() / (gate.len() / d).max(1);
    let mut y = Vec::with_capacity(x.len());
    for (s, (xs, fs)) in x
        .chunks_exact(per_sample)
        .zip(f.chunks_exact(per_sample))
        .enumerate()
    {
        let g = &gate[s * d..(s + 1) * d];
        for (xr, fr) in xs.chunks_exact(d).zip(fs.chunks_exact(d)) {
            y.extend(xr.iter().zip(fr).zip(g).map(|((&x, &f), &g)| x + g * f));
        }
    }
    y
}

/// `(∂f, ∂gate)` of the gated residual from `f`, `gate` and `∂y`.
fn gate_backward<T: WithDType>(f: &[T], gate: &[T], dy: &[T], d: usize) -> (Vec<T>, Vec<T>) {
    let per_sample = f.len() / (gate.len() / d).max(1);
    let mut df = Vec::with_capacity(f.len());
    let mut dgate = vec![T::from_f64(0.0); gate.len()];
    for (s, (fs, ds)) in f
        .chunks_exact(per_sample)
        .zip(dy.chunks_exact(per_sample))
        .enumerate()
    {
        let g = &gate[s * d..(s + 1) * d];
        let dg = &mut dgate[s * d..(s + 1) * d];
        for (fr, dr) in fs.chunks_exact(d).zip(ds.chunks_exact(d)) {
            df.extend(dr.iter().zip(g).map(|(&dy, &g)| dy * g));
            for ((a, &dy), &f) in dg.iter_mut().zip(dr).zip(fr) {
                *a += dy * f;
            }
        }
    }
    (df, dgate)
}

/// A `cpu_fwd` body for ops generic over the float type: binds each `(storage, layout)` to its
/// contiguous f32 (or f64) slice and wraps the `Vec` that `$body` returns in the same storage
/// type; inputs of mixed or other dtypes are an error.
macro_rules! map_float_storages {
    ($op:expr, [$(($s:expr, $l:expr) => $v:ident),+], $body:expr) => {{
        if let ($(candle_core::CpuStorage::F32($v)),+) = ($($s),+) {
            $(let $v = $crate::fused_ops::span($v, $l, $op)?;)+
            candle_core::CpuStorage::F32($body)
        } else if let ($(candle_core::CpuStorage::F64($v)),+) = ($($s),+) {
            $(let $v = $crate::fused_ops::span($v, $l, $op)?;)+
            candle_core::CpuStorage::F64($body)
        } else {
            candle_core::bail!("{} supports f32 or f64 inputs of one dtype", $op)
        }
    }};
}
pub(crate) use map_float_storages;

/// Calls `$body` with the f32 or f64 values of CPU tensors of one dtype (`$t => $v` binds the
/// elements of `$t`, flattened, to `$v`); other dtypes are an error.
macro_rules! with_float_slices {
    ($dtype:expr, [$($t:expr => $v:ident),+], $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                $(let $v = $t.contiguous()?.flatten_all()?.to_vec1::<f32>()?;)+
                $body
            }
            candle_core::DType::F64 => {
                $(let $v = $t.contiguous()?.flatten_all()?.to_vec1::<f64>()?;)+
                $body
            }
            other => candle_core::bail!("unsupported dtype {other:?}"),
        }
    };
}
pub(crate) use with_float_slices;

struct AddBias;

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "add-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = map_float_storages!("add_bias", [(s1, l1) => x, (s2, l2) => b], add_rows(x, b));
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let n = b.elem_count();
        let db = with_float_slices!(grad.dtype(), [grad => g], {
            Tensor::from_vec(column_sums(&g, n), b.shape(), b.device())?
        });
        Ok((Some(grad), Some(db)))
    }
}

struct GatedResidual;

impl CustomOp3 for GatedResidual {
    fn name(&self) -> &'static str {
        "gated-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        let out = map_float_storages!(
            "gated_residual",
            [(s1, l1) => x, (s2, l2) => f, (s3, l3) => g],
            gate_forward(x, f, g, d)
        );
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        f: &Tensor,
        gate: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let d = gate.dim(1)?;
        let (df, dgate) = with_float_slices!(grad.dtype(), [f => fv, gate => gv, grad => dv], {
            let (df, dg) = gate_backward(&fv, &gv, &dv, d);
            (
                Tensor::from_vec(df, f.shape(), f.device())?,
                Tensor::from_vec(dg, gate.shape(), gate.device())?,
            )
        });
        Ok((Some(grad), Some(df), Some(dgate)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_same_values_and_gradients, random};
    use candle_core::{DType, Var};

    /// Values and gradients of `Σ w ⊙ op(..)` against the same expression in candle's ops.
    #[test]
    fn fused_ops_match_candles_broadcasting_ops_and_gradients() -> Result<()> {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
            let (b, n, d) = (3, 5, 8);
            let x = random(&[b, n, d], 1, dtype)?;
            let f = random(&[b, n, d], 2, dtype)?;
            let gate = random(&[b, d], 3, dtype)?;
            let bias = random(&[d], 4, dtype)?;
            let w = random(&[b, n, d], 5, dtype)?;
            let w = w.as_tensor();
            assert_same_values_and_gradients(
                gated_residual(&x, &f, &gate)?,
                (x.as_tensor() + f.broadcast_mul(&gate.unsqueeze(1)?)?)?,
                &[&x, &f, &gate],
                w,
                tol,
                &format!("{dtype:?} gated residual"),
            )?;
            assert_same_values_and_gradients(
                add_bias(&x, &bias)?,
                x.broadcast_add(&bias)?,
                &[&x, &bias],
                w,
                tol,
                &format!("{dtype:?} bias add"),
            )?;
        }
        Ok(())
    }

    #[test]
    fn mismatched_shapes_are_errors() -> Result<()> {
        let x = random(&[2, 3, 4], 1, DType::F32)?;
        let t = |shape: &[usize], seed| random(shape, seed, DType::F32).map(Var::into_inner);
        assert!(add_bias(&x, &t(&[3], 2)?).is_err());
        assert!(gated_residual(&x, &x, &t(&[2, 3], 3)?).is_err());
        assert!(gated_residual(&x, &t(&[2, 3, 5], 4)?, &t(&[2, 4], 5)?).is_err());
        Ok(())
    }
}
