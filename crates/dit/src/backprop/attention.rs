//! Multi-head self-attention over the fused `qkv` rows (timm `Attention`: columns
//! `[q | k | v]`, each `heads × head_dim`), forward and backward per sample and head:
//!
//! ```text
//! S = q kᵀ / √d_h,  P = softmax_rows(S),  O = P v
//! ∂v = Pᵀ ∂O,  ∂P = ∂O vᵀ,  ∂S = P ⊙ (∂P − rowsum(∂P ⊙ P)),  ∂q = ∂S k / √d_h,  ∂k = ∂Sᵀ q / √d_h
//! ```

use ferrite_kernels::dense::{matmul_strided, Strided};
use ferrite_kernels::rows::{dot, exp_nonpositive, sum};

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

    /// Tokens, `qkv` row width, output row width, head width.
    fn sizes(&self) -> (usize, usize, usize, usize) {
        (self.tokens, 3 * self.width(), self.width(), self.head_dim)
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }

    /// Offset of head `h`'s q (`part` 0), k (1) or v (2) within a `qkv` row.
    fn col(&self, part: usize, h: usize) -> usize {
        part * self.width() + h * self.head_dim
    }

    /// The `[T, T]` probabilities of sample `b`, head `h` within `probs`.
    fn probs_at(&self, b: usize, h: usize) -> std::ops::Range<usize> {
        let n = self.tokens * self.tokens;
        let at = (b * self.heads + h) * n;
        at..at + n
    }
}

/// `[T, d_h]` rows of one head inside rows of `stride` starting at `data[0]`, or their
/// transpose.
fn head(data: &[f32], stride: usize, (t, dh): (usize, usize), transposed: bool) -> Strided<'_> {
    if transposed {
        Strided {
            data,
            shape: (dh, t),
            strides: (1, stride),
        }
    } else {
        Strided {
            data,
            shape: (t, dh),
            strides: (stride, 1),
        }
    }
}

/// A `[T, T]` row-major matrix, or its transpose.
fn square(data: &[f32], t: usize, transposed: bool) -> Strided<'_> {
    let strides = if transposed { (1, t) } else { (t, 1) };
    Strided {
        data,
        shape: (t, t),
        strides,
    }
}

/// `out = softmax(q kᵀ/√d_h) v` for every sample and head of `qkv` (`[rows, 3D]`), saving the
/// probabilities (`[samples, heads, T, T]`); `out` is `[rows, D]`.
pub(crate) fn attention_forward(shape: Heads, qkv: &[f32], probs: &mut [f32], out: &mut [f32]) {
    let (t, w3, w, dh) = shape.sizes();
    let samples = qkv.len() / w3 / t;
    for b in 0..samples {
        let rows = &qkv[b * t * w3..];
        for h in 0..shape.heads {
            let p = &mut probs[shape.probs_at(b, h)];
            let q = head(&rows[shape.col(0, h)..], w3, (t, dh), false);
            let k_t = head(&rows[shape.col(1, h)..], w3, (t, dh), true);
            matmul_strided((p, t), q, k_t, shape.scale(), false);
            for row in p.chunks_exact_mut(t) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                for s in row.iter_mut() {
                    *s = exp_nonpositive(*s - max);
                }
                let total = sum(row);
                for s in row.iter_mut() {
                    *s /= total;
                }
            }
            let v = head(&rows[shape.col(2, h)..], w3, (t, dh), false);
            let o = &mut out[b * t * w + h * dh..];
            matmul_strided((o, w), square(p, t, false), v, 1.0, false);
        }
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
    let (t, w3, w, dh) = shape.sizes();
    let samples = qkv.len() / w3 / t;
    let mut ds = vec![0f32; t * t];
    for b in 0..samples {
        let rows = &qkv[b * t * w3..];
        let d_rows = b * t * w3;
        for h in 0..shape.heads {
            let p = &probs[shape.probs_at(b, h)];
            let d_o = head(&d_out[b * t * w + h * dh..], w, (t, dh), false);
            // ∂v = Pᵀ ∂O,  ∂P = ∂O vᵀ
            let dv = &mut d_qkv[d_rows + shape.col(2, h)..];
            matmul_strided((dv, w3), square(p, t, true), d_o, 1.0, false);
            let v_t = head(&rows[shape.col(2, h)..], w3, (t, dh), true);
            matmul_strided((&mut ds, t), d_o, v_t, 1.0, false);
            // ∂S = P ⊙ (∂P − rowsum(∂P ⊙ P))
            for (ds, p) in ds.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
                let rowsum = dot(ds, p);
                for (d, &pij) in ds.iter_mut().zip(p) {
                    *d = pij * (*d - rowsum);
                }
            }
            // ∂q = ∂S k / √d_h,  ∂k = ∂Sᵀ q / √d_h
            let k = head(&rows[shape.col(1, h)..], w3, (t, dh), false);
            let dq = &mut d_qkv[d_rows + shape.col(0, h)..];
            matmul_strided((dq, w3), square(&ds, t, false), k, shape.scale(), false);
            let q = head(&rows[shape.col(0, h)..], w3, (t, dh), false);
            let dk = &mut d_qkv[d_rows + shape.col(1, h)..];
            matmul_strided((dk, w3), square(&ds, t, true), q, shape.scale(), false);
        }
    }
}
