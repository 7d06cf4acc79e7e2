//! Low-rank approximation of the quantisation residual (GEAR, Kang et al. 2024, eq. 4 and
//! Alg. 1 lines 5-12): the residual `R = X − D̂ − S` of each head is approximated by
//! `L = A Bᵀ` of rank `r`, found by power iteration — repeat `A = R B`, `B = Rᵀ A`, with the
//! factors orthonormalised by a QR decomposition (faer) in the last loop so that `A` has
//! orthonormal columns and `B = Rᵀ A` is the matching projection.
//!
//! The starting `B` is uniform random in `[0, 1)` as in GEAR's code, drawn from the caller's
//! seeded generator so runs are reproducible. Factors are stored in f16.

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
    /// `Aᵀ`, row-major `[rank, rows]` (stored transposed so that every product with it runs
    /// along contiguous memory).
    pub a_t: Vec<f16>,
    /// `Bᵀ`, row-major `[rank, cols]`.
    pub b_t: Vec<f16>,
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
        // Column k of a factor is row k of its stored transpose.
        let transposed_f16 = |m: &Mat<f64>| -> Vec<f16> {
            (0..m.ncols())
                .flat_map(|k| (0..m.nrows()).map(move |i| (i, k)))
                .map(|(i, k)| f16::from_f64(m[(i, k)]))
                .collect()
        };
        Ok(Self {
            rows,
            cols,
            rank,
            a_t: transposed_f16(&a),
            b_t: transposed_f16(&b),
        })
    }

    /// `A Bᵀ` as `[rows, cols]` row-major.
    pub fn reconstruct(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        self.add_into(&mut out);
        out
    }

    /// Adds `A Bᵀ` to `out: [rows, cols]` row-major (one head of a block):
    /// `out[t, ·] += Σ_k Aᵀ[k, t] Bᵀ[k, ·]`.
    pub fn add_into(&self, out: &mut [f32]) {
        let (mut a_t, mut b_t) = (Vec::new(), Vec::new());
        self.factors_f32(&mut a_t, &mut b_t);
        for (t, dst) in out.chunks_exact_mut(self.cols).enumerate() {
            for (a_k, b_k) in a_t.chunks_exact(self.rows).zip(b_t.chunks_exact(self.cols)) {
                let a = a_k[t];
                dst.iter_mut().zip(b_k).for_each(|(d, &b)| *d += a * b);
            }
        }
    }

    /// The stored factors `Aᵀ: [rank, rows]`, `Bᵀ: [rank, cols]` in f32 (buffers reused by
    /// the caller).
    pub fn factors_f32(&self, a_t: &mut Vec<f32>, b_t: &mut Vec<f32>) {
        use half::slice::HalfFloatSliceExt;
        a_t.resize(self.a_t.len(), 0.0);
        b_t.resize(self.b_t.len(), 0.0);
        self.a_t.convert_to_f32_slice(a_t);
        self.b_t.convert_to_f32_slice(b_t);
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        2 * (self.a_t.capacity() + self.b_t.capacity())
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
