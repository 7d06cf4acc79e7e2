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
