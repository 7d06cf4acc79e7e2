//! Row-wise float kernels of the decoder: RMSNorm and softmax over the last dimension, plus the
//! dot product and `y += a·x` they and [`crate::attention`] are built from.
//!
//! candle's `rms_norm` and `softmax_last_dim` hand every call to rayon (`par_chunks`); in decode
//! that is ~90 cross-thread wake-ups per token for a few hundred floats each, which `perf`
//! showed as ~10% of a 1-thread decode (futex wake, `LockLatch::wait_and_reset`). These run
//! inline for small inputs and on the [`Pool`] only when there is enough work to split.

use crate::pool::Pool;

/// Elements from which a row-wise kernel splits its rows over the pool.
const PARALLEL_ELEMENTS: usize = 1 << 16;

/// `Σ a_i b_i` with sixteen independent partial sums over fixed-size chunks (so the compiler
/// vectorises it without bounds checks).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot of unequal lengths");
    let mut acc = [0f32; 16];
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = a16
        .remainder()
        .iter()
        .zip(b16.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a16.zip(b16) {
        let (x, y): (&[f32; 16], &[f32; 16]) = (x.try_into().unwrap(), y.try_into().unwrap());
        for k in 0..16 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += a · x`.
#[inline]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy of unequal lengths");
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `e^x` for `x ≤ 0` (softmax arguments after subtracting the row maximum), in a form the
/// compiler vectorises: `e^x = 2^n · e^r` with `n = round(x·log₂e)` (ties to even), `r = x − n·ln 2` (two-part
/// ln 2), `e^r` by its degree-7 Taylor polynomial (|r| ≤ ln2/2: relative error < 1e-8, below
/// f32's half-ulp), `2^n` built in the exponent bits. Below −87 (under f32's normal range) it
/// returns 0; `-∞` gives 0.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let xc = x.max(-87.0);
    let n = (xc * std::f32::consts::LOG2_E).round_ties_even();
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // SAFETY: `n` is a whole number in [−126, 0] (`xc` is in [−87, 0]; a NaN `x` gives
    // `xc = −87`), so the unchecked conversion is exact, and it vectorises where the
    // saturating `as` cast is done lane by lane.
    let n_int = unsafe { n.to_int_unchecked::<i32>() };
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * scale
    }
}

/// `silu(x) = x · σ(x)` with `σ` from [`exp_nonpositive`] (`σ(x) = 1/(1+e^{−x})` for `x ≥ 0`,
/// `e^x/(1+e^x)` below, so the exponent is never positive); branch-free, so it vectorises.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    let sigmoid = if x >= 0.0 { 1.0 } else { e } / (1.0 + e);
    x * sigmoid
}

/// SwiGLU in place: `gate ← silu(gate) ⊙ up` over rows of `cols`, rows split over the pool.
pub fn swiglu_rows(gate: &mut [f32], up: &[f32], cols: usize, pool: &Pool) {
    assert_eq!(gate.len(), up.len(), "gate and up differ in length");
    let base = gate.as_ptr() as usize;
    for_rows(gate, cols, pool, &|row| {
        let at = (row.as_ptr() as usize - base) / std::mem::size_of::<f32>();
        let n = row.len();
        for (g, &u) in row.iter_mut().zip(&up[at..at + n]) {
            *g = silu(*g) * u;
        }
    });
}

/// `Σ x_i` with sixteen independent partial sums (vectorised, like [`dot`]).
#[inline]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for k in 0..16 {
            acc[k] += c[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ x_i` in f64 with eight independent partial sums (vectorised).
#[inline]
pub fn sum_f64(x: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k] as f64;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Softmax of one row in place: `x_i ← exp(x_i − max x) / Σ_j exp(x_j − max x)`; `-∞` entries
/// (masked keys) become 0.
pub fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return;
    }
    x.iter_mut().for_each(|v| *v = exp_nonpositive(*v - max));
    let inv = (1.0 / sum_f64(x)) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// Softmax over every row of `x` (`x.len() / cols` rows of `cols`), in place.
pub fn softmax_rows(x: &mut [f32], cols: usize, pool: &Pool) {
    for_rows(x, cols, pool, &|row| softmax_in_place(row));
}

/// Causal attention weights in place: `x` holds raw scores `q·k` in rows of `cols` keys, the
/// rows cycling through `t` queries (row `r` is query `r mod t`, as in `[heads, t, cols]`);
/// query `i` sees keys `0..=cols − t + i`. Each row becomes `softmax(scale · x)` over its
/// visible keys and 0 beyond, so masked entries cost neither a mask nor an `exp`.
pub fn causal_softmax_rows(x: &mut [f32], cols: usize, t: usize, scale: f32, pool: &Pool) {
    assert!(t >= 1 && t <= cols, "{t} queries over {cols} keys");
    let base = x.as_ptr() as usize;
    for_rows(x, cols, pool, &|row| {
        let r = (row.as_ptr() as usize - base) / (4 * cols);
        causal_softmax_row(row, cols - t + r % t + 1, scale);
    });
}

/// One row of causal attention weights in place: `softmax(scale · x)` over the first `visible`
/// keys, 0 beyond.
#[inline]
pub fn causal_softmax_row(row: &mut [f32], visible: usize, scale: f32) {
    let (seen, masked) = row.split_at_mut(visible);
    seen.iter_mut().for_each(|v| *v *= scale);
    softmax_in_place(seen);
    masked.fill(0.0);
}

/// `Σ_r −log softmax(logits_r)[target_r]` over rows of `vocab` logits (f64 accumulation), rows
/// split over the pool.
pub fn nll_of_targets(logits: &[f32], vocab: usize, targets: &[u32], pool: &Pool) -> f64 {
    assert_eq!(
        logits.len(),
        vocab * targets.len(),
        "one row of logits per target"
    );
    let mut per_row = vec![0f64; targets.len()];
    let out = crate::SyncPtr(per_row.as_mut_ptr());
    pool.run(targets.len(), &|r| {
        let row = &logits[r * vocab..(r + 1) * vocab];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut e = vec![0f32; vocab];
        e.iter_mut()
            .zip(row)
            .for_each(|(ei, &v)| *ei = exp_nonpositive(v - max));
        let nll = (max as f64 + sum_f64(&e).ln()) - row[targets[r] as usize] as f64;
        // SAFETY: chunk `r` writes only element `r` of `per_row`; the run is joined below.
        unsafe { *out.get().add(r) = nll };
    });
    per_row.iter().sum()
}

/// RMSNorm (Zhang & Sennrich 2019) of every row: `y = x / sqrt(mean(x²) + ε) ⊙ g`, where `g`
/// (`gain`) has one entry per column.
pub fn rms_norm_rows(x: &[f32], gain: &[f32], eps: f32, y: &mut [f32], pool: &Pool) {
    let cols = gain.len();
    assert_eq!(x.len(), y.len(), "rms_norm input and output differ in size");
    y.copy_from_slice(x);
    for_rows(y, cols, pool, &|row| {
        let inv = 1.0 / (dot(row, row) / cols as f32 + eps).sqrt();
        for (v, g) in row.iter_mut().zip(gain) {
            *v *= inv * g;
        }
    });
}

/// Runs `f` on each `cols`-wide row of `x`: inline when small, else split over the pool.
fn for_rows(x: &mut [f32], cols: usize, pool: &Pool, f: &(dyn Fn(&mut [f32]) + Sync)) {
    if cols == 0 {
        return;
    }
    assert_eq!(x.len() % cols, 0, "rows of {cols} do not tile {}", x.len());
    let rows = x.len() / cols;
    if x.len() < PARALLEL_ELEMENTS || pool.threads() == 1 {
        x.chunks_exact_mut(cols).for_each(f);
        return;
    }
    let per_chunk = rows.div_ceil(pool.threads() * 4);
    let base = crate::SyncPtr(x.as_mut_ptr());
    pool.run(rows.div_ceil(per_chunk), &|c| {
        let (start, end) = (c * per_chunk, ((c + 1) * per_chunk).min(rows));
        // SAFETY: chunk `c` owns rows [start, end) of `x`, disjoint from every other chunk's,
        // and the run is joined before `x` is touched again.
        let part = unsafe {
            std::slice::from_raw_parts_mut(base.get().add(start * cols), (end - start) * cols)
        };
        part.chunks_exact_mut(cols).for_each(f);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swiglu_matches_silu_times_up_in_f64_and_keeps_nan() {
        let cols = 37;
        let gate: Vec<f32> = crate::testing::lcg_values(cols * 40, 5, -30.0, 30.0);
        let up: Vec<f32> = crate::testing::lcg_values(cols * 40, 6, -2.0, 2.0);
        for threads in [1, 2] {
            let mut g = gate.clone();
            swiglu_rows(&mut g, &up, cols, &Pool::new(threads));
            for ((y, &x), &u) in g.iter().zip(&gate).zip(&up) {
                let x64 = x as f64;
                let want = x64 / (1.0 + (-x64).exp()) * u as f64;
                assert!(
                    (*y as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{x}: {y} vs {want}"
                );
            }
        }
        for (x, want) in [(0.0f32, 0.0f32), (-200.0, 0.0), (200.0, 200.0)] {
            assert_eq!(silu(x), want);
        }
        assert!(silu(f32::NAN).is_nan());
    }

    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        crate::testing::lcg_values(n, seed, -2.0, 2.0)
    }

    #[test]
    fn sum_matches_plain_sum_on_odd_lengths() {
        for n in [0, 1, 15, 16, 17, 100, 129] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let plain: f64 = x.iter().map(|&v| v as f64).sum();
            assert!((sum(&x) as f64 - plain).abs() < 1e-4, "n = {n}");
        }
    }

    #[test]
    fn dot_matches_plain_sum_on_odd_lengths() {
        for n in [0, 1, 7, 8, 9, 64, 67] {
            let (a, b) = (lcg(n, 1), lcg(n, 2));
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - plain).abs() < 1e-4, "n = {n}");
        }
    }

    #[test]
    fn fast_exp_is_within_an_ulp_or_two() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -90.0 * i as f32 / 200_000.0;
            let (got, want) = (exp_nonpositive(x) as f64, (x as f64).exp());
            if x >= -87.0 {
                worst = worst.max((got - want).abs() / want);
            } else {
                assert!(got == 0.0 && want < 2e-38);
            }
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn softmax_rows_sum_to_one_and_mask_to_zero() {
        for threads in [1, 3] {
            let pool = Pool::new(threads);
            let cols = 300;
            let mut x = lcg(cols * 400, 3);
            x[5] = f32::NEG_INFINITY;
            let reference: Vec<f32> = x[cols..2 * cols].to_vec();
            softmax_rows(&mut x, cols, &pool);
            assert_eq!(x[5], 0.0);
            for row in x.chunks_exact(cols) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
            let max = reference.iter().copied().fold(f32::MIN, f32::max);
            let z: f64 = reference.iter().map(|v| ((v - max) as f64).exp()).sum();
            for (p, v) in x[cols..2 * cols].iter().zip(&reference) {
                assert!((*p as f64 - ((v - max) as f64).exp() / z).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn causal_softmax_matches_masked_softmax() {
        for threads in [1, 2] {
            let pool = Pool::new(threads);
            let (heads, t, cols, scale) = (3, 5, 300, 0.125);
            let raw = lcg(heads * t * cols, 6);
            let mut fused = raw.clone();
            causal_softmax_rows(&mut fused, cols, t, scale, &pool);
            let mut plain: Vec<f32> = raw.iter().map(|v| v * scale).collect();
            for (r, row) in plain.chunks_exact_mut(cols).enumerate() {
                row[cols - t + r % t + 1..].fill(f32::NEG_INFINITY);
            }
            softmax_rows(&mut plain, cols, &pool);
            for (a, b) in fused.iter().zip(&plain) {
                assert!((a - b).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn nll_matches_log_softmax() {
        let (vocab, targets) = (1000, [3u32, 999, 0]);
        let logits = lcg(vocab * targets.len(), 7);
        let expected: f64 = logits
            .chunks_exact(vocab)
            .zip(&targets)
            .map(|(row, &t)| {
                let z: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
                z.ln() - row[t as usize] as f64
            })
            .sum();
        for threads in [1, 2] {
            let got = nll_of_targets(&logits, vocab, &targets, &Pool::new(threads));
            assert!((got - expected).abs() < 1e-6);
        }
    }

    #[test]
    fn rms_norm_matches_definition() {
        for threads in [1, 2] {
            let pool = Pool::new(threads);
            let cols = 576;
            let rows = 130;
            let (x, g) = (lcg(rows * cols, 4), lcg(cols, 5));
            let mut y = vec![0f32; x.len()];
            rms_norm_rows(&x, &g, 1e-5, &mut y, &pool);
            for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact(cols)) {
                let ms: f64 = xr.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / cols as f64;
                let inv = 1.0 / (ms + 1e-5).sqrt();
                for ((xv, yv), gv) in xr.iter().zip(yr).zip(&g) {
                    assert!((*yv as f64 - *xv as f64 * inv * *gv as f64).abs() < 1e-5);
                }
            }
        }
    }
}
