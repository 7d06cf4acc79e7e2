//! Quantised CPU kernels for ferrite (issue 11).
//!
//! - [`quantize_q8`]: activations to 8-bit blocks, once per matmul.
//! - [`q4_0`], [`q4_1`], [`q8_0`]: dot products of GGUF weight rows with those blocks, with an
//!   AVX2/FMA/F16C path chosen at run time (`is_x86_feature_detected!`) and a portable scalar
//!   reference, so one binary runs anywhere.
//! - [`matmul`]: `y = x Wᵀ` over a matrix of blocks, rows split across a [`pool::Pool`].
//! - [`tiled_gemm`]: the f32 GEMM for prompt-sized inputs, tiles of weight rows (dequantised
//!   per tile when quantised) across the pool.
//! - [`rows`]: RMSNorm and softmax per row; [`attention`]: fused decode attention over a
//!   strided K/V cache (grouped-query heads never repeated).
//!
//! Weights stay in the GGUF block layout they were loaded in (borrowed, never copied): the AVX2
//! kernels read it with unaligned loads, so no repacking or second copy is needed.

pub mod attention;
pub mod dense;
pub mod matmul;
pub mod pool;
pub mod q4_0;
pub mod q4_1;
pub mod q8_0;
pub mod quantize_q8;
pub mod rope;
pub mod rows;
pub mod tiled_gemm;

#[cfg(test)]
mod testing;

pub use matmul::{Format, QMatrix};
pub use quantize_q8::{BlockQ8, QK};

/// A raw output pointer shared by chunks that write disjoint elements.
pub(crate) struct SyncPtr<T = f32>(pub(crate) *mut T);

impl<T> Clone for SyncPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// The pointer; a method so closures capture the whole (`Sync`) wrapper.
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}
// SAFETY: used only for writes to disjoint indices from pool chunks, all joined before the
// owning slice is touched again.
unsafe impl<T> Sync for SyncPtr<T> {}
unsafe impl<T> Send for SyncPtr<T> {}

/// Rows of `x` in `y = x Wᵀ` for `W: [rows, cols]` (`x: [n, cols]`, `y: [n, rows]`), checking
/// the shapes; shared by the quantised and the tiled matmul.
pub(crate) fn input_rows(x_len: usize, y_len: usize, rows: usize, cols: usize) -> usize {
    assert_eq!(
        x_len % cols.max(1),
        0,
        "input width must equal the weight's columns"
    );
    let n = x_len.checked_div(cols).unwrap_or(0);
    assert_eq!(y_len, n * rows, "output must be [n, rows]");
    n
}

/// One single-threaded `gemm` call `dst = lhs · rhs` (`m × k` by `k × n`), `dst` and `lhs`
/// row-major with row strides `dst_rs`, `lhs_rs`, `rhs` with row and column strides.
///
/// # Safety
/// Every element addressed through the pointers and strides must lie inside its allocation,
/// and no other thread may touch the `m × n` elements of `dst` during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_single(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
) {
    // SAFETY: forwarded from the caller; `read_dst = false`, so `dst` is only written.
    unsafe {
        gemm::gemm::<f32>(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs,
            1,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Dot product of one weight row (raw blocks) with the quantised activations of one input row.
pub type VecDot = fn(&[u8], &[BlockQ8]) -> f32;

/// The little-endian f16 at byte `at` of `b`, as f32.
#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Whether the AVX2 kernels can run here (AVX2 integer ops, FMA, F16C conversions).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma_f16c() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Eight i32 sums of four u8·i8 products each (`u` unsigned, `s` signed).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn dot_u8_i8<const VNNI: bool>(
    u: std::arch::x86_64::__m256i,
    s: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: only called, inlined, from kernels compiled with AVX2 (and AVX-VNNI when `VNNI`).
    unsafe {
        if VNNI {
            _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s)
        } else {
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
        }
    }
}

/// Sum of the 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn hsum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)))
}
