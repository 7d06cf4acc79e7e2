//! Low-rank approximation of the quantisation residual (GEAR, Kang et al. 2024, eq. 4 and
//! Alg. 1 lines 5-12): the residual `R = X − D̂ − S` of each head is approximated by
//! `L = A Bᵀ` of rank `r`, found by power iteration — repeat `A = R B`, `B = Rᵀ A`, with the
//! factors orthonormalised by a QR decomposition (faer) in the last loop so that `A` has
//! orthonormal columns and `B = Rᵀ A` is the matching projection.
//!
//! The starting `B` is uniform random in `[0, 1)` as in GEAR's code, drawn from the caller's
//! seeded generator so runs are reproducible. Factors are stored in f16.

use crate::quantize::HeadsView;
use anyhow::{bail, Result};
use faer::Mat;
use half::f16;
use rand::Rng;

/// Rank-`r` factors `A: [rows, r]`, `B: [cols, r]` of one head's residual, `R ≈ A Bᵀ`.
#[derive(Debug, Clone)]
pub struct LowRank {
    /// Rows (tokens).
    pub rows: usize,
    /// Columns (head width).
    pub cols: usize,
    /// Rank.
    pub rank: usize,
    /// `A`, row-major `[rows, rank]`.
    pub a: Vec<f16>,
    /// `B`, row-major `[cols, rank]`.
    pub b: Vec<f16>,
}

/// Thin Q factor of `m` (faer's Householder QR).
fn orthonormalise(m: &Mat<f64>) -> Mat<f64> {
    m.qr().compute_thin_Q()
}

impl LowRank {
    /// Rank-`rank` approximation of `r: [rows, cols]` (row-major) by `loops` power iterations.
    pub fn power_iteration(
        r: &[f32],
        rows: usize,
        cols: usize,
        rank: usize,
        loops: usize,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        if rank == 0 || rank > rows.min(cols) {
            bail!("rank {rank} must be between 1 and {}", rows.min(cols));
        }
        if loops == 0 {
            bail!("power iteration needs at least one loop");
        }
        let e = Mat::<f64>::from_fn(rows, cols, |i, j| r[i * cols + j] as f64);
        let mut b = Mat::<f64>::from_fn(cols, rank, |_, _| rng.gen::<f64>());
        let mut a = Mat::<f64>::zeros(rows, rank);
        for i in 0..loops {
            let last = i + 1 == loops;
            if last {
                b = orthonormalise(&b);
            }
            a = &e * &b;
            if last {
                a = orthonormalise(&a);
            }
            b = e.transpose() * &a;
        }
        let to_f16 = |m: &Mat<f64>| -> Vec<f16> {
            (0..m.nrows())
                .flat_map(|i| (0..m.ncols()).map(move |j| (i, j)))
                .map(|(i, j)| f16::from_f64(m[(i, j)]))
                .collect()
        };
        Ok(Self {
            rows,
            cols,
            rank,
            a: to_f16(&a),
            b: to_f16(&b),
        })
    }

    /// `A Bᵀ` as `[rows, cols]` row-major.
    pub fn reconstruct(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        let mut view = HeadsView {
            out: &mut out,
            total: self.rows,
            row0: 0,
            head_dim: self.cols,
        };
        self.add_into(&mut view, 0);
        out
    }

    /// Adds `A Bᵀ` to the block's channels `[c0, c0 + cols)` in `view`.
    pub fn add_into(&self, view: &mut HeadsView<'_>, c0: usize) {
        let r = self.rank;
        let a: Vec<f32> = self.a.iter().map(|v| v.to_f32()).collect();
        // Bᵀ as [rank, cols] so the inner loop runs over contiguous columns.
        let mut bt = vec![0f32; r * self.cols];
        for (j, row) in self.b.chunks(r).enumerate() {
            for (k, v) in row.iter().enumerate() {
                bt[k * self.cols + j] = v.to_f32();
            }
        }
        for t in 0..self.rows {
            let o = view.offset(t, c0);
            let dst = &mut view.out[o..o + self.cols];
            for k in 0..r {
                let at = a[t * r + k];
                for (d, &b) in dst.iter_mut().zip(&bt[k * self.cols..(k + 1) * self.cols]) {
                    *d += at * b;
                }
            }
        }
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        2 * (self.a.capacity() + self.b.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn frob(x: &[f32]) -> f32 {
        x.iter().map(|v| v * v).sum::<f32>().sqrt()
    }

    #[test]
    fn recovers_an_exact_low_rank_matrix() -> Result<()> {
        // R = u vᵀ + w zᵀ (rank 2) is recovered by rank 2 almost exactly.
        let (m, n) = (32, 16);
        let r: Vec<f32> = (0..m * n)
            .map(|i| {
                let (t, c) = ((i / n) as f32, (i % n) as f32);
                (t * 0.1).sin() * (c * 0.3).cos() + 0.5 * (t * 0.05).cos() * (c * 0.2 + 1.0).sin()
            })
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let lr = LowRank::power_iteration(&r, m, n, 2, 3, &mut rng)?;
        let approx = lr.reconstruct();
        let diff: Vec<f32> = r.iter().zip(&approx).map(|(a, b)| a - b).collect();
        assert!(
            frob(&diff) < 2e-2 * frob(&r),
            "{} vs {}",
            frob(&diff),
            frob(&r)
        );
        Ok(())
    }

    #[test]
    fn higher_rank_reduces_the_residual() -> Result<()> {
        let (m, n) = (64, 64);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let r: Vec<f32> = (0..m * n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let mut last = frob(&r);
        for rank in [1usize, 4, 16] {
            let lr = LowRank::power_iteration(&r, m, n, rank, 3, &mut rng)?;
            let diff: Vec<f32> = r.iter().zip(lr.reconstruct()).map(|(a, b)| a - b).collect();
            let e = frob(&diff);
            assert!(e < last, "rank {rank}: {e} >= {last}");
            last = e;
        }
        assert!(LowRank::power_iteration(&r, m, n, 0, 3, &mut rng).is_err());
        Ok(())
    }
}
