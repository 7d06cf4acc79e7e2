//! GELU with the tanh approximation (Hendrycks & Gimpel 2016, eq. 2; the `approx_gelu` of DiT's
//! timm `Mlp`): `gelu(x) = ½ x (1 + tanh u)`, `u = √(2/π) (x + 0.044715 x³)`, as one fused op with
//! its own backward `gelu'(x) = ½ (1 + tanh u) + ½ x (1 − tanh² u) √(2/π) (1 + 3·0.044715 x²)`.
//!
//! candle's `gelu()` builds the backward from `powf`, `tanh` and about ten elementwise
//! temporaries; `perf` of a DiT training step put a third of the step there.

use crate::fused_ops::span;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

const OP: &str = "gelu_tanh";

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const CUBIC: f64 = 0.044_715;

/// `gelu(x)` with the tanh approximation, differentiable.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluTanh)
}

macro_rules! gelu_fns {
    ($t:ty, $tanh:path, $tanh_u:ident, $value:ident, $grad:ident, $grad_given:ident) => {
        /// `tanh u`, `u = √(2/π) (x + 0.044715 x³)`.
        #[inline]
        pub(crate) fn $tanh_u(x: $t) -> $t {
            $tanh((SQRT_2_OVER_PI as $t) * (x + (CUBIC as $t) * x * x * x))
        }

        #[inline]
        pub(crate) fn $value(x: $t) -> $t {
            0.5 * x * (1.0 + $tanh_u(x))
        }

        /// `gelu'(x)` from `x` and its `tanh u` (saved by a forward pass).
        #[inline]
        pub(crate) fn $grad_given(x: $t, t: $t) -> $t {
            let du = (SQRT_2_OVER_PI as $t) * (1.0 + 3.0 * (CUBIC as $t) * x * x);
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du
        }

        #[inline]
        pub(crate) fn $grad(x: $t) -> $t {
            $grad_given(x, $tanh_u(x))
        }
    };
}

/// `tanh u = sign(u) (1 − e) / (1 + e)` with `e = exp(−2|u|) ≤ 1`, on ferrite-kernels' polynomial
/// `exp`: the compiler vectorises it, where libm's `tanhf` (a call to `expm1f` per element) was a
/// quarter of a training step.
#[inline(always)]
fn tanh_f32(u: f32) -> f32 {
    let e = ferrite_kernels::rows::exp_nonpositive(-2.0 * u.abs());
    ((1.0 - e) / (1.0 + e)).copysign(u)
}

gelu_fns!(
    f32,
    tanh_f32,
    gelu_tanh_u_f32,
    gelu_f32,
    gelu_grad_f32,
    gelu_grad_given_tanh_f32
);
gelu_fns!(
    f64,
    f64::tanh,
    gelu_tanh_u_f64,
    gelu_f64,
    gelu_grad_f64,
    gelu_grad_given_tanh_f64
);

struct GeluTanh;

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "gelu-tanh"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match storage {
            CpuStorage::F32(v) => {
                CpuStorage::F32(span(v, layout, OP)?.iter().map(|&x| gelu_f32(x)).collect())
            }
            CpuStorage::F64(v) => {
                CpuStorage::F64(span(v, layout, OP)?.iter().map(|&x| gelu_f64(x)).collect())
            }
            _ => bail!("gelu_tanh supports f32 and f64"),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = arg
            .contiguous()?
            .apply_op2_no_bwd(&grad_res.contiguous()?, &GeluTanhGrad)?;
        Ok(Some(grad))
    }
}

/// `grad · gelu'(x)` for inputs `(x, grad)`.
struct GeluTanhGrad;

impl CustomOp2 for GeluTanhGrad {
    fn name(&self) -> &'static str {
        "gelu-tanh-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => CpuStorage::F32(
                span(x, l1, OP)?
                    .iter()
                    .zip(span(g, l2, OP)?)
                    .map(|(&x, &g)| g * gelu_grad_f32(x))
                    .collect(),
            ),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => CpuStorage::F64(
                span(x, l1, OP)?
                    .iter()
                    .zip(span(g, l2, OP)?)
                    .map(|(&x, &g)| g * gelu_grad_f64(x))
                    .collect(),
            ),
            _ => bail!("gelu_tanh gradient: x and grad must both be f32 or both f64"),
        };
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn forward_matches_candle_and_gradient_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let xs: Vec<f64> = (0..401).map(|i| -8.0 + 0.04 * i as f64).collect();
        for dtype in [DType::F64, DType::F32] {
            let x = Var::from_tensor(&Tensor::new(xs.as_slice(), &dev)?.to_dtype(dtype)?)?;
            let ours = gelu_tanh(x.as_tensor())?;
            let diff = (&ours - x.as_tensor().gelu()?)?
                .abs()?
                .max(0)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            let tol = if dtype == DType::F64 { 1e-12 } else { 2e-6 };
            assert!(
                diff < tol,
                "{dtype:?} forward differs from candle's by {diff}"
            );
            // d/dx Σ w·gelu(x) = w·gelu'(x), against a central difference in f64. (candle's own
            // backward rounds its constants to six digits and is off by ~2.5e-7.)
            let weights: Vec<f64> = xs.iter().map(|x| x.sin()).collect();
            let w = Tensor::new(weights.as_slice(), &dev)?.to_dtype(dtype)?;
            let grads = (ours * w)?.sum_all()?.backward()?;
            let got = grads
                .get(&x)
                .unwrap()
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?;
            let h = 1e-5;
            for ((x, w), g) in xs.iter().zip(&weights).zip(&got) {
                let fd = w * (gelu_f64(x + h) - gelu_f64(x - h)) / (2.0 * h);
                let tol = if dtype == DType::F64 { 1e-8 } else { 1e-5 };
                assert!((g - fd).abs() < tol, "{dtype:?} at {x}: {g} vs {fd}");
            }
        }
        Ok(())
    }
}
