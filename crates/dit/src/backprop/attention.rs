//! Multi-head self-attention over the fused `qkv` rows (timm `Attention`: columns
//! `[q | k | v]`, each `heads × head_dim`), forward and backward per sample and head:
//!
//! ```text
//! S = q kᵀ / √d_h,  P = softmax_rows(S),  O = P v
//! ∂v = Pᵀ ∂O,  ∂P = ∂O vᵀ,  ∂S = P ⊙ (∂P − rowsum(∂P ⊙ P)),  ∂q = ∂S k / √d_h,  ∂k = ∂Sᵀ q / √d_h
//! ```

use ferrite_kernels::rows::exp_nonpositive;

/// `Σ a_i b_i` over eight partial sums, inlined so that a constant length unrolls it.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += a · x`, inlined for the same reason.
#[inline(always)]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// The shape of the attention of one worker's rows: `tokens` per sample, `heads` of `head_dim`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl Heads {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }

    /// Columns of head `h`'s q (`part` 0), k (1) or v (2) within a `qkv` row.
    fn cols(&self, part: usize, h: usize) -> std::ops::Range<usize> {
        let at = part * self.width() + h * self.head_dim;
        at..at + self.head_dim
    }

    /// The `[T, T]` probabilities of sample `b`, head `h` within `probs`.
    fn probs_at(&self, b: usize, h: usize) -> std::ops::Range<usize> {
        let n = self.tokens * self.tokens;
        let at = (b * self.heads + h) * n;
        at..at + n
    }
}

/// `out = softmax(q kᵀ/√d_h) v` for every sample and head of `qkv` (`[rows, 3D]`), saving the
/// probabilities (`[samples, heads, T, T]`); `out` is `[rows, D]`.
pub(crate) fn attention_forward(shape: Heads, qkv: &[f32], probs: &mut [f32], out: &mut [f32]) {
    match shape.head_dim {
        32 => forward::<32>(shape, qkv, probs, out),
        64 => forward::<64>(shape, qkv, probs, out),
        _ => forward::<0>(shape, qkv, probs, out),
    }
}

/// Gradient `d_qkv` (`[rows, 3D]`, overwritten) of [`attention_forward`] from `d_out`.
pub(crate) fn attention_backward(
    shape: Heads,
    qkv: &[f32],
    probs: &[f32],
    d_out: &[f32],
    d_qkv: &mut [f32],
) {
    match shape.head_dim {
        32 => backward::<32>(shape, qkv, probs, d_out, d_qkv),
        64 => backward::<64>(shape, qkv, probs, d_out, d_qkv),
        _ => backward::<0>(shape, qkv, probs, d_out, d_qkv),
    }
}

/// The head width: `DH` when it is a compile-time constant (the common widths, so every
/// per-head dot and `axpy` has a fixed length and is unrolled), else the runtime one (`DH = 0`).
#[inline(always)]
fn head_dim<const DH: usize>(shape: &Heads) -> usize {
    if DH == 0 {
        shape.head_dim
    } else {
        DH
    }
}

fn forward<const DH: usize>(shape: Heads, qkv: &[f32], probs: &mut [f32], out: &mut [f32]) {
    let (t, w3, w, dh) = (
        shape.tokens,
        3 * shape.width(),
        shape.width(),
        head_dim::<DH>(&shape),
    );
    let samples = qkv.len() / w3 / t;
    let at = |row: usize, col: usize| row * w3 + col;
    for b in 0..samples {
        for h in 0..shape.heads {
            let p = &mut probs[shape.probs_at(b, h)];
            let (qc, kc, vc) = (
                shape.cols(0, h).start,
                shape.cols(1, h).start,
                shape.cols(2, h).start,
            );
            for i in 0..t {
                let q = &qkv[at(b * t + i, qc)..][..dh];
                let p = &mut p[i * t..(i + 1) * t];
                for (j, s) in p.iter_mut().enumerate() {
                    *s = dot(q, &qkv[at(b * t + j, kc)..][..dh]) * shape.scale();
                }
                let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for s in p.iter_mut() {
                    *s = exp_nonpositive(*s - max);
                    sum += *s;
                }
                let o = &mut out[(b * t + i) * w + qc..][..dh];
                o.fill(0.0);
                for (j, s) in p.iter_mut().enumerate() {
                    *s /= sum;
                    axpy(*s, &qkv[at(b * t + j, vc)..][..dh], o);
                }
            }
        }
    }
}

fn backward<const DH: usize>(
    shape: Heads,
    qkv: &[f32],
    probs: &[f32],
    d_out: &[f32],
    d_qkv: &mut [f32],
) {
    let (t, w3, w, dh) = (
        shape.tokens,
        3 * shape.width(),
        shape.width(),
        head_dim::<DH>(&shape),
    );
    let samples = qkv.len() / w3 / t;
    let at = |row: usize, col: usize| row * w3 + col;
    d_qkv.fill(0.0);
    let mut dp = vec![0f32; t];
    let scale = shape.scale();
    for b in 0..samples {
        for h in 0..shape.heads {
            let p = &probs[shape.probs_at(b, h)];
            let (qc, kc, vc) = (
                shape.cols(0, h).start,
                shape.cols(1, h).start,
                shape.cols(2, h).start,
            );
            for i in 0..t {
                let p = &p[i * t..(i + 1) * t];
                let d_o = &d_out[(b * t + i) * w + qc..][..dh];
                for (j, (dp, &pij)) in dp.iter_mut().zip(p).enumerate() {
                    *dp = dot(d_o, &qkv[at(b * t + j, vc)..][..dh]);
                    axpy(pij, d_o, &mut d_qkv[at(b * t + j, vc)..][..dh]);
                }
                let rowsum = dot(&dp, p);
                let qi = b * t + i;
                for (j, (&dp, &pij)) in dp.iter().zip(p).enumerate() {
                    let ds = pij * (dp - rowsum) * scale;
                    let kj = b * t + j;
                    axpy(ds, &qkv[at(kj, kc)..][..dh], &mut d_qkv[at(qi, qc)..][..dh]);
                    axpy(ds, &qkv[at(qi, qc)..][..dh], &mut d_qkv[at(kj, kc)..][..dh]);
                }
            }
        }
    }
}
