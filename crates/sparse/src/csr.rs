//! Compressed sparse row layout: the stored values of each row, their 16-bit column indices,
//! and row offsets. A weight costs `6(1 − s)` bytes at sparsity `s` (plus 4 bytes a row), so it
//! only beats the bitmap above about 94% sparsity; kept for very sparse matrices.
//!
//! On disk: `<name>.values` f32 `[nnz]`, `<name>.col_idx` u16 `[nnz]` (increasing within a
//! row), `<name>.row_ptr` u32 `[rows + 1]` (`row_ptr[0] = 0`, non-decreasing, last `= nnz`).

use crate::bitmap::VALUE_PAD;
use crate::component::{required, Component, ComponentDType, ComponentSource};
use crate::error::{corrupt, Result, SparseError};
use crate::rows::{dot_scalar, SparseRows};
use crate::Isa;

/// A matrix in CSR layout.
#[derive(Debug, Clone, PartialEq)]
pub struct CsrMatrix {
    rows: usize,
    cols: usize,
    row_ptr: Vec<u32>,
    col_idx: Vec<u16>,
    values: Vec<f32>,
}

/// Widest matrix CSR stores (column indices are 16-bit).
pub const CSR_MAX_COLS: usize = 1 << 16;

impl CsrMatrix {
    /// Encodes the non-zeros of a dense row-major matrix.
    pub fn encode(dense: &[f32], rows: usize, cols: usize) -> Result<Self> {
        assert_eq!(dense.len(), rows * cols, "dense matrix must be rows x cols");
        let unencodable = |reason: String| SparseError::Unencodable {
            layout: "csr".into(),
            reason,
        };
        if cols > CSR_MAX_COLS {
            return Err(unencodable(format!(
                "{cols} columns do not fit 16-bit indices"
            )));
        }
        let mut row_ptr = vec![0u32];
        let (mut col_idx, mut values) = (Vec::new(), Vec::new());
        for row in dense.chunks_exact(cols.max(1)).take(rows) {
            for (c, &w) in row.iter().enumerate() {
                if w != 0.0 {
                    col_idx.push(c as u16);
                    values.push(w);
                }
            }
            let end = u32::try_from(values.len())
                .map_err(|_| unencodable("more than 2^32 non-zeros".into()))?;
            row_ptr.push(end);
        }
        row_ptr.resize(rows + 1, values.len() as u32);
        col_idx.extend([0; VALUE_PAD]);
        values.extend([0.0; VALUE_PAD]);
        Ok(Self {
            rows,
            cols,
            row_ptr,
            col_idx,
            values,
        })
    }

    /// Stored values.
    pub fn nnz(&self) -> usize {
        self.values.len() - VALUE_PAD
    }

    /// Bytes held in memory.
    pub fn heap_bytes(&self) -> usize {
        self.values.len() * 4 + self.col_idx.len() * 2 + self.row_ptr.len() * 4
    }

    /// Bytes on disk.
    pub fn file_bytes(&self) -> usize {
        self.nnz() * 6 + self.row_ptr.len() * 4
    }

    /// The stored arrays.
    pub fn components(&self) -> Vec<Component> {
        let nnz = self.nnz();
        vec![
            Component::f32("values", vec![nnz], &self.values[..nnz]),
            Component::u16("col_idx", vec![nnz], &self.col_idx[..nnz]),
            Component::u32("row_ptr", vec![self.rows + 1], &self.row_ptr),
        ]
    }

    /// Rebuilds the matrix from its components, checking offsets and indices.
    pub fn from_components(
        rows: usize,
        cols: usize,
        src: &mut dyn ComponentSource,
    ) -> Result<Self> {
        let row_ptr = required(src, "row_ptr")?;
        row_ptr.expect(ComponentDType::U32, &[rows + 1])?;
        let row_ptr = row_ptr.to_u32();
        let values = required(src, "values")?;
        let nnz = values.elements();
        values.expect(ComponentDType::F32, &[nnz])?;
        let col_idx = required(src, "col_idx")?;
        col_idx.expect(ComponentDType::U16, &[nnz])?;
        let mut col_idx = col_idx.to_u16();
        if row_ptr[0] != 0 || row_ptr[rows] as usize != nnz {
            return Err(corrupt!(
                "row_ptr runs from {} to {}, expected 0 to {nnz}",
                row_ptr[0],
                row_ptr[rows]
            ));
        }
        if let Some(r) = (0..rows).find(|&r| row_ptr[r] > row_ptr[r + 1]) {
            return Err(corrupt!("row_ptr decreases at row {r}"));
        }
        for r in 0..rows {
            let (a, b) = (row_ptr[r] as usize, row_ptr[r + 1] as usize);
            let idx = &col_idx[a..b];
            if let Some(&c) = idx.iter().find(|&&c| c as usize >= cols) {
                return Err(corrupt!("row {r} has column {c}, matrix has {cols}"));
            }
            if idx.windows(2).any(|w| w[0] >= w[1]) {
                return Err(corrupt!("row {r} column indices are not increasing"));
            }
        }
        let mut values = values.to_f32();
        col_idx.extend([0; VALUE_PAD]);
        values.extend([0.0; VALUE_PAD]);
        Ok(Self {
            rows,
            cols,
            row_ptr,
            col_idx,
            values,
        })
    }

    fn span(&self, r: usize) -> (usize, usize) {
        (self.row_ptr[r] as usize, self.row_ptr[r + 1] as usize)
    }
}

impl SparseRows for CsrMatrix {
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn nonzeros(&self, r: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let (a, b) = self.span(r);
        self.col_idx[a..b]
            .iter()
            .zip(&self.values[a..b])
            .map(|(&c, &v)| (c as usize, v))
    }

    fn dot<const T: usize>(&self, isa: Isa, r: usize, xs: [&[f32]; T]) -> [f32; T] {
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx2() {
            let (a, b) = self.span(r);
            // SAFETY: AVX2/FMA detected; indices were checked `< cols` at load and every
            // `xs[i]` holds `cols` floats; the arrays are padded by VALUE_PAD.
            return unsafe {
                gather_dot(
                    self.col_idx.as_ptr().add(a),
                    self.values.as_ptr().add(a),
                    b - a,
                    xs,
                )
            };
        }
        let _ = isa;
        dot_scalar(self, r, xs)
    }
}

/// `Σ_k values[k] · x_i[col_idx[k]]` with 8-wide gathers.
///
/// # Safety
/// AVX2 and FMA available; `idx` and `vals` readable for `n` rounded up to 8 (padding), every
/// index in range of every `xs[i]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gather_dot<const T: usize>(
    idx: *const u16,
    vals: *const f32,
    n: usize,
    xs: [&[f32]; T],
) -> [f32; T] {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); T];
    let mut k = 0;
    // SAFETY: per the contract; the last partial group is masked so padding indices (0) and
    // values (0) are never used beyond `n`.
    unsafe {
        while k < n {
            let take = (n - k).min(8) as i32;
            let live = _mm256_cmpgt_epi32(
                _mm256_set1_epi32(take),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            );
            let cols = _mm256_cvtepu16_epi32(_mm_loadu_si128(idx.add(k).cast()));
            let v = _mm256_and_ps(_mm256_loadu_ps(vals.add(k)), _mm256_castsi256_ps(live));
            for i in 0..T {
                let x = _mm256_i32gather_ps::<4>(xs[i].as_ptr(), cols);
                acc[i] = _mm256_fmadd_ps(v, x, acc[i]);
            }
            k += 8;
        }
    }
    let mut out = [0f32; T];
    for i in 0..T {
        out[i] = crate::expand::hsum(acc[i]);
    }
    out
}
