//! `y = x Wᵀ` for a weight `W: [rows, cols]` stored as GGUF blocks, row-major.
//!
//! The input rows are quantised once to [`BlockQ8`] (so every weight row is met with integer
//! dot products), then the weight rows are split into chunks, several per pool thread, which the
//! threads claim dynamically ([`crate::pool`]). Within a chunk each weight row is multiplied
//! with every input row while it is hot in L1.

use crate::pool::Pool;
use crate::quantize_q8::{quantize_row, BlockQ8, QK};
use crate::SyncPtr;
use crate::{q4_0, q4_1, q8_0, VecDot};

/// GGUF block formats with a kernel here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// 18-byte blocks, `w = d·(q − 8)`.
    Q4_0,
    /// 20-byte blocks, `w = d·q + m`.
    Q4_1,
    /// 34-byte blocks, `w = d·q`.
    Q8_0,
}

impl Format {
    /// Bytes per block of 32 weights.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => q4_0::BLOCK_BYTES,
            Self::Q4_1 => q4_1::BLOCK_BYTES,
            Self::Q8_0 => q8_0::BLOCK_BYTES,
        }
    }

    /// The fastest dot-product kernel available on this CPU.
    pub fn vec_dot(self) -> VecDot {
        match self {
            Self::Q4_0 => q4_0::vec_dot_fn(),
            Self::Q4_1 => q4_1::vec_dot_fn(),
            Self::Q8_0 => q8_0::vec_dot_fn(),
        }
    }

    /// The portable reference kernel.
    pub fn vec_dot_scalar(self) -> VecDot {
        match self {
            Self::Q4_0 => q4_0::vec_dot_scalar,
            Self::Q4_1 => q4_1::vec_dot_scalar,
            Self::Q8_0 => q8_0::vec_dot_scalar,
        }
    }

    /// Dequantises one row of blocks.
    pub fn dequantize_row(self, w: &[u8], out: &mut [f32]) {
        match self {
            Self::Q4_0 => q4_0::dequantize_row(w, out),
            Self::Q4_1 => q4_1::dequantize_row(w, out),
            Self::Q8_0 => q8_0::dequantize_row(w, out),
        }
    }
}

/// A borrowed weight matrix of blocks.
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    format: Format,
    rows: usize,
    cols: usize,
    data: &'a [u8],
}

/// Weight rows per chunk are chosen so that each thread gets about this many chunks.
const CHUNKS_PER_THREAD: usize = 4;
/// Input rows from which activation quantisation is itself split across the pool.
const PARALLEL_QUANTIZE_ROWS: usize = 8;

impl<'a> QMatrix<'a> {
    /// Wraps `data` as `rows × cols` weights; `cols` must be a multiple of 32 and `data` exactly
    /// `rows · cols / 32` blocks.
    pub fn new(format: Format, rows: usize, cols: usize, data: &'a [u8]) -> Result<Self, String> {
        if !cols.is_multiple_of(QK) {
            return Err(format!(
                "{cols} columns is not a multiple of the block size {QK}"
            ));
        }
        let want = rows * cols / QK * format.block_bytes();
        if data.len() != want {
            return Err(format!(
                "{format:?} {rows}x{cols} needs {want} bytes, got {}",
                data.len()
            ));
        }
        Ok(Self {
            format,
            rows,
            cols,
            data,
        })
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The block format.
    pub fn format(&self) -> Format {
        self.format
    }

    fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.cols / QK * self.format.block_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// The whole matrix as f32, row-major (`out.len() == rows · cols`).
    pub fn dequantize(&self, out: &mut [f32]) {
        self.dequantize_rows(0..self.rows, out);
    }

    /// Rows `range` as f32, row-major (`out.len() == range.len() · cols`).
    pub fn dequantize_rows(&self, range: std::ops::Range<usize>, out: &mut [f32]) {
        assert!(range.end <= self.rows, "rows {range:?} of {}", self.rows);
        assert_eq!(out.len(), range.len() * self.cols);
        if self.cols == 0 {
            return;
        }
        for (r, o) in range.zip(out.chunks_exact_mut(self.cols)) {
            self.format.dequantize_row(self.row(r), o);
        }
    }

    /// `y = x Wᵀ` with `x: [n, cols]` and `y: [n, rows]`, row-major, on `pool`.
    pub fn matmul(&self, x: &[f32], y: &mut [f32], pool: &Pool) {
        self.matmul_with(x, y, pool, self.format.vec_dot());
    }

    /// [`Self::matmul`] with the scalar reference kernel (for tests and comparisons).
    pub fn matmul_scalar(&self, x: &[f32], y: &mut [f32], pool: &Pool) {
        self.matmul_with(x, y, pool, self.format.vec_dot_scalar());
    }

    fn matmul_with(&self, x: &[f32], y: &mut [f32], pool: &Pool, dot: VecDot) {
        let (rows, cols, nb) = (self.rows, self.cols, self.cols / QK);
        let n = crate::input_rows(x.len(), y.len(), rows, cols);
        if n == 0 || rows == 0 {
            return;
        }
        let mut xq = vec![BlockQ8::default(); n * nb];
        if n >= PARALLEL_QUANTIZE_ROWS {
            let out = SyncPtr::<f32>(xq.as_mut_ptr().cast());
            pool.run(n, &|i| {
                // SAFETY: chunk `i` writes only blocks [i·nb, (i+1)·nb) of `xq`, which outlives
                // the (joined) run.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(out.get().cast::<BlockQ8>().add(i * nb), nb)
                };
                quantize_row(&x[i * cols..(i + 1) * cols], dst);
            });
        } else {
            for (xr, q) in x.chunks_exact(cols).zip(xq.chunks_exact_mut(nb)) {
                quantize_row(xr, q);
            }
        }
        let xq = &xq;
        let chunk = rows.div_ceil(pool.threads() * CHUNKS_PER_THREAD).max(4);
        let n_chunks = rows.div_ceil(chunk);
        let out = SyncPtr(y.as_mut_ptr());
        pool.run(n_chunks, &|c| {
            for r in c * chunk..((c + 1) * chunk).min(rows) {
                let w = self.row(r);
                for i in 0..n {
                    let v = dot(w, &xq[i * nb..(i + 1) * nb]);
                    // SAFETY: element (i, r) lies inside `y` ([n, rows]) and belongs to this
                    // chunk's rows only; the run is joined before `y` is used again.
                    unsafe { *out.get().add(i * rows + r) = v };
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{random_q4_0, random_q4_1, random_q8_0};
    use rand::{rngs::StdRng, Rng, SeedableRng};

    #[test]
    fn matmul_matches_dequantised_float_product() {
        let mut rng = StdRng::seed_from_u64(3);
        let pool = Pool::new(3);
        for (format, gen) in [
            (
                Format::Q4_0,
                random_q4_0 as fn(&mut StdRng, usize, bool) -> Vec<u8>,
            ),
            (Format::Q4_1, random_q4_1),
            (Format::Q8_0, random_q8_0),
        ] {
            for (rows, cols, n) in [(1, 32, 1), (7, 64, 3), (37, 96, 1), (130, 576, 9)] {
                let w = gen(&mut rng, rows * cols / QK, false);
                let m = QMatrix::new(format, rows, cols, &w).unwrap();
                let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let mut y = vec![0f32; n * rows];
                let mut ys = y.clone();
                m.matmul(&x, &mut y, &pool);
                m.matmul_scalar(&x, &mut ys, &Pool::new(1));
                let mut wf = vec![0f32; rows * cols];
                m.dequantize(&mut wf);
                for i in 0..n {
                    for r in 0..rows {
                        let xr = &x[i * cols..(i + 1) * cols];
                        let wr = &wf[r * cols..(r + 1) * cols];
                        let f: f32 = xr.iter().zip(wr).map(|(a, b)| a * b).sum();
                        let scale: f32 = xr.iter().zip(wr).map(|(a, b)| (a * b).abs()).sum();
                        let (a, b) = (y[i * rows + r], ys[i * rows + r]);
                        assert!(
                            (a - b).abs() <= 1e-5 * scale + 1e-6,
                            "{format:?} {a} vs {b}"
                        );
                        // 8-bit activations: relative error of the sum stays near 1/127.
                        assert!(
                            (a - f).abs() <= 0.02 * scale + 1e-4,
                            "{format:?} {a} vs {f}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(QMatrix::new(Format::Q4_1, 2, 48, &[0; 60]).is_err());
        assert!(QMatrix::new(Format::Q4_1, 2, 64, &[0; 79]).is_err());
        assert!(QMatrix::new(Format::Q4_1, 2, 64, &[0; 80]).is_ok());
    }
}
