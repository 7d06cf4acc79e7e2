//! Dense f32 products on row-major slices, `c = a·b` or `c += a·b` with either operand read
//! transposed in place: the three products of a linear layer `y = x Wᵀ` in training
//! (`y = x·Wᵀ`, `∂x = ∂y·W`, `∂W += ∂yᵀ·x`), each one single-threaded `gemm` call, no copies.

/// How an operand is stored: as the matrix itself, or as its transpose (row-major either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Stored as the `rows × cols` matrix it stands for.
    AsIs,
    /// Stored as the `cols × rows` transpose of the matrix it stands for.
    Transposed,
}

impl Layout {
    /// (row stride, column stride) of a `rows × cols` operand stored this way.
    fn strides(self, rows: usize, cols: usize) -> (isize, isize) {
        match self {
            Layout::AsIs => (cols as isize, 1),
            Layout::Transposed => (1, rows as isize),
        }
    }
}

/// `c ← a·b` (or `c ← c + a·b` when `accumulate`) for `a: m × k`, `b: k × n` stored as
/// `a_layout`, `b_layout` say, and `c: m × n` row-major.
///
/// # Panics
/// When a slice's length is not the size its shape gives.
pub fn matmul(
    c: &mut [f32],
    (a, a_layout): (&[f32], Layout),
    (b, b_layout): (&[f32], Layout),
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
) {
    assert_eq!(a.len(), m * k, "lhs must hold m·k elements");
    assert_eq!(b.len(), k * n, "rhs must hold k·n elements");
    assert_eq!(c.len(), m * n, "output must hold m·n elements");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    let (a_rs, a_cs) = a_layout.strides(m, k);
    let (b_rs, b_cs) = b_layout.strides(k, n);
    // SAFETY: the lengths were checked above, so every element the shapes and strides address
    // lies inside its slice; `c` is borrowed mutably, so nothing else touches it.
    unsafe {
        gemm::gemm::<f32>(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// A `rows × cols` matrix inside a slice: element `(i, j)` at `i·row_stride + j·col_stride`
/// (a head's columns of a fused `qkv` row, a transpose, ...).
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a> {
    /// The elements the view reads.
    pub data: &'a [f32],
    /// Rows and columns.
    pub shape: (usize, usize),
    /// Row and column strides.
    pub strides: (usize, usize),
}

impl Strided<'_> {
    /// The last element's index + 1, checked against the slice.
    fn check(&self, what: &str) {
        let (r, c) = self.shape;
        if r > 0 && c > 0 {
            let last = (r - 1) * self.strides.0 + (c - 1) * self.strides.1;
            assert!(last < self.data.len(), "{what} view reaches past its slice");
        }
    }
}

/// `c ← scale·a·b` (or `c ← c + scale·a·b` when `accumulate`) for strided views `a: m × k`,
/// `b: k × n` and `c: m × n` (row stride `c_row_stride`, columns contiguous) starting at
/// `c[0]`.
///
/// # Panics
/// When the shapes disagree or a view reaches past its slice.
pub fn matmul_strided(
    (c, c_row_stride): (&mut [f32], usize),
    a: Strided,
    b: Strided,
    scale: f32,
    accumulate: bool,
) {
    let ((m, k), (k2, n)) = (a.shape, b.shape);
    assert_eq!(k, k2, "inner dimensions differ");
    a.check("lhs");
    b.check("rhs");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * c_row_stride + n <= c.len(),
        "output view reaches past its slice"
    );
    if k == 0 {
        assert!(accumulate, "an empty product only accumulates");
        return;
    }
    // SAFETY: every index the shapes and strides address was checked to lie in its slice;
    // `c` is borrowed mutably, so nothing else touches it.
    unsafe {
        gemm::gemm::<f32>(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_row_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.strides.1 as isize,
            a.strides.0 as isize,
            b.data.as_ptr(),
            b.strides.1 as isize,
            b.strides.0 as isize,
            1.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::lcg_values;

    fn reference(
        a: &[f32],
        at: bool,
        b: &[f32],
        bt: bool,
        (m, n, k): (usize, usize, usize),
    ) -> Vec<f64> {
        let ai = |i: usize, l: usize| if at { a[l * m + i] } else { a[i * k + l] } as f64;
        let bi = |l: usize, j: usize| if bt { b[j * k + l] } else { b[l * n + j] } as f64;
        (0..m * n)
            .map(|ij| (0..k).map(|l| ai(ij / n, l) * bi(l, ij % n)).sum())
            .collect()
    }

    #[test]
    fn every_layout_and_accumulation_matches_the_triple_loop() {
        let (m, n, k) = (7, 5, 19);
        let a = lcg_values(m * k, 1, -1.0, 1.0);
        let b = lcg_values(k * n, 2, -1.0, 1.0);
        for at in [false, true] {
            for bt in [false, true] {
                let layout = |t| if t { Layout::Transposed } else { Layout::AsIs };
                let want = reference(&a, at, &b, bt, (m, n, k));
                let mut c = vec![f32::NAN; m * n];
                matmul(&mut c, (&a, layout(at)), (&b, layout(bt)), (m, n, k), false);
                for (x, y) in c.iter().zip(&want) {
                    assert!((*x as f64 - y).abs() < 1e-5, "{at} {bt}: {x} vs {y}");
                }
                matmul(&mut c, (&a, layout(at)), (&b, layout(bt)), (m, n, k), true);
                for (x, y) in c.iter().zip(&want) {
                    assert!(
                        (*x as f64 - 2.0 * y).abs() < 1e-5,
                        "accumulated {x} vs 2·{y}"
                    );
                }
            }
        }
    }

    #[test]
    fn strided_views_match_the_triple_loop() {
        // a: 2 x 4 as columns 2..6 of rows of 9; b: 4 x 2 as the transpose of a 2 x 4 block.
        let big = lcg_values(40, 3, -1.0, 1.0);
        let a = Strided {
            data: &big[2..],
            shape: (2, 4),
            strides: (9, 1),
        };
        let b = Strided {
            data: &big[1..],
            shape: (4, 2),
            strides: (1, 5),
        };
        let mut c = [7.0f32; 2 * 6];
        matmul_strided((&mut c[1..], 6), a, b, 0.5, false);
        for i in 0..2 {
            for j in 0..2 {
                let want: f32 = (0..4)
                    .map(|l| big[2 + i * 9 + l] * big[1 + l + j * 5])
                    .sum();
                assert!((c[1 + i * 6 + j] - 0.5 * want).abs() < 1e-5);
            }
        }
        assert_eq!(c[0], 7.0, "outside the output view");
        assert_eq!(c[3], 7.0, "between output rows");
    }

    #[test]
    fn empty_inner_dimension_clears_or_keeps() {
        let mut c = vec![3.0; 6];
        matmul(
            &mut c,
            (&[], Layout::AsIs),
            (&[], Layout::AsIs),
            (2, 3, 0),
            true,
        );
        assert_eq!(c, vec![3.0; 6]);
        matmul(
            &mut c,
            (&[], Layout::AsIs),
            (&[], Layout::AsIs),
            (2, 3, 0),
            false,
        );
        assert_eq!(c, vec![0.0; 6]);
    }

    #[test]
    #[should_panic(expected = "lhs must hold")]
    fn wrong_lengths_panic() {
        let mut c = vec![0.0; 4];
        matmul(
            &mut c,
            (&[1.0; 3], Layout::AsIs),
            (&[1.0; 4], Layout::AsIs),
            (2, 2, 2),
            false,
        );
    }
}
