//! The rank-collapse measures of Dong, Cordonnier & Loukas 2021, "Attention is not all you need:
//! pure attention loses rank doubly exponentially with depth", §2.1.
//!
//! - `res(X) = X − 1xᵀ` (§2.1, eq. 2): the part of `X ∈ ℝⁿˣᵈ` (n tokens as rows) not explained by
//!   one token repeated `n` times. The paper takes `x = argmin_x ‖X − 1xᵀ‖`; the reference code
//!   (twistedcubic/attention-rank-collapse) takes the token mean. [`Centering`] offers both
//!   closed forms: the **mean** (the reference, and the exact argmin for the Frobenius norm) and
//!   the column-wise **median** (the exact argmin of the `‖·‖₁` factor of the composite norm).
//!   The argmin of the composite norm itself has no closed form: [`argmin_residual`] brackets
//!   `min_x ‖X − 1xᵀ‖₁,∞` between a certified lower bound and the best attained value.
//! - `‖X‖₁,∞ = sqrt(‖X‖₁ ‖X‖∞)` (§2.1), with `‖X‖₁` the largest column sum of `|X|` and `‖X‖∞`
//!   the largest row sum (the induced matrix norms), and the Frobenius norm.
//! - the relative residual `‖res(X)‖ / ‖X‖` plotted per layer in the paper's Figure 2.
//!
//! Everything here is plain `f64` on row-major matrices, so that the doubly exponential decay of
//! the bound check is not hidden by `f32` rounding.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

/// A dense row-major `rows × cols` matrix of `f64` (tokens are rows).
#[derive(Debug, Clone, PartialEq)]
pub struct Mat {
    /// Rows (tokens).
    pub rows: usize,
    /// Columns (features).
    pub cols: usize,
    /// `rows·cols` entries, row-major.
    pub data: Vec<f64>,
}

impl Mat {
    /// A matrix from row-major data; errors when the length does not match.
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Result<Self> {
        if data.len() != rows * cols {
            bail!(
                "matrix of {rows}x{cols} needs {} entries, got {}",
                rows * cols,
                data.len()
            );
        }
        Ok(Self { rows, cols, data })
    }

    /// The `rows × cols` zero matrix.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// The identity of size `n`.
    pub fn eye(n: usize) -> Self {
        let mut m = Self::zeros(n, n);
        for i in 0..n {
            m.data[i * n + i] = 1.0;
        }
        m
    }

    /// From rows of equal length.
    pub fn from_rows(rows: &[Vec<f64>]) -> Result<Self> {
        let cols = rows.first().map_or(0, |r| r.len());
        if rows.iter().any(|r| r.len() != cols) {
            bail!("rows of unequal length");
        }
        Self::new(rows.len(), cols, rows.concat())
    }

    /// A 2-D tensor (any float dtype) as a matrix.
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let (rows, cols) = t.dims2()?;
        let data = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        Self::new(rows, cols, data)
    }

    /// Entry `(i, j)`.
    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.cols + j]
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// `self · other`.
    pub fn matmul(&self, other: &Mat) -> Result<Mat> {
        if self.cols != other.rows {
            bail!(
                "cannot multiply {}x{} by {}x{}",
                self.rows,
                self.cols,
                other.rows,
                other.cols
            );
        }
        let mut out = Mat::zeros(self.rows, other.cols);
        for i in 0..self.rows {
            let o = &mut out.data[i * other.cols..(i + 1) * other.cols];
            for (k, &a) in self.row(i).iter().enumerate() {
                if a != 0.0 {
                    for (oj, &b) in o.iter_mut().zip(other.row(k)) {
                        *oj += a * b;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The transpose.
    pub fn t(&self) -> Mat {
        let mut out = Mat::zeros(self.cols, self.rows);
        for i in 0..self.rows {
            for j in 0..self.cols {
                out.data[j * self.rows + i] = self.at(i, j);
            }
        }
        out
    }

    /// `self − other` (same shape).
    pub fn sub(&self, other: &Mat) -> Mat {
        Mat {
            rows: self.rows,
            cols: self.cols,
            data: self
                .data
                .iter()
                .zip(&other.data)
                .map(|(a, b)| a - b)
                .collect(),
        }
    }

    /// `‖X‖₁`: the largest column sum of `|X|` (induced ℓ₁ norm).
    pub fn norm_1(&self) -> f64 {
        let mut col = vec![0.0; self.cols];
        for i in 0..self.rows {
            for (c, v) in col.iter_mut().zip(self.row(i)) {
                *c += v.abs();
            }
        }
        col.into_iter().fold(0.0, f64::max)
    }

    /// `‖X‖∞`: the largest row sum of `|X|` (induced ℓ∞ norm).
    pub fn norm_inf(&self) -> f64 {
        (0..self.rows)
            .map(|i| self.row(i).iter().map(|v| v.abs()).sum::<f64>())
            .fold(0.0, f64::max)
    }

    /// The composite norm `‖X‖₁,∞ = sqrt(‖X‖₁ ‖X‖∞)` (§2.1; not a norm, but what the bounds use).
    pub fn norm_1_inf(&self) -> f64 {
        (self.norm_1() * self.norm_inf()).sqrt()
    }

    /// Frobenius norm.
    pub fn norm_fro(&self) -> f64 {
        self.data.iter().map(|v| v * v).sum::<f64>().sqrt()
    }

    /// The norm of a [`Norm`] kind.
    pub fn norm(&self, kind: Norm) -> f64 {
        match kind {
            Norm::L1Inf => self.norm_1_inf(),
            Norm::Frobenius => self.norm_fro(),
        }
    }
}

/// Which matrix norm a residual is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Norm {
    /// `sqrt(‖X‖₁ ‖X‖∞)`, the paper's norm.
    L1Inf,
    /// Frobenius.
    Frobenius,
}

/// The row `x` subtracted in `res(X) = X − 1xᵀ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Centering {
    /// Token mean (the reference code; the Frobenius argmin).
    Mean,
    /// Column-wise median of the tokens (the argmin of `‖X − 1xᵀ‖₁`).
    Median,
}

/// The centre row `x` of `X` under `centering`.
pub fn centre(x: &Mat, centering: Centering) -> Vec<f64> {
    match centering {
        Centering::Mean => {
            let mut m = vec![0.0; x.cols];
            for i in 0..x.rows {
                for (mj, v) in m.iter_mut().zip(x.row(i)) {
                    *mj += v;
                }
            }
            let n = x.rows.max(1) as f64;
            m.iter_mut().for_each(|v| *v /= n);
            m
        }
        Centering::Median => (0..x.cols)
            .map(|j| {
                let mut col: Vec<f64> = (0..x.rows).map(|i| x.at(i, j)).collect();
                col.sort_by(f64::total_cmp);
                let n = col.len();
                match n {
                    0 => 0.0,
                    _ if n % 2 == 1 => col[n / 2],
                    _ => 0.5 * (col[n / 2 - 1] + col[n / 2]),
                }
            })
            .collect(),
    }
}

/// `res(X) = X − 1xᵀ` with `x` the [`centre`] of `X`.
pub fn res(x: &Mat, centering: Centering) -> Mat {
    let c = centre(x, centering);
    let mut out = x.clone();
    for i in 0..x.rows {
        for (v, cj) in out.data[i * x.cols..(i + 1) * x.cols].iter_mut().zip(&c) {
            *v -= cj;
        }
    }
    out
}

/// `‖res(X)‖ / ‖X‖` (0 for the zero matrix).
pub fn relative_residual(x: &Mat, centering: Centering, norm: Norm) -> f64 {
    let whole = x.norm(norm);
    if whole == 0.0 {
        return 0.0;
    }
    res(x, centering).norm(norm) / whole
}

/// `min_x ‖X − 1xᵀ‖₁,∞`, the paper's `res` (§2.1: `x = argmin_x ‖X − 1xᵀ‖`), bracketed.
///
/// The composite norm's argmin has no closed form, so both ends are computed exactly:
/// - `upper`: the smaller of the mean- and median-centred `‖res(X)‖₁,∞` (attained values);
/// - `lower`: `sqrt(min_x ‖X − 1xᵀ‖₁ · min_x ‖X − 1xᵀ‖∞)` with the first factor exact (the
///   column median, as `‖·‖₁` is a max of per-column sums) and the second bounded below by half
///   the largest ℓ₁ distance between two rows (triangle inequality:
///   `max(‖a − x‖₁, ‖b − x‖₁) ≥ ‖a − b‖₁/2`).
///
/// `lower ≤ min_x ‖X − 1xᵀ‖₁,∞ ≤ upper`; for two tokens both ends meet.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ArgminBracket {
    /// A lower bound on the argmin residual.
    pub lower: f64,
    /// An attained (upper) value of the argmin residual.
    pub upper: f64,
}

/// The [`ArgminBracket`] of `X` (absolute, not relative).
pub fn argmin_residual(x: &Mat) -> ArgminBracket {
    let median = res(x, Centering::Median);
    let upper = median
        .norm_1_inf()
        .min(res(x, Centering::Mean).norm_1_inf());
    let mut half_diameter = 0.0f64;
    for i in 0..x.rows {
        for k in i + 1..x.rows {
            let d: f64 = x
                .row(i)
                .iter()
                .zip(x.row(k))
                .map(|(a, b)| (a - b).abs())
                .sum();
            half_diameter = half_diameter.max(0.5 * d);
        }
    }
    ArgminBracket {
        lower: (median.norm_1() * half_diameter).sqrt().min(upper),
        upper,
    }
}

/// [`argmin_residual`] relative to `‖X‖₁,∞` (zeros for the zero matrix).
pub fn relative_argmin_residual(x: &Mat) -> ArgminBracket {
    let whole = x.norm_1_inf();
    if whole == 0.0 {
        return ArgminBracket {
            lower: 0.0,
            upper: 0.0,
        };
    }
    let b = argmin_residual(x);
    ArgminBracket {
        lower: b.lower / whole,
        upper: b.upper / whole,
    }
}

/// The best rank-1 approximation `σ₁u₁v₁ᵀ` of `X` (in Frobenius and spectral norm), by power
/// iteration on `XᵀX`; the reference code uses it for chained attention products.
pub fn rank1_approx(x: &Mat) -> Mat {
    let (n, d) = (x.rows, x.cols);
    if n == 0 || d == 0 {
        return x.clone();
    }
    // Start from the column sums (never orthogonal to the top singular vector of a matrix with
    // a dominant common row, the case of interest), fall back to ones.
    let mut v: Vec<f64> = (0..d)
        .map(|j| (0..n).map(|i| x.at(i, j)).sum::<f64>() + 1e-3 * (j as f64 + 1.0))
        .collect();
    let mut u = vec![0.0; n];
    for _ in 0..200 {
        for (i, ui) in u.iter_mut().enumerate() {
            *ui = x.row(i).iter().zip(&v).map(|(a, b)| a * b).sum();
        }
        let mut w = vec![0.0; d];
        for (i, &ui) in u.iter().enumerate() {
            for (wj, a) in w.iter_mut().zip(x.row(i)) {
                *wj += a * ui;
            }
        }
        let norm = w.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm == 0.0 {
            return Mat::zeros(n, d);
        }
        let change: f64 = w
            .iter()
            .zip(&v)
            .map(|(a, b)| (a / norm - b).abs())
            .sum::<f64>();
        v = w.into_iter().map(|a| a / norm).collect();
        if change < 1e-13 {
            break;
        }
    }
    for (i, ui) in u.iter_mut().enumerate() {
        *ui = x.row(i).iter().zip(&v).map(|(a, b)| a * b).sum();
    }
    let mut out = Mat::zeros(n, d);
    for (row, ui) in out.data.chunks_mut(d).zip(&u) {
        for (dst, vj) in row.iter_mut().zip(&v) {
            *dst = ui * vj;
        }
    }
    out
}

/// `‖X − rank1(X)‖ / ‖X‖`: the relative distance to the nearest rank-1 matrix (Frobenius-best).
pub fn relative_rank1_residual(x: &Mat, norm: Norm) -> f64 {
    let whole = x.norm(norm);
    if whole == 0.0 {
        return 0.0;
    }
    x.sub(&rank1_approx(x)).norm(norm) / whole
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: &[&[f64]]) -> Mat {
        Mat::from_rows(&rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn norms_match_hand_computed_values() {
        // |X| column sums: 1+3 = 4, 2+4 = 6 → ‖X‖₁ = 6; row sums 3, 7 → ‖X‖∞ = 7.
        let x = m(&[&[1.0, -2.0], &[-3.0, 4.0]]);
        assert_eq!(x.norm_1(), 6.0);
        assert_eq!(x.norm_inf(), 7.0);
        assert!((x.norm_1_inf() - 42f64.sqrt()).abs() < 1e-12);
        assert!((x.norm_fro() - 30f64.sqrt()).abs() < 1e-12);
        // A row vector: ‖·‖₁ is the largest entry, ‖·‖∞ the entry sum.
        let r = m(&[&[1.0, 2.0, -3.0]]);
        assert_eq!((r.norm_1(), r.norm_inf()), (3.0, 6.0));
    }

    #[test]
    fn rank_one_input_has_zero_residual() {
        let x = m(&[&[1.0, -2.0, 0.5], &[1.0, -2.0, 0.5], &[1.0, -2.0, 0.5]]);
        for c in [Centering::Mean, Centering::Median] {
            for n in [Norm::L1Inf, Norm::Frobenius] {
                assert_eq!(relative_residual(&x, c, n), 0.0);
            }
        }
        // uvᵀ with u not constant is rank 1 but not token-uniform: the rank-1 residual is 0.
        let y = m(&[&[1.0, 2.0], &[-2.0, -4.0], &[3.0, 6.0]]);
        assert!(relative_rank1_residual(&y, Norm::Frobenius) < 1e-12);
        assert!(relative_residual(&y, Centering::Mean, Norm::Frobenius) > 0.5);
    }

    #[test]
    fn residual_by_hand() {
        // Mean row (2, 0): res = [[-1, 1], [1, -1]]; ‖res‖₁ = 2, ‖res‖∞ = 2, ‖res‖_F = 2.
        let x = m(&[&[1.0, 1.0], &[3.0, -1.0]]);
        let r = res(&x, Centering::Mean);
        assert_eq!(r.data, vec![-1.0, 1.0, 1.0, -1.0]);
        assert_eq!(r.norm_1_inf(), 2.0);
        assert_eq!(r.norm_fro(), 2.0);
        // Median of 3 rows is the middle value per column.
        let z = m(&[&[0.0, 10.0], &[1.0, -5.0], &[100.0, 0.0]]);
        assert_eq!(centre(&z, Centering::Median), vec![1.0, 0.0]);
        // The median centre is never worse than the mean for ‖·‖₁.
        let rm = res(&z, Centering::Median).norm_1();
        let ra = res(&z, Centering::Mean).norm_1();
        assert!(rm <= ra + 1e-12, "{rm} > {ra}");
    }

    #[test]
    fn argmin_bracket_is_exact_for_two_tokens() {
        // Rows a, b: min f = max_j |a_j − b_j| = 4, min g = ‖a − b‖₁/2 = 7/2, both at the
        // midpoint, so the argmin residual is sqrt(4 · 3.5) and both ends equal it.
        let x = m(&[&[1.0, -2.0, 0.0], &[-1.0, 2.0, 1.0]]);
        let b = argmin_residual(&x);
        assert!((b.lower - 14f64.sqrt()).abs() < 1e-12, "{b:?}");
        assert!((b.upper - 14f64.sqrt()).abs() < 1e-12, "{b:?}");
    }

    #[test]
    fn argmin_bracket_contains_a_grid_minimum() {
        // 4 tokens in 2-D: brute-force min over x on a fine grid lies inside [lower, upper].
        let x = m(&[&[0.0, 0.0], &[3.0, 1.0], &[1.0, 4.0], &[5.0, -2.0]]);
        let b = argmin_residual(&x);
        let mut best = f64::INFINITY;
        for i in 0..=300 {
            for j in 0..=300 {
                let c = [-1.0 + 7.0 * i as f64 / 300.0, -3.0 + 8.0 * j as f64 / 300.0];
                let r = Mat::new(
                    4,
                    2,
                    x.data
                        .iter()
                        .enumerate()
                        .map(|(k, v)| v - c[k % 2])
                        .collect(),
                )
                .unwrap();
                best = best.min(r.norm_1_inf());
            }
        }
        assert!(
            b.lower <= best + 1e-9 && best <= b.upper + 1e-9,
            "{b:?} vs grid {best}"
        );
        assert!(b.lower < b.upper, "{b:?}");
        let rel = relative_argmin_residual(&x);
        assert!((rel.upper * x.norm_1_inf() - b.upper).abs() < 1e-12);
    }

    #[test]
    fn matmul_and_transpose() {
        let a = m(&[&[1.0, 2.0], &[3.0, 4.0]]);
        let b = a.matmul(&a.t()).unwrap();
        assert_eq!(b.data, vec![5.0, 11.0, 11.0, 25.0]);
        assert!(a.matmul(&Mat::zeros(3, 1)).is_err());
    }
}
