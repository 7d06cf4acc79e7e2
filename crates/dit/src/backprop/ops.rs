//! The row kernels of the DiT training step, each with its backward written out:
//!
//! - linear `y = x Wᵀ + b`: `∂x = ∂y W`, `∂W = ∂yᵀ x`, `∂b = Σ_rows ∂y`;
//! - SiLU `s(x) = x σ(x)`: `s'(x) = σ(x) (1 + x (1 − σ(x)))`;
//! - GELU (tanh): the derivative of [`crate::gelu`];
//! - adaLN's modulated LayerNorm `y = x̂ (1 + γ) + β`, `x̂ = (x − μ) r`, `r = 1/√(σ² + ε)`:
//!   `∂x = r (g − mean(g) − x̂ mean(g x̂))` with `g = ∂y (1 + γ)`, `∂γ = Σ_t ∂y x̂`, `∂β = Σ_t ∂y`
//!   (the derivation of [`crate::modulated_norm`]);
//! - adaLN-Zero's gated residual `x ← x + α F`: `∂F = α ∂x`, `∂α = Σ_t ∂x F`.

use super::layout::{Chunk, LinearParams};
use crate::config::LAYER_NORM_EPS;
use crate::gelu::{gelu_grad_given_tanh_f32, gelu_tanh_u_f32};
use ferrite_kernels::dense::{matmul, Layout};
use ferrite_kernels::rows::{dot, sum};

/// `y = x Wᵀ + b` over the rows of `x` (`[rows, inp]` to `[rows, out]`).
pub(crate) fn linear_forward(p: &LinearParams, weights: &[f32], x: &[f32], y: &mut [f32]) {
    let rows = x.len() / p.inp;
    let (w, b) = (&weights[p.w.clone()], &weights[p.b.clone()]);
    matmul(
        y,
        (x, Layout::AsIs),
        (w, Layout::Transposed),
        (rows, p.out, p.inp),
        false,
    );
    for row in y.chunks_exact_mut(p.out) {
        for (v, bias) in row.iter_mut().zip(b) {
            *v += bias;
        }
    }
}

/// Where the input gradient of [`linear_backward`] goes.
pub(crate) enum InputGrad<'a> {
    /// Not needed (the input is data).
    Skip,
    /// Overwrite this buffer.
    Set(&'a mut [f32]),
    /// Add to this buffer.
    Add(&'a mut [f32]),
}

/// Writes `∂W = ∂yᵀ x`, `∂b = Σ ∂y` into `grads` (each layer is used once per forward, so
/// its gradient has one contribution and needs no zeroing) and writes or adds `∂x = ∂y W`.
pub(crate) fn linear_backward(
    p: &LinearParams,
    weights: &[f32],
    grads: &mut [f32],
    x: &[f32],
    dy: &[f32],
    dx: InputGrad,
) {
    let rows = x.len() / p.inp;
    let dims_w = (p.out, p.inp, rows);
    matmul(
        &mut grads[p.w.clone()],
        (dy, Layout::Transposed),
        (x, Layout::AsIs),
        dims_w,
        false,
    );
    let db = &mut grads[p.b.clone()];
    db.fill(0.0);
    for row in dy.chunks_exact(p.out) {
        for (g, d) in db.iter_mut().zip(row) {
            *g += d;
        }
    }
    let w = &weights[p.w.clone()];
    let dims_x = (rows, p.inp, p.out);
    match dx {
        InputGrad::Skip => {}
        InputGrad::Set(dx) => matmul(dx, (dy, Layout::AsIs), (w, Layout::AsIs), dims_x, false),
        InputGrad::Add(dx) => matmul(dx, (dy, Layout::AsIs), (w, Layout::AsIs), dims_x, true),
    }
}

/// `σ(x)` without overflow (the exponent is never positive).
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = ferrite_kernels::rows::exp_nonpositive(-x.abs());
    (if x >= 0.0 { 1.0 } else { e }) / (1.0 + e)
}

/// `y = silu(x)` elementwise.
pub(crate) fn silu_forward(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x * sigmoid(x);
    }
}

/// `dx = dy · silu'(x)` elementwise.
pub(crate) fn silu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((g, &x), &d) in dx.iter_mut().zip(x).zip(dy) {
        let s = sigmoid(x);
        *g = d * s * (1.0 + x * (1.0 - s));
    }
}

/// `y = gelu(x) = ½ x (1 + tanh u)` elementwise (tanh approximation), saving `tanh u`.
pub(crate) fn gelu_forward(x: &[f32], tanh_u: &mut [f32], y: &mut [f32]) {
    for ((y, t), &x) in y.iter_mut().zip(tanh_u.iter_mut()).zip(x) {
        *t = gelu_tanh_u_f32(x);
        *y = 0.5 * x * (1.0 + *t);
    }
}

/// `d ← d · gelu'(x)` elementwise, in place, from the forward's `tanh u`.
pub(crate) fn gelu_backward(x: &[f32], tanh_u: &[f32], d: &mut [f32]) {
    for ((d, &x), &t) in d.iter_mut().zip(x).zip(tanh_u) {
        *d *= gelu_grad_given_tanh_f32(x, t);
    }
}

/// The saved statistics of a modulated LayerNorm: `x̂` per element, `r` per row.
pub(crate) struct NormSaved<'a> {
    pub xhat: &'a mut [f32],
    pub rstd: &'a mut [f32],
}

/// `y = LN(x)(1 + scale) + shift` over rows of `d` (`tokens` rows per sample), saving `x̂`, `r`.
pub(crate) fn modulated_norm_forward(
    x: &[f32],
    modulation: &[f32],
    (shift, scale): (Chunk, Chunk),
    tokens: usize,
    saved: NormSaved,
    y: &mut [f32],
) {
    let d = shift.d;
    let rows = x.chunks_exact(d).zip(saved.xhat.chunks_exact_mut(d));
    for (r, ((x, xhat), y)) in rows.zip(y.chunks_exact_mut(d)).enumerate() {
        let mean = sum(x) / d as f32;
        for (h, &x) in xhat.iter_mut().zip(x) {
            *h = x - mean;
        }
        let var = dot(xhat, xhat) / d as f32;
        let rstd = 1.0 / (var + LAYER_NORM_EPS as f32).sqrt();
        saved.rstd[r] = rstd;
        let (sh, sc) = (
            shift.of(modulation, r / tokens),
            scale.of(modulation, r / tokens),
        );
        for (((h, y), &s), &c) in xhat.iter_mut().zip(y.iter_mut()).zip(sh).zip(sc) {
            *h *= rstd;
            *y = *h * (1.0 + c) + s;
        }
    }
}

/// Backward of [`modulated_norm_forward`]: adds `∂x` to `dx`, and `∂shift`, `∂scale` to their
/// chunks of `d_modulation`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn modulated_norm_backward(
    xhat: &[f32],
    rstd: &[f32],
    dy: &[f32],
    modulation: &[f32],
    d_modulation: &mut [f32],
    (shift, scale): (Chunk, Chunk),
    tokens: usize,
    dx: &mut [f32],
) {
    let d = shift.d;
    let mut g = vec![0f32; d];
    let rows = xhat.chunks_exact(d).zip(dy.chunks_exact(d));
    for (r, ((xhat, dy), dx)) in rows.zip(dx.chunks_exact_mut(d)).enumerate() {
        let b = r / tokens;
        for ((acc, &dy), &h) in scale.of_mut(d_modulation, b).iter_mut().zip(dy).zip(xhat) {
            *acc += dy * h;
        }
        for (acc, &dy) in shift.of_mut(d_modulation, b).iter_mut().zip(dy) {
            *acc += dy;
        }
        for ((g, &dy), &c) in g.iter_mut().zip(dy).zip(scale.of(modulation, b)) {
            *g = dy * (1.0 + c);
        }
        let (mean_g, mean_gx) = (sum(&g) / d as f32, dot(&g, xhat) / d as f32);
        for ((dx, &g), &h) in dx.iter_mut().zip(&g).zip(xhat) {
            *dx += rstd[r] * (g - mean_g - h * mean_gx);
        }
    }
}

/// `x += gate ⊙ f` per sample (`tokens` rows each).
pub(crate) fn gated_residual_forward(
    x: &mut [f32],
    f: &[f32],
    modulation: &[f32],
    gate: Chunk,
    tokens: usize,
) {
    for (r, (x, f)) in x
        .chunks_exact_mut(gate.d)
        .zip(f.chunks_exact(gate.d))
        .enumerate()
    {
        for ((x, &f), &a) in x.iter_mut().zip(f).zip(gate.of(modulation, r / tokens)) {
            *x += a * f;
        }
    }
}

/// Backward of [`gated_residual_forward`] for the branch: writes `∂f = gate ⊙ ∂x` and adds
/// `Σ_t ∂x ⊙ f` to the gate's chunk of `d_modulation` (`∂x` itself passes through unchanged).
pub(crate) fn gated_residual_backward(
    dx: &[f32],
    f: &[f32],
    modulation: &[f32],
    d_modulation: &mut [f32],
    gate: Chunk,
    tokens: usize,
    df: &mut [f32],
) {
    let d = gate.d;
    let rows = dx
        .chunks_exact(d)
        .zip(f.chunks_exact(d))
        .zip(df.chunks_exact_mut(d));
    for (r, ((dx, f), df)) in rows.enumerate() {
        let b = r / tokens;
        for ((df, &g), &a) in df.iter_mut().zip(dx).zip(gate.of(modulation, b)) {
            *df = a * g;
        }
        for ((acc, &g), &f) in gate.of_mut(d_modulation, b).iter_mut().zip(dx).zip(f) {
            *acc += g * f;
        }
    }
}
