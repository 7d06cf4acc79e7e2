//! `y = x Wᵀ` for prompt-sized inputs (many rows of `x`): the f32 GEMM split over the pool by
//! tiles of weight rows.
//!
//! Each pool chunk takes a tile of `W`'s rows, makes it f32 (a quantised tile is dequantised
//! into a per-thread scratch about the size of L2; an f32 weight is read in place), and
//! multiplies every row of `x` with it on the `gemm` crate's single-threaded microkernels,
//! writing its columns of `y`. Compared with dequantising the whole matrix and calling a
//! threaded GEMM (candle's prompt path) nothing proportional to the weight is allocated, the
//! dequantisation is spread over the threads, and the threads are the pool's persistent ones
//! (no second, spinning pool).

use crate::matmul::QMatrix;
use crate::pool::Pool;
use crate::SyncPtr;
use std::cell::RefCell;

/// Target weight rows per tile before balancing across threads.
const TILE_ROWS: usize = 64;
/// Tile heights are rounded to this (the f32 microkernel's register block is 16 rows).
const TILE_ALIGN: usize = 16;

thread_local! {
    /// Dequantised tile of the current chunk (reused across calls on a persistent thread).
    static TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A weight `W: [rows, cols]` the tiled GEMM can read tile by tile.
#[derive(Clone, Copy, Debug)]
pub enum WeightRows<'a> {
    /// Row-major f32 values.
    F32 {
        /// `rows · cols` values.
        values: &'a [f32],
        /// Output features.
        rows: usize,
        /// Input features.
        cols: usize,
    },
    /// GGUF blocks, dequantised a tile at a time.
    Quantized(QMatrix<'a>),
}

impl WeightRows<'_> {
    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Self::F32 { rows, cols, .. } => (*rows, *cols),
            Self::Quantized(q) => q.shape(),
        }
    }
}

/// How the weight rows are cut: `(tile height, number of tiles)`, the count a multiple of the
/// pool's threads where there are enough rows, so no thread idles on the last tile.
fn tiling(rows: usize, threads: usize) -> (usize, usize) {
    let threads = threads.max(1);
    let tiles = rows.div_ceil(TILE_ROWS).div_ceil(threads) * threads;
    let mut height = rows.div_ceil(tiles.max(1)).next_multiple_of(TILE_ALIGN);
    // Aligning can leave a count that does not divide among the threads (576 rows: 9 tiles
    // of 64); lower the height a step at a time until it does.
    while !rows.div_ceil(height).is_multiple_of(threads) && height > TILE_ALIGN {
        height -= TILE_ALIGN;
    }
    (height, rows.div_ceil(height))
}

/// `y = x Wᵀ` with `x: [n, cols]` and `y: [n, rows]`, row-major, on `pool`.
pub fn matmul(w: WeightRows<'_>, x: &[f32], y: &mut [f32], pool: &Pool) {
    let (rows, cols) = w.shape();
    let n = crate::input_rows(x.len(), y.len(), rows, cols);
    if n == 0 || rows == 0 {
        return;
    }
    if cols == 0 {
        y.fill(0.0);
        return;
    }
    let (height, tiles) = tiling(rows, pool.threads());
    let out = SyncPtr(y.as_mut_ptr());
    pool.run(tiles, &|t| {
        let r0 = t * height;
        let r1 = (r0 + height).min(rows);
        let multiply = |tile: &[f32]| {
            // SAFETY: `tile` holds rows r0..r1 of W (row-major, `cols` wide) and `x` holds n
            // rows of `cols`; the destination is columns r0..r1 of `y` ([n, rows]), which only
            // this chunk writes, and the run is joined before `y` is used again.
            unsafe {
                crate::gemm_single(
                    (n, r1 - r0, cols),
                    out.get().add(r0),
                    rows,
                    x.as_ptr(),
                    cols,
                    tile.as_ptr(),
                    (1, cols),
                )
            }
        };
        match w {
            WeightRows::F32 { values, .. } => multiply(&values[r0 * cols..r1 * cols]),
            WeightRows::Quantized(q) => TILE.with_borrow_mut(|tile| {
                tile.resize((r1 - r0) * cols, 0.0);
                q.dequantize_rows(r0..r1, tile);
                multiply(tile);
            }),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::Format;
    use crate::testing::random_q4_1;
    use crate::QK;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Plain triple loop in f64.
    fn reference(w: &[f32], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
        let n = x.len() / cols;
        let mut y = vec![0f32; n * rows];
        for i in 0..n {
            for r in 0..rows {
                let s: f64 = (0..cols)
                    .map(|c| x[i * cols + c] as f64 * w[r * cols + c] as f64)
                    .sum();
                y[i * rows + r] = s as f32;
            }
        }
        y
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{what}: element {i}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn f32_weights_match_the_plain_product_on_odd_shapes() {
        let mut rng = StdRng::seed_from_u64(11);
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            for (rows, cols, n) in [(1, 1, 1), (7, 5, 3), (65, 33, 40), (200, 96, 17)] {
                let w: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let mut y = vec![f32::NAN; n * rows];
                let weight = WeightRows::F32 {
                    values: &w,
                    rows,
                    cols,
                };
                matmul(weight, &x, &mut y, &pool);
                assert_close(&y, &reference(&w, rows, cols, &x), "f32");
            }
        }
    }

    #[test]
    fn quantised_tiles_match_the_product_with_the_dequantised_matrix() {
        let mut rng = StdRng::seed_from_u64(12);
        let pool = Pool::new(2);
        for (rows, cols, n) in [(3, 32, 2), (130, 96, 33), (257, 64, 5)] {
            let blocks = random_q4_1(&mut rng, rows * cols / QK, false);
            let q = QMatrix::new(Format::Q4_1, rows, cols, &blocks).unwrap();
            let mut dense = vec![0f32; rows * cols];
            q.dequantize(&mut dense);
            let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut y = vec![f32::NAN; n * rows];
            matmul(WeightRows::Quantized(q), &x, &mut y, &pool);
            assert_close(&y, &reference(&dense, rows, cols, &x), "q4_1");
        }
    }

    #[test]
    fn tiles_cover_every_row_and_balance_across_threads() {
        for rows in [1, 15, 16, 64, 192, 576, 1536, 49152] {
            for threads in [1, 2, 3, 4] {
                let (height, tiles) = tiling(rows, threads);
                assert!(height * tiles >= rows && height * (tiles - 1) < rows);
                if rows >= TILE_ALIGN * threads * 2 {
                    assert!(
                        tiles >= threads,
                        "{rows} rows, {threads} threads: {tiles} tiles"
                    );
                }
            }
        }
    }
}
