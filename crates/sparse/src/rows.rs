//! What every sparse layout offers the matmul driver ([`crate::matmul`]): its shape, its
//! non-zeros row by row, and dot products of one weight row with a few input rows.

use crate::Isa;

/// A sparse `rows × cols` matrix readable row by row.
pub(crate) trait SparseRows: Sync {
    /// `(rows, cols)`.
    fn shape(&self) -> (usize, usize);

    /// The stored entries `(column, value)` of row `r`, columns increasing (explicitly stored
    /// zeros, such as N:M padding, may appear).
    fn nonzeros(&self, r: usize) -> impl Iterator<Item = (usize, f32)> + '_;

    /// `Σ_c W[r, c] · x_i[c]` for the `T` input rows `xs`, each of `cols` values.
    ///
    /// The default is the portable loop over [`Self::nonzeros`]; layouts override it with AVX2
    /// kernels when `isa` allows.
    fn dot<const T: usize>(&self, isa: Isa, r: usize, xs: [&[f32]; T]) -> [f32; T] {
        let _ = isa;
        dot_scalar(self, r, xs)
    }
}

/// The portable reference dot product of row `r` with `T` input rows.
#[inline]
pub(crate) fn dot_scalar<M: SparseRows + ?Sized, const T: usize>(
    m: &M,
    r: usize,
    xs: [&[f32]; T],
) -> [f32; T] {
    let mut acc = [0f32; T];
    for (c, v) in m.nonzeros(r) {
        for i in 0..T {
            acc[i] += v * xs[i][c];
        }
    }
    acc
}
