//! adaLN's modulated LayerNorm, `y = LN(x)·(1 + γ) + β` (DiT §3.2; the reference's
//! `modulate(norm(x), shift, scale)` with an elementwise-affine-free LayerNorm, eps 1e-6), as one
//! op with its analytic backward. Per row `x` of `D` features with `x̂ = (x − μ)·r`,
//! `r = 1/√(σ² + ε)`, and `g = ∂L/∂y · (1 + γ)`:
//!
//! - `∂L/∂x = r · (g − mean(g) − x̂ · mean(g ⊙ x̂))`,
//! - `∂L/∂γ = Σ_tokens ∂L/∂y ⊙ x̂`, `∂L/∂β = Σ_tokens ∂L/∂y`.
//!
//! Composed from candle ops the norm and the modulation are ~10 tensors forward and ~25 backward
//! per use, twice per block; here each is one pass over the rows, statistics in f64.

use crate::config::LAYER_NORM_EPS;
use crate::fused_ops::{map_float_storages, with_float_slices};

const OP: &str = "modulated LayerNorm";
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType};

/// `LN(x)(1 + scale) + shift` for tokens `x: [B, N, D]` and per-sample `shift, scale: [B, D]`;
/// differentiable in all three.
pub fn modulated_layer_norm(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let (b, _, d) = x.dims3()?;
    if shift.dims() != [b, d] || scale.dims() != [b, d] {
        bail!(
            "modulated LayerNorm: shift {:?} and scale {:?} must be [{b}, {d}]",
            shift.dims(),
            scale.dims()
        );
    }
    x.contiguous()?.apply_op3(
        &shift.contiguous()?,
        &scale.contiguous()?,
        ModulatedLayerNorm,
    )
}

/// Mean and `1/√(σ² + ε)` of one row, in f64.
fn row_stats<T: WithDType>(row: &[T]) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = row.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + LAYER_NORM_EPS).sqrt())
}

/// Forward over `x: [b, tokens, d]` rows.
fn forward<T: WithDType>(x: &[T], shift: &[T], scale: &[T], d: usize) -> Vec<T> {
    let tokens = x.len() / d / (shift.len() / d).max(1);
    let mut y = Vec::with_capacity(x.len());
    for (r, row) in x.chunks_exact(d).enumerate() {
        let b = r / tokens.max(1);
        let (mean, rstd) = row_stats(row);
        let (sh, sc) = (&shift[b * d..(b + 1) * d], &scale[b * d..(b + 1) * d]);
        y.extend(row.iter().zip(sh).zip(sc).map(|((v, s), c)| {
            T::from_f64((v.to_f64() - mean) * rstd * (1.0 + c.to_f64()) + s.to_f64())
        }));
    }
    y
}

/// Gradients `(∂x, ∂shift, ∂scale)` from the inputs and `∂L/∂y`.
fn backward<T: WithDType>(x: &[T], scale: &[T], dy: &[T], d: usize) -> (Vec<T>, Vec<T>, Vec<T>) {
    let batch = scale.len() / d;
    let tokens = x.len() / d / batch.max(1);
    let mut dx = Vec::with_capacity(x.len());
    let mut dshift = vec![0f64; batch * d];
    let mut dscale = vec![0f64; batch * d];
    let mut g = vec![0f64; d];
    let mut xhat = vec![0f64; d];
    for (r, (row, dyr)) in x.chunks_exact(d).zip(dy.chunks_exact(d)).enumerate() {
        let b = r / tokens.max(1);
        let (mean, rstd) = row_stats(row);
        let sc = &scale[b * d..(b + 1) * d];
        let (mut g_mean, mut gx_mean) = (0.0, 0.0);
        for j in 0..d {
            let dyj = dyr[j].to_f64();
            xhat[j] = (row[j].to_f64() - mean) * rstd;
            g[j] = dyj * (1.0 + sc[j].to_f64());
            g_mean += g[j];
            gx_mean += g[j] * xhat[j];
            dshift[b * d + j] += dyj;
            dscale[b * d + j] += dyj * xhat[j];
        }
        g_mean /= d as f64;
        gx_mean /= d as f64;
        dx.extend((0..d).map(|j| T::from_f64(rstd * (g[j] - g_mean - xhat[j] * gx_mean))));
    }
    let cast = |v: Vec<f64>| v.into_iter().map(T::from_f64).collect();
    (dx, cast(dshift), cast(dscale))
}

struct ModulatedLayerNorm;

impl CustomOp3 for ModulatedLayerNorm {
    fn name(&self) -> &'static str {
        "modulated-layer-norm"
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
            OP,
            [(s1, l1) => x, (s2, l2) => sh, (s3, l3) => sc],
            forward(x, sh, sc, d)
        );
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _shift: &Tensor,
        scale: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = x.dim(candle_core::D::Minus1)?;
        let (dx, dshift, dscale) = with_float_slices!(x.dtype(), [x => xv, scale => sv, grad_res => dv], {
            let (a, b, c) = backward(&xv, &sv, &dv, d);
            let dev = x.device();
            (
                Tensor::from_vec(a, x.shape(), dev)?,
                Tensor::from_vec(b, scale.shape(), dev)?,
                Tensor::from_vec(c, scale.shape(), dev)?,
            )
        });
        Ok((Some(dx), Some(dshift), Some(dscale)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{modulate, LayerNorm};
    use crate::testing::{assert_same_values_and_gradients, random};
    use candle_core::{DType, Module};

    /// The fused op against `modulate(LayerNorm::plain(x), shift, scale)` built from candle ops:
    /// values and all three gradients of `Σ w ⊙ y` for a random `w`.
    #[test]
    fn matches_the_composed_norm_and_modulation_and_their_gradients() -> Result<()> {
        for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 2e-5)] {
            let (b, n, d) = (3, 5, 16);
            let x = random(&[b, n, d], 1, dtype)?;
            let shift = random(&[b, d], 2, dtype)?;
            let scale = random(&[b, d], 3, dtype)?;
            let w = random(&[b, n, d], 4, dtype)?;
            let plain = LayerNorm::plain().forward(x.as_tensor())?;
            assert_same_values_and_gradients(
                modulated_layer_norm(&x, &shift, &scale)?,
                modulate(&plain, &shift, &scale)?,
                &[&x, &shift, &scale],
                w.as_tensor(),
                tol,
                &format!("{dtype:?} modulated LayerNorm"),
            )?;
        }
        Ok(())
    }

    #[test]
    fn mismatched_modulation_shapes_are_an_error() -> Result<()> {
        let x = random(&[2, 3, 8], 1, DType::F32)?;
        let bad = random(&[2, 4], 2, DType::F32)?;
        let good = random(&[2, 8], 3, DType::F32)?;
        assert!(modulated_layer_norm(&x, &bad, &good).is_err());
        assert!(modulated_layer_norm(&x, &good, &bad).is_err());
        Ok(())
    }
}
