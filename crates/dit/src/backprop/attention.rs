//! Multi-head self-attention over the fused `qkv` rows (timm `Attention`: columns
//! `[q | k | v]`, each `heads × head_dim`), forward and backward per sample and head:
//!
//! ```text
//! S = q kᵀ / √d_h,  P = softmax_rows(S),  O = P v
//! ∂v = Pᵀ ∂O,  ∂P = ∂O vᵀ,  ∂S = P ⊙ (∂P − rowsum(∂P ⊙ P)),  ∂q = ∂S k / √d_h,  ∂k = ∂Sᵀ q / √d_h
//! ```

use ferrite_kernels::rows::{axpy, dot, exp_nonpositive};

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
    let (t, w3, w) = (shape.tokens, 3 * shape.width(), shape.width());
    let samples = qkv.len() / w3 / t;
    let row = |i: usize| &qkv[i * w3..(i + 1) * w3];
    for b in 0..samples {
        for h in 0..shape.heads {
            let p = &mut probs[shape.probs_at(b, h)];
            let (qc, kc, vc) = (shape.cols(0, h), shape.cols(1, h), shape.cols(2, h));
            for i in 0..t {
                let q = &row(b * t + i)[qc.clone()];
                let p = &mut p[i * t..(i + 1) * t];
                for (j, s) in p.iter_mut().enumerate() {
                    *s = dot(q, &row(b * t + j)[kc.clone()]) * shape.scale();
                }
                let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for s in p.iter_mut() {
                    *s = exp_nonpositive(*s - max);
                    sum += *s;
                }
                let o = &mut out[(b * t + i) * w..][qc.start..][..shape.head_dim];
                o.fill(0.0);
                for (j, s) in p.iter_mut().enumerate() {
                    *s /= sum;
                    axpy(*s, &row(b * t + j)[vc.clone()], o);
                }
            }
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
    let (t, w3, w) = (shape.tokens, 3 * shape.width(), shape.width());
    let samples = qkv.len() / w3 / t;
    d_qkv.fill(0.0);
    let mut dp = vec![0f32; t];
    let scale = shape.scale();
    for b in 0..samples {
        for h in 0..shape.heads {
            let p = &probs[shape.probs_at(b, h)];
            let (qc, kc, vc) = (shape.cols(0, h), shape.cols(1, h), shape.cols(2, h));
            for i in 0..t {
                let p = &p[i * t..(i + 1) * t];
                let d_o = &d_out[(b * t + i) * w..][qc.start..][..shape.head_dim];
                let mut rowsum = 0.0;
                for (j, (dp, &pij)) in dp.iter_mut().zip(p).enumerate() {
                    let vj = (b * t + j) * w3;
                    *dp = dot(d_o, &qkv[vj + vc.start..vj + vc.end]);
                    rowsum += *dp * pij;
                    axpy(pij, d_o, &mut d_qkv[vj + vc.start..vj + vc.end]);
                }
                let qi = (b * t + i) * w3;
                for (j, (&dp, &pij)) in dp.iter().zip(p).enumerate() {
                    let ds = pij * (dp - rowsum) * scale;
                    let kj = (b * t + j) * w3;
                    let (k_row, q_row) = (
                        &qkv[kj + kc.start..kj + kc.end],
                        &qkv[qi + qc.start..qi + qc.end],
                    );
                    axpy(ds, k_row, &mut d_qkv[qi + qc.start..qi + qc.end]);
                    axpy(ds, q_row, &mut d_qkv[kj + kc.start..kj + kc.end]);
                }
            }
        }
    }
}
