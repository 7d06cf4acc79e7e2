//! 8-bit block quantisation of activations, done once per matmul so that every weight row is
//! multiplied with integer dot products (the scheme of llama.cpp's `Q8_0`/`Q8_1`).
//!
//! A row of `k` floats (`k` a multiple of [`QK`]) becomes `k / 32` [`BlockQ8`]s. Per block:
//! `d = max|x| / 127`, `q_j = round_half_even(x_j / d)` (so `q_j ∈ [-127, 127]`), and
//! `s = d · Σ q_j`, the block sum that Q4_1's offset term needs (`Σ_j m·x_j ≈ m·s`).
//! Unlike the GGUF `Q8_1`, `d` and `s` are kept in f32: activations are transient, and f32
//! avoids a conversion in the inner loop.

/// Values per block in every block format of this crate.
pub const QK: usize = 32;

/// 32 activations quantised to 8 bits: `x_j ≈ d · qs[j]`, with `s = d · Σ qs[j]`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct BlockQ8 {
    /// Scale.
    pub d: f32,
    /// `d · Σ qs`.
    pub s: f32,
    /// Quantised values.
    pub qs: [i8; QK],
}

/// Quantises `x` (`x.len() == out.len() · 32`) into `out`, choosing the AVX2 path at run time.
///
/// Both paths give bit-identical blocks (same max, same single-rounding product, ties to even).
pub fn quantize_row(x: &[f32], out: &mut [BlockQ8]) {
    assert_eq!(x.len(), out.len() * QK, "row length must be 32 x blocks");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above); lengths checked by the assert.
        unsafe { quantize_row_avx2(x, out) };
        return;
    }
    quantize_row_scalar(x, out);
}

/// Portable reference of [`quantize_row`].
pub fn quantize_row_scalar(x: &[f32], out: &mut [BlockQ8]) {
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = (v * id).round_ties_even() as i8;
            sum += *q as i32;
        }
        b.d = d;
        b.s = d * sum as f32;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_row_avx2(x: &[f32], out: &mut [BlockQ8]) {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let p = xb.as_ptr();
        // SAFETY: `xb` has exactly 32 floats, read as four unaligned 8-lane loads.
        let v = unsafe {
            [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ]
        };
        let mut m = _mm256_andnot_ps(sign, v[0]);
        for vi in &v[1..] {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vi));
        }
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let m1 = _mm_max_ss(m2, _mm_movehdup_ps(m2));
        let amax = _mm_cvtss_f32(m1);
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        const RN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let i: [__m256i; 4] =
            v.map(|vi| _mm256_cvtps_epi32(_mm256_round_ps::<RN>(_mm256_mul_ps(vi, id))));
        // Sum of the 32 integers.
        let s8 = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        let s4 = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
        let s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
        let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32(s2, 1));
        let sum = _mm_cvtsi128_si32(s1);
        // Pack 32 x i32 -> 32 x i8; the packs interleave 128-bit lanes, the permute restores order.
        let w01 = _mm256_packs_epi32(i[0], i[1]);
        let w23 = _mm256_packs_epi32(i[2], i[3]);
        let bytes = _mm256_packs_epi16(w01, w23);
        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: `b.qs` is 32 bytes; unaligned store.
        unsafe { _mm256_storeu_si256(b.qs.as_mut_ptr().cast(), bytes) };
        b.d = d;
        b.s = d * sum as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn simd_equals_scalar_bit_for_bit() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for nb in [1, 2, 3, 7, 18, 48] {
            let mut x: Vec<f32> = (0..nb * QK).map(|_| rng.gen_range(-3.0..3.0)).collect();
            x[0] = 0.5; // exact ties exercise round-half-even
            x[QK - 1] = 0.0;
            if nb > 2 {
                x[QK..2 * QK].fill(0.0); // an all-zero block
            }
            let mut a = vec![BlockQ8::default(); nb];
            let mut b = a.clone();
            quantize_row(&x, &mut a);
            quantize_row_scalar(&x, &mut b);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn reconstruction_error_is_within_half_a_step() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let x: Vec<f32> = (0..4 * QK).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let mut q = vec![BlockQ8::default(); 4];
        quantize_row(&x, &mut q);
        for (xb, b) in x.chunks(QK).zip(&q) {
            let sum: i32 = b.qs.iter().map(|&v| v as i32).sum();
            assert_eq!(b.s, b.d * sum as f32);
            for (v, &qv) in xb.iter().zip(&b.qs) {
                assert!((v - b.d * qv as f32).abs() <= b.d * 0.5 + 1e-7);
            }
        }
    }
}
