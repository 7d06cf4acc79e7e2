//! The path decomposition (Dong, Cordonnier & Loukas 2021, "Attention is not all you need: pure
//! attention loses rank doubly exponentially with depth", §3, eq. 5 and Figure 3).
//!
//! A SAN with skip connections, `L` layers and `H` heads per layer is a sum over the `(H+1)ᴸ`
//! paths that at each layer either take one of the `H` heads or the skip; a path through `k`
//! heads (length `k`) is a product of `k` attention matrices `P_k⋯P_1`. Among all paths the share
//! of length `k` is `C(L,k)·Hᵏ/(H+1)ᴸ` ([`path_share`]), a binomial concentrated on lengths near
//! `L·H/(H+1)`. Each single-head path collapses to rank 1 with its length; we sample paths from a
//! real model's attention ([`sample_path`], [`chained_product`]) and measure how close their
//! product is to rank 1.

use crate::residual::{relative_rank1_residual, relative_residual, Centering, Mat, Norm};
use anyhow::{bail, Result};
use candle_core::Tensor;
use rand::seq::index::sample;
use rand::Rng;

/// `ln C(n, k)`.
fn ln_choose(n: usize, k: usize) -> f64 {
    (1..=k)
        .map(|i| ((n - k + i) as f64).ln() - (i as f64).ln())
        .sum()
}

/// Share of the `(H+1)ᴸ` paths that go through exactly `k` heads: `C(L,k)·Hᵏ/(H+1)ᴸ`.
pub fn path_share(n_layer: usize, n_head: usize, k: usize) -> f64 {
    if k > n_layer {
        return 0.0;
    }
    let h = n_head as f64;
    (ln_choose(n_layer, k) + k as f64 * h.ln() - n_layer as f64 * (h + 1.0).ln()).exp()
}

/// A single-head path: the layers it visits (increasing) and the head taken at each.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Path {
    /// Visited layers, increasing.
    pub layers: Vec<usize>,
    /// Head per visited layer.
    pub heads: Vec<usize>,
}

/// A uniformly random path of `length` distinct layers (as the reference code samples them).
pub fn sample_path(rng: &mut impl Rng, length: usize, n_layer: usize, n_head: usize) -> Path {
    let mut layers = sample(rng, n_layer, length.min(n_layer)).into_vec();
    layers.sort_unstable();
    let heads = layers.iter().map(|_| rng.gen_range(0..n_head)).collect();
    Path { layers, heads }
}

/// `P = A_{l_k,h_k} ⋯ A_{l_1,h_1}` for per-layer attention probabilities `attention[l]: [H,t,t]`:
/// the token-mixing matrix of the path (later layers multiply on the left, as they act on
/// `A_{l_1} X` after it).
pub fn chained_product(attention: &[Tensor], path: &Path) -> Result<Mat> {
    let mut p: Option<Tensor> = None;
    for (&l, &h) in path.layers.iter().zip(&path.heads) {
        let Some(a) = attention.get(l) else {
            bail!("path visits layer {l} of {}", attention.len());
        };
        let a = a.get(h)?.to_dtype(candle_core::DType::F64)?;
        p = Some(match p {
            None => a,
            Some(prev) => a.matmul(&prev)?,
        });
    }
    match p {
        Some(p) => Mat::from_tensor(&p),
        None => bail!("empty path"),
    }
}

/// How far a path product is from rank 1.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PathResidual {
    /// `‖P − rank1(P)‖₁,∞ / ‖P‖₁,∞` with the best (SVD) rank-1 approximation, as the reference.
    pub rank1: f64,
    /// `‖res(P)‖₁,∞ / ‖P‖₁,∞` with the token-mean centre (distance to `1xᵀ`).
    pub token_uniform: f64,
}

/// Both residual ratios of a path product.
pub fn path_residual(p: &Mat) -> PathResidual {
    PathResidual {
        rank1: relative_rank1_residual(p, Norm::L1Inf),
        token_uniform: relative_residual(p, Centering::Mean, Norm::L1Inf),
    }
}

/// Median and quartiles of a sample.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Quartiles {
    /// 25th percentile.
    pub q1: f64,
    /// Median.
    pub median: f64,
    /// 75th percentile.
    pub q3: f64,
}

impl Quartiles {
    /// Quartiles (nearest rank) of `v`; zeros when empty.
    pub fn of(v: &[f64]) -> Self {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let at = |q: f64| -> f64 {
            if s.is_empty() {
                0.0
            } else {
                s[((s.len() - 1) as f64 * q).round() as usize]
            }
        };
        Self {
            q1: at(0.25),
            median: at(0.5),
            q3: at(0.75),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::SeedableRng;

    #[test]
    fn shares_form_a_binomial() {
        let total: f64 = (0..=12).map(|k| path_share(12, 12, k)).sum();
        assert!((total - 1.0).abs() < 1e-12);
        // L = 2, H = 1: paths skip-skip, skip-head, head-skip, head-head → 1/4, 2/4, 1/4.
        assert!((path_share(2, 1, 1) - 0.5).abs() < 1e-15);
        assert!((path_share(2, 1, 0) - 0.25).abs() < 1e-15);
        assert_eq!(path_share(2, 1, 3), 0.0);
    }

    #[test]
    fn paths_are_sorted_and_distinct() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        for _ in 0..50 {
            let p = sample_path(&mut rng, 4, 10, 3);
            assert_eq!(p.layers.len(), 4);
            assert!(p.layers.windows(2).all(|w| w[0] < w[1]));
            assert!(p.heads.iter().all(|&h| h < 3));
        }
    }

    #[test]
    fn product_order_and_uniform_collapse() -> Result<()> {
        let dev = Device::Cpu;
        // Layer 0: identity; layer 1: uniform 1/2. A_1·A_0 = uniform → exactly token-uniform.
        let a0 = Tensor::new(&[[[1f32, 0.], [0., 1.]]], &dev)?;
        let a1 = Tensor::new(&[[[0.5f32, 0.5], [0.5, 0.5]]], &dev)?;
        let path = Path {
            layers: vec![0, 1],
            heads: vec![0, 0],
        };
        let p = chained_product(&[a0.clone(), a1], &path)?;
        let r = path_residual(&p);
        assert!(r.rank1 < 1e-12 && r.token_uniform < 1e-12, "{r:?}");
        let i = chained_product(
            &[a0],
            &Path {
                layers: vec![0],
                heads: vec![0],
            },
        )?;
        assert!(path_residual(&i).token_uniform > 0.4);
        Ok(())
    }
}
