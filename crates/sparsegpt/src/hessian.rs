//! The layer-wise Hessian of SparseGPT (Frantar & Alistarh 2023, §3.1 and §3.2 "Hessian
//! synchronization"): for the reconstruction loss `‖WX − ŴX‖²` of a linear layer with
//! calibration inputs `X` (`d_col × n` tokens), every row shares `H = 2XXᵀ / n`.
//!
//! [`Gram`] accumulates `Σ x xᵀ` over the calibration tokens (f32 products per segment added
//! into f64), which also gives Wanda's input norms `‖X_j‖₂` (its diagonal) and the exact
//! reconstruction error of any pruned weight ([`Gram::output_energy`]).
//!
//! [`InverseCholesky`] dampens `H` by a fraction of its mean diagonal (the reference's
//! `percdamp = 0.01`), inverts it and takes the upper Cholesky factor `U` of `H⁻¹ = UᵀU`
//! (faer, f64): Algorithm 1's line 3, `H⁻¹ ← Cholesky(H⁻¹)ᵀ`. Row `j` of `U` holds, from
//! column `j` on, the `[H⁻¹]` row of the OBS update restricted to the not-yet-pruned columns.

use anyhow::{bail, Result};
use candle_core::Tensor;
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::linalg::solvers::DenseSolveCore;
use faer::{Accum, Mat, MatRef, Par, Side};

/// `Σ x xᵀ` over calibration tokens, `dim × dim`.
#[derive(Debug, Clone)]
pub struct Gram {
    dim: usize,
    tokens: usize,
    /// Lower triangle accumulated in f64 (the upper one is mirrored by [`Gram::matrix`]).
    sum: Mat<f64>,
    scratch: Mat<f32>,
}

impl Gram {
    /// An empty accumulator for inputs of `dim` features.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            tokens: 0,
            sum: Mat::zeros(dim, dim),
            scratch: Mat::zeros(dim, dim),
        }
    }

    /// Input features.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Tokens accumulated (the paper's `n`).
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Adds the tokens of `x`, row-major `[t, dim]`.
    pub fn add(&mut self, x: &[f32]) -> Result<()> {
        if x.is_empty() || !x.len().is_multiple_of(self.dim) {
            bail!(
                "calibration input of {} values is not [t, {}]",
                x.len(),
                self.dim
            );
        }
        if x.iter().any(|v| !v.is_finite()) {
            bail!("calibration activations hold NaN or infinite values");
        }
        let t = x.len() / self.dim;
        let x = MatRef::from_row_major_slice(x, t, self.dim);
        // Only the lower triangle of XᵀX: half the work of a full GEMM.
        tri_matmul(
            self.scratch.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Replace,
            x.transpose(),
            BlockStructure::Rectangular,
            x,
            BlockStructure::Rectangular,
            1.0f32,
            Par::rayon(0),
        );
        for j in 0..self.dim {
            for i in j..self.dim {
                self.sum[(i, j)] += self.scratch[(i, j)] as f64;
            }
        }
        self.tokens += t;
        Ok(())
    }

    /// Adds the rows of a `[t, dim]` tensor.
    pub fn add_tensor(&mut self, x: &Tensor) -> Result<()> {
        let x = x
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        self.add(&x)
    }

    /// `Σ x xᵀ`, both triangles.
    pub fn matrix(&self) -> Mat<f64> {
        Mat::from_fn(self.dim, self.dim, |i, j| {
            if i >= j {
                self.sum[(i, j)]
            } else {
                self.sum[(j, i)]
            }
        })
    }

    /// `‖X_j‖₂` of every input feature `j`: Wanda's activation norms.
    pub fn column_norms(&self) -> Vec<f32> {
        (0..self.dim)
            .map(|j| self.sum[(j, j)].max(0.0).sqrt() as f32)
            .collect()
    }

    /// `Σ_rows δ_r (Σ x xᵀ) δ_rᵀ` for `delta: [rows, dim]`: `‖δX‖²`, the squared output error of
    /// the weight change `δ` summed over calibration tokens (f32 GEMM, f64 sums).
    pub fn output_energy(&self, delta: &[f32], rows: usize) -> f64 {
        let g = Mat::from_fn(self.dim, self.dim, |i, j| {
            (if i >= j {
                self.sum[(i, j)]
            } else {
                self.sum[(j, i)]
            }) as f32
        });
        let d = MatRef::from_row_major_slice(delta, rows, self.dim);
        let mut dg = Mat::<f32>::zeros(rows, self.dim);
        faer::linalg::matmul::matmul(
            dg.as_mut(),
            Accum::Replace,
            d,
            g.as_ref(),
            1.0f32,
            Par::rayon(0),
        );
        let mut total = 0.0;
        for r in 0..rows {
            for c in 0..self.dim {
                total += dg[(r, c)] as f64 * delta[r * self.dim + c] as f64;
            }
        }
        total
    }
}

/// `U` with `UᵀU = (H + λI)⁻¹`, row-major f32, plus how `H` was conditioned.
#[derive(Debug, Clone)]
pub struct InverseCholesky {
    /// Size.
    pub dim: usize,
    /// Upper-triangular factor, row-major `dim × dim`.
    pub upper: Vec<f32>,
    /// λ as a fraction of `mean(diag H)` that made the factorisation succeed.
    pub damp_fraction: f64,
    /// Times the damping had to be raised (×10) before Cholesky succeeded.
    pub retries: usize,
    /// Input features never active in calibration (`H_jj = 0`): set to 1 on the diagonal and
    /// their weights zeroed, as the reference does.
    pub dead: Vec<bool>,
}

impl InverseCholesky {
    /// `U[i, j]`.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.upper[i * self.dim + j]
    }
}

/// Most damping tried before giving up: λ = mean(diag H).
const MAX_DAMP_FRACTION: f64 = 1.0;

/// Builds `U` from the accumulated Gram matrix with damping `percdamp · mean(diag H)`, raised
/// ten-fold while Cholesky fails (each retry is counted in [`InverseCholesky::retries`]).
pub fn inverse_cholesky(gram: &Gram, percdamp: f64) -> Result<InverseCholesky> {
    let n = gram.dim;
    if gram.tokens == 0 {
        bail!("no calibration tokens reached this layer");
    }
    if percdamp <= 0.0 || !percdamp.is_finite() {
        bail!("damping must be positive, got {percdamp}");
    }
    // H = 2 XXᵀ / n (§3.1); the scale does not change the update but keeps λ comparable.
    let scale = 2.0 / gram.tokens as f64;
    let mut h = gram.matrix();
    let mut dead = vec![false; n];
    for (j, d) in dead.iter_mut().enumerate() {
        if h[(j, j)] == 0.0 {
            *d = true;
        }
    }
    let mut mean_diag = 0.0;
    for j in 0..n {
        for i in 0..n {
            h[(i, j)] *= scale;
        }
        if dead[j] {
            h[(j, j)] = 1.0;
        }
        mean_diag += h[(j, j)];
    }
    mean_diag /= n as f64;
    let mut damp_fraction = percdamp;
    let mut retries = 0;
    loop {
        let mut damped = h.clone();
        for j in 0..n {
            damped[(j, j)] += damp_fraction * mean_diag;
        }
        if let Some(upper) = upper_factor_of_inverse(&damped) {
            return Ok(InverseCholesky {
                dim: n,
                upper,
                damp_fraction,
                retries,
                dead,
            });
        }
        if damp_fraction >= MAX_DAMP_FRACTION {
            bail!(
                "Cholesky of the layer Hessian failed even with damping {damp_fraction} x mean diagonal"
            );
        }
        damp_fraction = (damp_fraction * 10.0).min(MAX_DAMP_FRACTION);
        retries += 1;
    }
}

/// `U` (row-major f32) with `UᵀU = H⁻¹`, or `None` when a factorisation meets a non-positive
/// pivot.
fn upper_factor_of_inverse(h: &Mat<f64>) -> Option<Vec<f32>> {
    let n = h.nrows();
    let inverse = h.llt(Side::Lower).ok()?.inverse();
    let llt = inverse.llt(Side::Lower).ok()?;
    let l = llt.L();
    let mut upper = vec![0f32; n * n];
    for i in 0..n {
        for j in i..n {
            // U = Lᵀ: U[i, j] = L[j, i].
            let v = l[(j, i)];
            if !v.is_finite() {
                return None;
            }
            upper[i * n + j] = v as f32;
        }
    }
    Some(upper)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    }

    #[test]
    fn gram_matches_direct_sum_and_energy_matches_output_error() -> Result<()> {
        let (t, d, rows) = (37, 5, 3);
        let x = random(t * d, 1);
        let mut g = Gram::new(d);
        g.add(&x[..10 * d])?;
        g.add(&x[10 * d..])?;
        assert_eq!(g.tokens(), t);
        let m = g.matrix();
        for i in 0..d {
            for j in 0..d {
                let direct: f64 = (0..t)
                    .map(|k| x[k * d + i] as f64 * x[k * d + j] as f64)
                    .sum();
                assert!((m[(i, j)] - direct).abs() < 1e-4, "{i},{j}");
            }
        }
        let delta = random(rows * d, 2);
        let direct: f64 = (0..t)
            .flat_map(|k| (0..rows).map(move |r| (k, r)))
            .map(|(k, r)| {
                let y: f64 = (0..d)
                    .map(|c| delta[r * d + c] as f64 * x[k * d + c] as f64)
                    .sum();
                y * y
            })
            .sum();
        assert!((g.output_energy(&delta, rows) - direct).abs() < 1e-3 * direct);
        assert!(g.add(&[f32::NAN; 5]).is_err());
        Ok(())
    }

    #[test]
    fn inverse_cholesky_factor_reconstructs_the_damped_inverse() -> Result<()> {
        let (t, d) = (50, 6);
        let mut g = Gram::new(d);
        g.add(&random(t * d, 3))?;
        let u = inverse_cholesky(&g, 0.01)?;
        assert_eq!(u.retries, 0);
        // (UᵀU)(H + λI) = I.
        let mut h = g.matrix();
        let scale = 2.0 / t as f64;
        let mean: f64 = (0..d).map(|j| h[(j, j)] * scale).sum::<f64>() / d as f64;
        for i in 0..d {
            for j in 0..d {
                h[(i, j)] *= scale;
            }
            h[(i, i)] += 0.01 * mean;
        }
        for i in 0..d {
            for j in 0..d {
                let mut s = 0.0;
                for k in 0..d {
                    let inv_ik: f64 = (0..d).map(|r| u.at(r, i) as f64 * u.at(r, k) as f64).sum();
                    s += inv_ik * h[(k, j)];
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-3, "({i},{j}) = {s}");
            }
        }
        Ok(())
    }

    #[test]
    fn rank_deficient_inputs_are_dampened_and_dead_features_flagged() -> Result<()> {
        // Feature 2 is never active; features 0 and 1 are identical (H singular).
        let mut x = Vec::new();
        for v in random(20, 4) {
            x.extend([v, v, 0.0]);
        }
        let mut g = Gram::new(3);
        g.add(&x)?;
        let u = inverse_cholesky(&g, 0.01)?;
        assert_eq!(u.dead, [false, false, true]);
        assert!(u.upper.iter().all(|v| v.is_finite()));
        Ok(())
    }
}
