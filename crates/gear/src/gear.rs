//! GEAR (Kang et al. 2024, Alg. 1): a K or V block `X` is stored as
//! `X ≈ D̂ + L + S` — the quantised backbone `D̂ = Quant_b(X − S)` ([`crate::kivi`]), the sparse
//! outliers `S = Filter_s(X)` ([`crate::outliers`]) and a low-rank approximation
//! `L = A Bᵀ` of the remaining residual `R = X − D̂ − S`, rank `r` per head
//! ([`crate::low_rank`]).
//!
//! Every compressed policy is this one composition: with `s = 0` and `r = 0` it is the plain
//! quantiser (`quant`, `kivi`), by construction rather than by a second code path.

use crate::kivi::Backbone;
use crate::low_rank::LowRank;
use crate::outliers::{Outliers, Tails};
use crate::quantize::{Head, QuantizedMatrix};
use anyhow::{bail, Result};
use rand::Rng;

/// The components of a compressed block.
#[derive(Debug, Clone, PartialEq)]
pub struct GearConfig {
    /// Quantised backbone.
    pub backbone: Backbone,
    /// Outlier fraction `s` (0 = none).
    pub outlier: f64,
    /// Outlier tails kept per stripe.
    pub tails: Tails,
    /// Residual rank per head for blocks compressed while decoding (0 = none).
    pub rank: usize,
    /// Residual rank per head for blocks compressed during a multi-token prefill.
    pub prefill_rank: usize,
    /// Power-iteration loops.
    pub loops: usize,
    /// Hold the exact streaming buffer in f16 (as an f16 runtime would) instead of f32.
    pub exact_f16: bool,
}

impl GearConfig {
    /// Checks the components against a `[block, channels]` block of heads of width `head_dim`.
    pub fn check(&self, block: usize, channels: usize, head_dim: usize) -> Result<()> {
        self.backbone.check(block, channels)?;
        if !(0.0..0.5).contains(&self.outlier) {
            bail!("outlier fraction {} must be in [0, 0.5)", self.outlier);
        }
        let max_rank = block.min(head_dim);
        for r in [self.rank, self.prefill_rank] {
            if r > max_rank {
                bail!("rank {r} exceeds the {block}x{head_dim} residual of a head");
            }
        }
        if (self.rank > 0 || self.prefill_rank > 0) && self.loops == 0 {
            bail!("power iteration needs loops >= 1");
        }
        Ok(())
    }
}

/// One compressed `[rows, cols]` K or V block.
#[derive(Debug, Clone)]
pub struct CompressedMatrix {
    /// `D̂`.
    pub quant: QuantizedMatrix,
    /// `S`.
    pub outliers: Outliers,
    /// `L`, one factor pair per head (empty when the rank is 0).
    pub low_rank: Vec<LowRank>,
}

impl CompressedMatrix {
    /// Compresses `x: [rows, cols]` (heads side by side, `head_dim` wide) with residual rank
    /// `rank`. `is_key` picks per-channel (keys) or per-token (values) grouping.
    #[allow(clippy::too_many_arguments)]
    pub fn compress(
        x: &[f32],
        rows: usize,
        cols: usize,
        head_dim: usize,
        is_key: bool,
        config: &GearConfig,
        rank: usize,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let (outliers, mask) =
            Outliers::extract(x, rows, cols, config.outlier, config.tails, is_key)?;
        let mask = (!outliers.is_empty()).then_some(mask);
        let quant = config
            .backbone
            .quantize(x, rows, cols, is_key, mask.as_deref())?;
        let mut m = Self {
            quant,
            outliers,
            low_rank: Vec::new(),
        };
        if rank > 0 {
            let approx = m.decompress();
            let residual: Vec<f32> = x.iter().zip(&approx).map(|(a, b)| a - b).collect();
            let mut head = vec![0f32; rows * head_dim];
            for c0 in (0..cols).step_by(head_dim) {
                for t in 0..rows {
                    head[t * head_dim..(t + 1) * head_dim]
                        .copy_from_slice(&residual[t * cols + c0..t * cols + c0 + head_dim]);
                }
                m.low_rank.push(LowRank::power_iteration(
                    &head,
                    rows,
                    head_dim,
                    rank,
                    config.loops,
                    rng,
                )?);
            }
        }
        Ok(m)
    }

    /// Writes `D̂ + S + L` of `head` into `out: [rows, head.width]`, the layout attention reads.
    pub fn decompress_head(&self, head: Head, out: &mut [f32]) {
        if let Some(lr) = self.sparse_backbone_head(head, out) {
            lr.add_into(out);
        }
    }

    /// Writes `D̂ + S` of `head` into `out: [rows, head.width]` and returns the head's low-rank
    /// factors, for readers that apply `L = A Bᵀ` through its factors ([`crate::attention`]).
    pub fn sparse_backbone_head(&self, head: Head, out: &mut [f32]) -> Option<&LowRank> {
        self.quant.dequantize_head(head, out);
        self.outliers.scatter_head(head, out);
        self.low_rank.get(head.index)
    }

    /// `D̂ + S + L` as `[rows, cols]` row-major.
    pub fn decompress(&self) -> Vec<f32> {
        let (rows, cols) = (self.quant.rows, self.quant.cols);
        let width = self.low_rank.first().map_or(cols, |lr| lr.cols);
        let mut out = vec![0.0; rows * cols];
        let mut head_rows = vec![0.0; rows * width];
        for index in 0..cols / width {
            let head = Head { index, width };
            self.decompress_head(head, &mut head_rows);
            for (t, row) in head_rows.chunks_exact(width).enumerate() {
                out[t * cols + head.channels().start..][..width].copy_from_slice(row);
            }
        }
        out
    }

    /// Bytes by component: (codes, steps and zero points, outliers, low-rank factors).
    pub fn bytes_by_component(&self) -> [usize; 4] {
        [
            self.quant.codes.capacity(),
            2 * (self.quant.scale.capacity() + self.quant.zero.capacity()),
            self.outliers.heap_bytes(),
            self.low_rank.iter().map(LowRank::heap_bytes).sum(),
        ]
    }

    /// Heap bytes held, the low-rank list's own allocation included.
    pub fn heap_bytes(&self) -> usize {
        self.bytes_by_component().iter().sum::<usize>()
            + self.low_rank.capacity() * std::mem::size_of::<LowRank>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Keys-like block: smooth per-channel structure, a few large channels, a spike.
    fn block(rows: usize, cols: usize) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut x: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let (t, c) = (i / cols, i % cols);
                let big = if c % 17 == 0 { 8.0 } else { 1.0 };
                big * ((c as f32 * 0.7).sin() + 0.3 * (t as f32 * 0.1 + c as f32).cos())
                    + rng.gen_range(-0.2f32..0.2)
            })
            .collect();
        x[5 * cols + 3] = 40.0;
        x
    }

    fn rel_err(x: &[f32], y: &[f32]) -> f32 {
        let num: f32 = x.iter().zip(y).map(|(a, b)| (a - b).powi(2)).sum();
        let den: f32 = x.iter().map(|a| a * a).sum();
        (num / den).sqrt()
    }

    fn config(outlier: f64, rank: usize) -> GearConfig {
        GearConfig {
            backbone: Backbone::kcvt(2).unwrap(),
            outlier,
            tails: Tails::Both,
            rank,
            prefill_rank: rank,
            loops: 3,
            exact_f16: false,
        }
    }

    #[test]
    fn each_component_reduces_the_error() -> Result<()> {
        let (rows, cols, hd) = (64, 32, 16);
        let x = block(rows, cols);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut err = |s, r| -> Result<f32> {
            let m =
                CompressedMatrix::compress(&x, rows, cols, hd, true, &config(s, r), r, &mut rng)?;
            Ok(rel_err(&x, &m.decompress()))
        };
        let quant = err(0.0, 0)?;
        let outl = err(0.04, 0)?;
        let gear = err(0.04, 4)?;
        assert!(outl < quant, "outliers {outl} vs quant {quant}");
        assert!(gear < outl, "low rank {gear} vs outliers {outl}");
        Ok(())
    }

    #[test]
    fn all_components_off_is_the_plain_quantiser() -> Result<()> {
        let (rows, cols, hd) = (64, 32, 16);
        let x = block(rows, cols);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        for is_key in [true, false] {
            let m = CompressedMatrix::compress(
                &x,
                rows,
                cols,
                hd,
                is_key,
                &config(0.0, 0),
                0,
                &mut rng,
            )?;
            let q = Backbone::kcvt(2)?.quantize(&x, rows, cols, is_key, None)?;
            assert_eq!(m.decompress(), q.dequantize());
            assert_eq!(m.heap_bytes(), q.heap_bytes());
        }
        Ok(())
    }
}
