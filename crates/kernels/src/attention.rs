//! Fused scaled-dot-product attention `softmax(q Kᵀ / √d + causal) V` read straight from the
//! cache's K/V storage, for decode and for prompt chunks.
//!
//! The K/V views a cache hands out are `[n_kv_head, total, d]` windows of a larger buffer (rows
//! contiguous, heads `head_stride` apart); reading them in place avoids the per-step
//! `contiguous()` copy of V and candle's GEMM packing, which dominate attention when `t` is 1.
//! Grouped-query attention: query head `h` reads key head `h / (n_head / n_kv_head)`, so the
//! shared heads are never materialised. Query row `i` of `t` sees keys `0..=total − t + i`.
//!
//! Up to [`ROW_BY_ROW_MAX_QUERIES`] queries each query row is one pool task (dot products,
//! softmax, weighted sum of V rows). Longer chunks go by blocks of [`QUERY_BLOCK`] queries of
//! one head: `S = q_b Kᵀ` over only the keys the block sees (the masked upper triangle beyond
//! the block is never computed), the causal softmax in place, then `P V` written into the
//! head's columns of `out`, both products on the `gemm` crate's single-threaded microkernels,
//! the (head, block) tasks spread over the pool, largest first.

use crate::pool::Pool;
use crate::rows::{axpy, causal_softmax_row, dot, softmax_in_place};
use std::cell::RefCell;

/// Queries per call up to which every query row is its own task.
pub const ROW_BY_ROW_MAX_QUERIES: usize = 8;
/// Queries of one head per task on the blocked path.
pub const QUERY_BLOCK: usize = 128;

thread_local! {
    /// Scores of the current (head, block) task.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A `[heads, rows, d]` view: element `(h, j, c)` is `data[h·head_stride + j·row_stride + c]`.
#[derive(Debug, Clone, Copy)]
pub struct HeadsView<'a> {
    /// The underlying storage, starting at element `(0, 0, 0)`.
    pub data: &'a [f32],
    /// Elements between heads.
    pub head_stride: usize,
    /// Elements between rows of one head (at least `d`).
    pub row_stride: usize,
}

impl<'a> HeadsView<'a> {
    fn row(&self, h: usize, j: usize, d: usize) -> &'a [f32] {
        let at = h * self.head_stride + j * self.row_stride;
        &self.data[at..at + d]
    }
}

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (divides `n_head`).
    pub n_kv_head: usize,
    /// New (query) tokens.
    pub t: usize,
    /// Keys in the cache, the new ones last.
    pub total: usize,
    /// Head dimension.
    pub d: usize,
}

/// Query rows × keys × d from which the heads are split over the pool.
const PARALLEL_WORK: usize = 1 << 17;

/// `out[i, h·d..(h+1)·d] = Σ_j softmax_j(q[h,i]·k[g,j] / √d) v[g,j]` with `g = h / (n_head /
/// n_kv_head)`, for `q: [n_head, t, d]` contiguous and `out: [t, n_head·d]`.
pub fn attend(
    q: &[f32],
    k: HeadsView<'_>,
    v: HeadsView<'_>,
    shape: AttentionShape,
    out: &mut [f32],
    pool: &Pool,
) {
    let AttentionShape {
        n_head,
        n_kv_head,
        t,
        total,
        d,
    } = shape;
    assert!(
        n_kv_head > 0 && n_head % n_kv_head == 0,
        "heads do not group"
    );
    assert!(t <= total, "more queries than keys");
    assert_eq!(q.len(), n_head * t * d, "q is not [n_head, t, d]");
    assert_eq!(out.len(), t * n_head * d, "out is not [t, n_head·d]");
    if t > ROW_BY_ROW_MAX_QUERIES {
        return attend_blocks(q, k, v, shape, out, pool);
    }
    let n_rep = n_head / n_kv_head;
    let scale = 1.0 / (d as f32).sqrt();
    let base = crate::SyncPtr(out.as_mut_ptr());
    let one_query = |row: usize| {
        let (h, i) = (row / t, row % t);
        let g = h / n_rep;
        let qr = &q[row * d..(row + 1) * d];
        let visible = total - t + i + 1;
        let mut p: Vec<f32> = (0..visible)
            .map(|j| dot(qr, k.row(g, j, d)) * scale)
            .collect();
        softmax_in_place(&mut p);
        // SAFETY: query row (h, i) writes only out[i, h·d..(h+1)·d], disjoint across rows; the
        // pool run (or the inline loop) finishes before `out` is used again.
        let y = unsafe { std::slice::from_raw_parts_mut(base.get().add((i * n_head + h) * d), d) };
        y.fill(0.0);
        accumulate_weighted_rows(&p, |j| v.row(g, j, d), y);
    };
    let rows = n_head * t;
    if rows * total * d < PARALLEL_WORK || pool.threads() == 1 {
        (0..rows).for_each(one_query);
    } else {
        pool.run(rows, &one_query);
    }
}

/// [`attend`] for long chunks: (head, block of [`QUERY_BLOCK`] queries) tasks, each two GEMMs
/// around the causal softmax.
fn attend_blocks(
    q: &[f32],
    k: HeadsView<'_>,
    v: HeadsView<'_>,
    shape: AttentionShape,
    out: &mut [f32],
    pool: &Pool,
) {
    let AttentionShape { n_head, t, d, .. } = shape;
    let n_rep = n_head / shape.n_kv_head;
    let scale = 1.0 / (d as f32).sqrt();
    let total = shape.total;
    let n_blocks = t.div_ceil(QUERY_BLOCK);
    let base = crate::SyncPtr(out.as_mut_ptr());
    pool.run(n_head * n_blocks, &|task| {
        // Largest blocks (the last queries, which see the most keys) are claimed first.
        let (b, h) = (n_blocks - 1 - task / n_head, task % n_head);
        let g = h / n_rep;
        let start = b * QUERY_BLOCK;
        let rows = QUERY_BLOCK.min(t - start);
        let keys = total - t + start + rows;
        let (k0, v0) = (g * k.head_stride, g * v.head_stride);
        assert!(
            k0 + (keys - 1) * k.row_stride + d <= k.data.len()
                && v0 + (keys - 1) * v.row_stride + d <= v.data.len(),
            "K/V views too short for {keys} keys"
        );
        SCORES.with_borrow_mut(|scores| {
            scores.resize(rows * keys, 0.0);
            // SAFETY (both products): every pointer/stride pair stays inside its slice (q rows
            // start..start+rows of head h; K/V rows 0..keys of head g, checked above; scores
            // rows × keys), and the destination of `P V` is rows start..start+rows of head h's
            // d columns of `out` ([t, n_head·d]), which no other task writes; the pool run is
            // joined before `out` is used again.
            unsafe {
                // S = q_b Kᵀ: lhs [rows, d] row-major, rhs Kᵀ [d, keys] (K rows are its columns).
                crate::gemm_single(
                    (rows, keys, d),
                    scores.as_mut_ptr(),
                    keys,
                    q.as_ptr().add((h * t + start) * d),
                    d,
                    k.data.as_ptr().add(k0),
                    (1, k.row_stride),
                );
            }
            for (r, row) in scores.chunks_exact_mut(keys).enumerate() {
                causal_softmax_row(row, total - t + start + r + 1, scale);
            }
            unsafe {
                // Y_b = P V: lhs P [rows, keys], rhs V [keys, d] with rows `row_stride` apart.
                crate::gemm_single(
                    (rows, d, keys),
                    base.get().add((start * n_head + h) * d),
                    n_head * d,
                    scores.as_ptr(),
                    keys,
                    v.data.as_ptr().add(v0),
                    (v.row_stride, 1),
                );
            }
        });
    });
}

/// `y += Σ_j p_j row(j)` over rows of `y.len()` values. For the common head widths 64 and 128
/// the sum is kept in registers across all rows (a fixed-size accumulator) instead of being
/// loaded and stored once per row. The weighted sum of every attention in ferrite (this module's,
/// and ferrite-gear's over compressed tiles), so all of them add in the same order.
#[inline]
pub fn accumulate_weighted_rows<'a>(p: &[f32], row: impl Fn(usize) -> &'a [f32], y: &mut [f32]) {
    match y.len() {
        64 => accumulate_fixed::<64>(p, row, y),
        128 => accumulate_fixed::<128>(p, row, y),
        _ => {
            for (j, &pj) in p.iter().enumerate() {
                axpy(pj, row(j), y);
            }
        }
    }
}

#[inline(always)]
fn accumulate_fixed<'a, const D: usize>(
    p: &[f32],
    row: impl Fn(usize) -> &'a [f32],
    y: &mut [f32],
) {
    let mut acc: [f32; D] = y.try_into().expect("an output of D values");
    for (j, &pj) in p.iter().enumerate() {
        let r: &[f32; D] = row(j).try_into().expect("a row of D values");
        for c in 0..D {
            acc[c] += pj * r[c];
        }
    }
    y.copy_from_slice(&acc);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        crate::testing::lcg_values(n, seed, -0.5, 0.5)
    }

    /// Plain f64 attention with repeated heads and an explicit mask.
    fn reference(q: &[f32], k: &[f32], v: &[f32], s: AttentionShape, cap: usize) -> Vec<f64> {
        let n_rep = s.n_head / s.n_kv_head;
        let mut out = vec![0f64; s.t * s.n_head * s.d];
        for h in 0..s.n_head {
            let g = h / n_rep;
            for i in 0..s.t {
                let kv = |buf: &[f32], j: usize, c: usize| buf[(g * cap + j) * s.d + c] as f64;
                let scores: Vec<f64> = (0..s.total)
                    .map(|j| {
                        if j > s.total - s.t + i {
                            f64::NEG_INFINITY
                        } else {
                            (0..s.d)
                                .map(|c| q[(h * s.t + i) * s.d + c] as f64 * kv(k, j, c))
                                .sum::<f64>()
                                / (s.d as f64).sqrt()
                        }
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                for c in 0..s.d {
                    out[(i * s.n_head + h) * s.d + c] = (0..s.total)
                        .map(|j| (scores[j] - max).exp() / z * kv(v, j, c))
                        .sum();
                }
            }
        }
        out
    }

    #[test]
    fn matches_masked_reference_on_strided_views() {
        for (n_head, n_kv_head, t, total, d, threads) in [
            (9, 3, 1, 37, 64, 1),
            (9, 3, 1, 300, 64, 2),
            (4, 4, 5, 5, 8, 2),
            (6, 2, 7, 300, 17, 3),
            (2, 1, 3, 10, 3, 1),
            // Blocked path: several query blocks, a partial last one, keys before the chunk.
            (9, 3, 300, 300, 64, 2),
            (6, 2, 129, 200, 17, 3),
            (4, 4, 9, 9, 8, 1),
        ] {
            let s = AttentionShape {
                n_head,
                n_kv_head,
                t,
                total,
                d,
            };
            let cap = total + 11; // the view is a window of a larger buffer
            let q = values(n_head * t * d, 1);
            let k = values(n_kv_head * cap * d, 2);
            let v = values(n_kv_head * cap * d, 3);
            let view = |data| HeadsView {
                data,
                head_stride: cap * d,
                row_stride: d,
            };
            let mut out = vec![f32::NAN; t * n_head * d];
            attend(&q, view(&k), view(&v), s, &mut out, &Pool::new(threads));
            for (a, b) in out.iter().zip(reference(&q, &k, &v, s, cap)) {
                assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b} for {s:?}");
            }
        }
    }
}
