//! `y = x Wᵀ` for a sparse `W: [rows, cols]` and dense `x: [n, cols]`, rows of `W` split into
//! chunks claimed by the threads of a [`Pool`] (several chunks per thread, so a descheduled
//! worker does not stall the others).
//!
//! Two schedules, one per regime:
//! - decode (`n < AXPY_MIN_ROWS`): each weight row is dotted with up to 4 input rows at once
//!   ([`SparseRows::dot`], AVX2 expand or gather kernels): the weights are read once per step,
//!   which is what bounds decode.
//! - prompt chunks (`n ≥ AXPY_MIN_ROWS`): `x` is transposed into tiles of 64 input rows, and every
//!   stored weight `(c, v)` of a row adds `v · xᵀ[c, tile]` to 64 accumulators held in 8 AVX
//!   registers: only the non-zeros cost multiply-adds, so the work shrinks with the sparsity.

use crate::rows::SparseRows;
use crate::Isa;
use ferrite_kernels::pool::Pool;

/// Input rows from which the transposed-tile schedule is used.
pub const AXPY_MIN_ROWS: usize = 8;
/// Input rows per tile of the transposed schedule.
const TILE: usize = 64;
/// Weight-row chunks per pool thread.
const CHUNKS_PER_THREAD: usize = 4;

/// A raw output pointer shared by chunks that write disjoint elements.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);

impl SyncPtr {
    /// The pointer; a method so closures capture the whole (`Sync`) wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: used only for writes to disjoint indices from pool chunks, all joined before the
// owning slice is touched again.
unsafe impl Sync for SyncPtr {}
unsafe impl Send for SyncPtr {}

/// `y = x Wᵀ` with `x: [n, cols]`, `y: [n, rows]`, row-major.
pub(crate) fn matmul<M: SparseRows>(m: &M, x: &[f32], y: &mut [f32], pool: &Pool, isa: Isa) {
    let (rows, cols) = m.shape();
    assert!(
        cols > 0 && x.len().is_multiple_of(cols),
        "input width must equal the weight's columns"
    );
    let n = x.len() / cols;
    assert_eq!(y.len(), n * rows, "output must be [n, rows]");
    if n == 0 || rows == 0 {
        return;
    }
    let chunk = rows.div_ceil(pool.threads() * CHUNKS_PER_THREAD).max(4);
    let row_chunks = rows.div_ceil(chunk);
    let out = SyncPtr(y.as_mut_ptr());
    // SAFETY (both closures): element (i, r) of `y` is written only by the chunk owning row r;
    // `pool.run` joins every chunk before returning.
    let store = |i: usize, r: usize, v: f32| unsafe { *out.get().add(i * rows + r) = v };
    if n < AXPY_MIN_ROWS {
        pool.run(row_chunks, &|ch| {
            for r in ch * chunk..((ch + 1) * chunk).min(rows) {
                let xr = |i: usize| &x[i * cols..(i + 1) * cols];
                let emit = |i: usize, d: &[f32]| {
                    d.iter().enumerate().for_each(|(k, &v)| store(i + k, r, v))
                };
                let mut i = 0;
                while i < n {
                    let take = (n - i).min(4);
                    match take {
                        4 => emit(i, &m.dot(isa, r, [xr(i), xr(i + 1), xr(i + 2), xr(i + 3)])),
                        3 => emit(i, &m.dot(isa, r, [xr(i), xr(i + 1), xr(i + 2)])),
                        2 => emit(i, &m.dot(isa, r, [xr(i), xr(i + 1)])),
                        _ => emit(i, &m.dot(isa, r, [xr(i)])),
                    }
                    i += take;
                }
            }
        });
        return;
    }
    let xt = transpose_tiles(x, n, cols);
    let tiles = n.div_ceil(TILE);
    pool.run(row_chunks * tiles, &|job| {
        let (ch, t) = (job / tiles, job % tiles);
        let tile = &xt[t * cols * TILE..(t + 1) * cols * TILE];
        let live = TILE.min(n - t * TILE);
        for r in ch * chunk..((ch + 1) * chunk).min(rows) {
            let acc = axpy_row(m, r, tile, isa);
            for (k, &v) in acc[..live].iter().enumerate() {
                store(t * TILE + k, r, v);
            }
        }
    });
}

/// `x: [n, cols]` as tiles `[n / TILE][cols][TILE]`, the last tile padded with zeros.
fn transpose_tiles(x: &[f32], n: usize, cols: usize) -> Vec<f32> {
    let tiles = n.div_ceil(TILE);
    let mut xt = vec![0f32; tiles * cols * TILE];
    for (i, row) in x.chunks_exact(cols).enumerate() {
        let base = (i / TILE) * cols * TILE + i % TILE;
        for (c, &v) in row.iter().enumerate() {
            xt[base + c * TILE] = v;
        }
    }
    xt
}

/// `Σ_{(c, v) ∈ row r} v · tile[c, 0..TILE]`.
fn axpy_row<M: SparseRows>(m: &M, r: usize, tile: &[f32], isa: Isa) -> [f32; TILE] {
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        // SAFETY: AVX2/FMA were detected; column indices are `< cols` and `tile` is
        // `cols × TILE`.
        return unsafe { axpy_row_avx2(m, r, tile) };
    }
    let _ = isa;
    let mut acc = [0f32; TILE];
    for (c, v) in m.nonzeros(r) {
        let xs = &tile[c * TILE..(c + 1) * TILE];
        for (a, &xv) in acc.iter_mut().zip(xs) {
            *a += v * xv;
        }
    }
    acc
}

/// # Safety
/// AVX2 and FMA available; every column of row `r` indexes a full `TILE` run of `tile`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_row_avx2<M: SparseRows>(m: &M, r: usize, tile: &[f32]) -> [f32; TILE] {
    use std::arch::x86_64::*;
    const REGS: usize = TILE / 8;
    let mut acc = [_mm256_setzero_ps(); REGS];
    for (c, v) in m.nonzeros(r) {
        let vb = _mm256_set1_ps(v);
        let p = tile[c * TILE..(c + 1) * TILE].as_ptr();
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `p` points at TILE floats (the bounds-checked slice above).
            *a = _mm256_fmadd_ps(vb, unsafe { _mm256_loadu_ps(p.add(8 * k)) }, *a);
        }
    }
    let mut out = [0f32; TILE];
    for (k, a) in acc.iter().enumerate() {
        // SAFETY: `out` has TILE = 8·REGS floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * k), *a) };
    }
    out
}
