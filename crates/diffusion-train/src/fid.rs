//! Fréchet distance between Gaussians fitted to feature sets (Heusel et al. 2017, "GANs Trained
//! by a Two Time-Scale Update Rule...", Eq. 6; the Fréchet / 2-Wasserstein distance of Dowson &
//! Landau 1982):
//!
//! ```text
//! d²((m1, C1), (m2, C2)) = |m1 - m2|² + tr(C1 + C2 - 2 (C1^{1/2} C2 C1^{1/2})^{1/2})
//! ```
//!
//! `tr((C1 C2)^{1/2})` is computed through the symmetric form `C1^{1/2} C2 C1^{1/2}`, so both
//! matrix square roots come from faer's symmetric (self-adjoint) eigendecomposition, with
//! eigenvalues that rounding pushed below zero clamped to zero. In ferrite the features are the
//! penultimate layer of our own Fashion-MNIST classifier: a *classifier-feature FID*, not the
//! Inception FID of the papers, so its values are comparable only with each other.

use anyhow::{ensure, Context, Result};
use faer::{Mat, Side};

/// Mean and (unbiased, `n - 1`) covariance of a feature set.
#[derive(Debug, Clone)]
pub struct GaussianStats {
    /// Feature mean.
    pub mean: Vec<f64>,
    /// Feature covariance, `d × d`.
    pub cov: Mat<f64>,
}

impl GaussianStats {
    /// Fits the Gaussian to `n` rows of `dim` features (row-major).
    pub fn fit(features: &[f32], dim: usize) -> Result<Self> {
        ensure!(dim > 0, "feature dimension is zero");
        ensure!(
            features.len() % dim == 0,
            "{} feature values are not rows of {dim}",
            features.len()
        );
        let n = features.len() / dim;
        ensure!(
            n >= 2,
            "need at least 2 feature rows to fit a covariance, got {n}"
        );
        ensure!(
            features.iter().all(|v| v.is_finite()),
            "features contain NaN or infinity"
        );
        let mut mean = vec![0f64; dim];
        for row in features.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let centred = Mat::<f64>::from_fn(n, dim, |i, j| features[i * dim + j] as f64 - mean[j]);
        let cov = (centred.transpose() * &centred) * faer::Scale(1.0 / (n as f64 - 1.0));
        Ok(Self { mean, cov })
    }
}

/// `U diag(sqrt(max(λ, 0))) Uᵀ` of a symmetric positive semi-definite matrix, and the sum of
/// those square-rooted eigenvalues.
fn psd_sqrt(m: &Mat<f64>) -> Result<(Mat<f64>, f64)> {
    let evd = m
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| anyhow::anyhow!("symmetric eigendecomposition failed: {e:?}"))?;
    let u = evd.U();
    let s = evd.S().column_vector();
    let roots: Vec<f64> = (0..s.nrows()).map(|i| s[i].max(0.0).sqrt()).collect();
    let scaled = Mat::<f64>::from_fn(u.nrows(), u.ncols(), |i, j| u[(i, j)] * roots[j]);
    Ok((&scaled * u.transpose(), roots.iter().sum()))
}

/// The Fréchet distance between two fitted Gaussians (Eq. 6 above).
pub fn frechet_distance(a: &GaussianStats, b: &GaussianStats) -> Result<f64> {
    ensure!(
        a.mean.len() == b.mean.len(),
        "feature dimensions differ: {} vs {}",
        a.mean.len(),
        b.mean.len()
    );
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let (sqrt_a, _) = psd_sqrt(&a.cov).context("square root of the first covariance")?;
    let inner = &sqrt_a * &b.cov * &sqrt_a;
    // Symmetrise away the rounding of the two products before the second decomposition.
    let inner = Mat::<f64>::from_fn(inner.nrows(), inner.ncols(), |i, j| {
        0.5 * (inner[(i, j)] + inner[(j, i)])
    });
    let (_, tr_sqrt) = psd_sqrt(&inner).context("square root of C1^1/2 C2 C1^1/2")?;
    let trace = |m: &Mat<f64>| (0..m.nrows()).map(|i| m[(i, i)]).sum::<f64>();
    Ok(mean_term + trace(&a.cov) + trace(&b.cov) - 2.0 * tr_sqrt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeded::{normal, rng, Stream};

    fn gaussian_rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut r = rng(seed, Stream::Sampling, 0);
        (0..n * d).map(|_| normal(&mut r)).collect()
    }

    #[test]
    fn a_set_against_itself_is_zero() {
        let x = gaussian_rows(500, 16, 1);
        let s = GaussianStats::fit(&x, 16).unwrap();
        let d = frechet_distance(&s, &s).unwrap();
        assert!(d.abs() < 1e-8, "{d}");
    }

    #[test]
    fn shifted_set_gives_the_squared_shift() {
        // Same covariance, mean moved by `shift`: the trace term vanishes, d² = |shift|².
        let dim = 8;
        let x = gaussian_rows(400, dim, 2);
        let shift: Vec<f32> = (0..dim).map(|j| 0.25 * j as f32 - 0.5).collect();
        let y: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v + shift[i % dim])
            .collect();
        let a = GaussianStats::fit(&x, dim).unwrap();
        let b = GaussianStats::fit(&y, dim).unwrap();
        let want: f64 = shift.iter().map(|s| (*s as f64).powi(2)).sum();
        let got = frechet_distance(&a, &b).unwrap();
        assert!((got - want).abs() < 1e-6 * want.max(1.0), "{got} vs {want}");
    }

    #[test]
    fn matches_the_closed_form_for_non_commuting_covariances() {
        // C1 = diag(4, 1); C2 = R diag(9, 1/4) Rᵀ with R a 30° rotation (C1 C2 ≠ C2 C1).
        // Closed form in 2-D: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) with M = C1 C2.
        let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
        let c1 = Mat::<f64>::from_fn(2, 2, |i, j| if i == j { [4.0, 1.0][i] } else { 0.0 });
        let r = Mat::<f64>::from_fn(2, 2, |i, j| [[c, -s], [s, c]][i][j]);
        let d2 = Mat::<f64>::from_fn(2, 2, |i, j| if i == j { [9.0, 0.25][i] } else { 0.0 });
        let c2 = &r * &d2 * r.transpose();
        let a = GaussianStats {
            mean: vec![1.0, 2.0],
            cov: c1.clone(),
        };
        let b = GaussianStats {
            mean: vec![-1.0, 0.5],
            cov: c2.clone(),
        };
        let m = &c1 * &c2;
        let tr_m = m[(0, 0)] + m[(1, 1)];
        let det_m = m[(0, 0)] * m[(1, 1)] - m[(0, 1)] * m[(1, 0)];
        let tr_sqrt = (tr_m + 2.0 * det_m.sqrt()).sqrt();
        let want = 4.0 + 2.25 + (5.0 + 9.25) - 2.0 * tr_sqrt;
        let got = frechet_distance(&a, &b).unwrap();
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }

    #[test]
    fn rejects_bad_features() {
        assert!(GaussianStats::fit(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(GaussianStats::fit(&[1.0, 2.0], 2).is_err());
        assert!(GaussianStats::fit(&[1.0, f32::NAN, 0.0, 1.0], 2).is_err());
    }
}
