//! The sparsity pattern a pruner must reach: a fraction `p` of every layer's weights
//! (unstructured), or `n` zeros in every group of `m` consecutive weights of a row
//! (semi-structured N:M, Mishra et al. 2021; 2:4 is what sparse tensor cores run).

use anyhow::{bail, Context, Result};
use std::fmt;

/// Which weights may be zeroed.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Sparsity {
    /// Any `fraction` of a layer's weights (0 ≤ fraction < 1).
    Unstructured(f64),
    /// `n` of every `m` consecutive weights along the input dimension of a row.
    NM {
        /// Zeros per group.
        n: usize,
        /// Group width.
        m: usize,
    },
}

impl Sparsity {
    /// An unstructured fraction, checked.
    pub fn unstructured(fraction: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&fraction) {
            bail!("sparsity must be in [0, 1), got {fraction}");
        }
        Ok(Self::Unstructured(fraction))
    }

    /// `n:m`, checked (`0 < n < m`).
    pub fn nm(n: usize, m: usize) -> Result<Self> {
        if n == 0 || n >= m {
            bail!("N:M needs 0 < N < M, got {n}:{m}");
        }
        Ok(Self::NM { n, m })
    }

    /// The fraction of weights zeroed.
    pub fn fraction(&self) -> f64 {
        match *self {
            Self::Unstructured(p) => p,
            Self::NM { n, m } => n as f64 / m as f64,
        }
    }

    /// Checks that a `[rows, cols]` layer can carry this pattern.
    pub fn check_shape(&self, rows: usize, cols: usize) -> Result<()> {
        if let Self::NM { m, .. } = *self {
            if !cols.is_multiple_of(m) {
                bail!("{rows}x{cols} layer: {cols} input features are not a multiple of M = {m}");
            }
        }
        Ok(())
    }

    /// Short name for file names and tables (`50%`, `2:4`).
    pub fn label(&self) -> String {
        match *self {
            Self::Unstructured(p) => format!("{}%", (p * 100.0).round()),
            Self::NM { n, m } => format!("{n}:{m}"),
        }
    }
}

impl fmt::Display for Sparsity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Unstructured(p) => write!(f, "unstructured {p}"),
            Self::NM { n, m } => write!(f, "{n}:{m}"),
        }
    }
}

/// Parses `N:M` (`2:4`).
pub fn parse_nm(s: &str) -> Result<Sparsity> {
    let (n, m) = s
        .split_once(':')
        .with_context(|| format!("bad N:M `{s}` (expected e.g. 2:4)"))?;
    let n = n
        .trim()
        .parse()
        .with_context(|| format!("bad N in `{s}`"))?;
    let m = m
        .trim()
        .parse()
        .with_context(|| format!("bad M in `{s}`"))?;
    Sparsity::nm(n, m)
}

/// Weights a `count`-weight group must lose to reach `fraction`, rounded so that consecutive
/// groups add up exactly: the zeros of groups `[0, end)` are `round(fraction · end)`.
pub fn zeros_up_to(fraction: f64, start: usize, end: usize) -> usize {
    let r = |x: usize| (fraction * x as f64).round() as usize;
    r(end) - r(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(parse_nm("2:4").unwrap(), Sparsity::NM { n: 2, m: 4 });
        assert!(parse_nm("4:4").is_err());
        assert!(parse_nm("0:4").is_err());
        assert!(parse_nm("2-4").is_err());
        assert!(Sparsity::unstructured(1.0).is_err());
        assert!(Sparsity::unstructured(-0.1).is_err());
        assert!(Sparsity::nm(2, 4).unwrap().check_shape(3, 6).is_err());
    }

    #[test]
    fn group_counts_add_up_exactly() {
        let p = 0.37;
        let total: usize = (0..10).map(|b| zeros_up_to(p, b * 13, (b + 1) * 13)).sum();
        assert_eq!(total, (p * 130.0f64).round() as usize);
    }
}
