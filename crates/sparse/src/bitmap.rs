//! Bitmap layout for unstructured sparsity: one bit per weight (set = stored) and the stored
//! values packed row-major. At sparsity `s` a weight costs `4(1 − s) + 1/8` bytes, less than
//! CSR with 16-bit column indices (`6(1 − s)` bytes) up to `s ≈ 94%`.
//!
//! On disk: `<name>.values` f32 `[nnz]`, `<name>.bitmap` u8 `[rows, ⌈cols/8⌉]`, bit `j` of byte
//! `b` in row `r` standing for column `8b + j`. Row offsets are recomputed from popcounts at
//! load, so nothing redundant is stored.

use crate::component::{required, Component, ComponentDType, ComponentSource};
use crate::error::{corrupt, Result};
use crate::rows::{dot_scalar, SparseRows};
use crate::Isa;

/// Padding after the packed values so a kernel may load 16 floats at any stored position.
pub(crate) const VALUE_PAD: usize = 16;

/// A matrix in the bitmap layout.
#[derive(Debug, Clone, PartialEq)]
pub struct BitmapMatrix {
    rows: usize,
    cols: usize,
    /// `rows × row_bytes` mask bytes.
    bitmap: Vec<u8>,
    /// Packed values, then [`VALUE_PAD`] zeros.
    values: Vec<f32>,
    /// `rows + 1` offsets into `values`.
    row_start: Vec<usize>,
}

impl BitmapMatrix {
    fn row_bytes(cols: usize) -> usize {
        cols.div_ceil(8)
    }

    /// Encodes the non-zeros of a dense row-major matrix.
    pub fn encode(dense: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(dense.len(), rows * cols, "dense matrix must be rows x cols");
        let rb = Self::row_bytes(cols);
        let mut bitmap = vec![0u8; rows * rb];
        let mut values = Vec::new();
        let mut row_start = Vec::with_capacity(rows + 1);
        for (r, row) in dense.chunks_exact(cols.max(1)).take(rows).enumerate() {
            row_start.push(values.len());
            for (c, &w) in row.iter().enumerate() {
                if w != 0.0 {
                    bitmap[r * rb + c / 8] |= 1 << (c % 8);
                    values.push(w);
                }
            }
        }
        row_start.resize(rows + 1, values.len());
        values.extend([0.0; VALUE_PAD]);
        Self {
            rows,
            cols,
            bitmap,
            values,
            row_start,
        }
    }

    /// Stored values.
    pub fn nnz(&self) -> usize {
        self.values.len() - VALUE_PAD
    }

    /// Bytes held in memory (values, bitmap, row offsets).
    pub fn heap_bytes(&self) -> usize {
        self.values.len() * 4 + self.bitmap.len() + self.row_start.len() * 8
    }

    /// Bytes on disk (values and bitmap).
    pub fn file_bytes(&self) -> usize {
        self.nnz() * 4 + self.bitmap.len()
    }

    /// The stored arrays.
    pub fn components(&self) -> Vec<Component> {
        vec![
            Component::f32("values", vec![self.nnz()], &self.values[..self.nnz()]),
            Component::u8(
                "bitmap",
                vec![self.rows, Self::row_bytes(self.cols)],
                &self.bitmap,
            ),
        ]
    }

    /// Rebuilds the matrix from its components, checking that they agree.
    pub fn from_components(
        rows: usize,
        cols: usize,
        src: &mut dyn ComponentSource,
    ) -> Result<Self> {
        let rb = Self::row_bytes(cols);
        let bitmap = required(src, "bitmap")?;
        bitmap.expect(ComponentDType::U8, &[rows, rb])?;
        let bitmap = bitmap.bytes;
        let values = required(src, "values")?;
        let nnz = values.elements();
        values.expect(ComponentDType::F32, &[nnz])?;
        let tail_mask: u8 = if cols.is_multiple_of(8) {
            0
        } else {
            !((1u8 << (cols % 8)) - 1)
        };
        let mut row_start = Vec::with_capacity(rows + 1);
        let mut count = 0usize;
        for (r, row) in bitmap.chunks_exact(rb.max(1)).take(rows).enumerate() {
            row_start.push(count);
            if rb > 0 && row[rb - 1] & tail_mask != 0 {
                return Err(corrupt!("bitmap row {r} marks columns past {cols}"));
            }
            count += row.iter().map(|b| b.count_ones() as usize).sum::<usize>();
        }
        row_start.resize(rows + 1, count);
        if count != nnz {
            return Err(corrupt!(
                "bitmap marks {count} weights but {nnz} values are stored"
            ));
        }
        let mut values = values.to_f32();
        values.extend([0.0; VALUE_PAD]);
        Ok(Self {
            rows,
            cols,
            bitmap,
            values,
            row_start,
        })
    }

    fn row_codes(&self, r: usize) -> &[u8] {
        let rb = Self::row_bytes(self.cols);
        &self.bitmap[r * rb..(r + 1) * rb]
    }
}

impl SparseRows for BitmapMatrix {
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn nonzeros(&self, r: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let vals = &self.values[self.row_start[r]..self.row_start[r + 1]];
        let mut codes = self.row_codes(r).iter().enumerate();
        let mut cur = (0usize, 0u8);
        vals.iter().map(move |&v| {
            while cur.1 == 0 {
                let (b, &code) = codes.next().expect("bitmap and values agree");
                cur = (b, code);
            }
            let c = cur.0 * 8 + cur.1.trailing_zeros() as usize;
            cur.1 &= cur.1 - 1;
            (c, v)
        })
    }

    fn dot<const T: usize>(&self, isa: Isa, r: usize, xs: [&[f32]; T]) -> [f32; T] {
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx2() {
            let codes = self.row_codes(r);
            let full = self.cols / 8;
            let start = self.row_start[r];
            let values = self.values[start..].as_ptr();
            let x = xs.map(|x| x.as_ptr());
            // SAFETY: the kernels' instruction sets were detected (`isa`); `values` is padded by
            // VALUE_PAD and every `xs[i]` holds `cols ≥ 8·full` floats (checked by the driver).
            let (mut acc, used) = unsafe {
                if isa == Isa::Avx512 {
                    crate::expand::bitmap_dot_avx512::<T>(&codes[..full], values, x)
                } else {
                    crate::expand::expand_dot::<T, true>(
                        &crate::expand::BITMAP,
                        &codes[..full],
                        values,
                        x,
                    )
                }
            };
            if full < codes.len() {
                let mut code = codes[full];
                let mut k = start + used;
                while code != 0 {
                    let c = full * 8 + code.trailing_zeros() as usize;
                    for i in 0..T {
                        acc[i] += self.values[k] * xs[i][c];
                    }
                    k += 1;
                    code &= code - 1;
                }
            }
            return acc;
        }
        let _ = isa;
        dot_scalar(self, r, xs)
    }
}
