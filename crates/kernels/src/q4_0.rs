//! GGUF `Q4_0` weights times 8-bit activations ([`BlockQ8`]).
//!
//! Block layout (18 bytes, 32 weights): f16 `d`, then 16 bytes `qs` where byte `j` holds
//! weight `j` in its low nibble and weight `j + 16` in its high nibble; `w = d·(q − 8)`,
//! `q ∈ [0, 15]`. One block contributes `Σ_j w_j x_j ≈ d·d_x·Σ_j (q_j − 8) p_j`, the inner sum
//! exact in integers.

use crate::quantize_q8::{BlockQ8, QK};
use crate::VecDot;

/// Bytes per block.
pub const BLOCK_BYTES: usize = 18;

/// Fastest available dot product of one `Q4_0` row with quantised activations.
pub fn vec_dot_fn() -> VecDot {
    vec_dot_variants()
        .last()
        .expect("the scalar kernel is always there")
        .1
}

/// Every kernel this CPU can run, slowest first: `scalar`, then `avx2`, then `avxvnni`.
pub fn vec_dot_variants() -> Vec<(&'static str, VecDot)> {
    let mut v: Vec<(&'static str, VecDot)> = vec![("scalar", vec_dot_scalar)];
    #[cfg(target_arch = "x86_64")]
    if crate::has_avx2_fma_f16c() {
        v.push(("avx2", |w, x| {
            // SAFETY: the features were detected before this pointer was handed out.
            unsafe { vec_dot_avx2(w, x) }
        }));
        if is_x86_feature_detected!("avxvnni") {
            v.push(("avxvnni", |w, x| {
                // SAFETY: as above, with AVX-VNNI detected too.
                unsafe { vec_dot_avxvnni(w, x) }
            }));
        }
    }
    v
}

/// Portable reference: `Σ_b d_b d_x Σ_j (q_j − 8) p_j`.
pub fn vec_dot_scalar(w: &[u8], x: &[BlockQ8]) -> f32 {
    assert_eq!(
        w.len(),
        x.len() * BLOCK_BYTES,
        "row and activations disagree in blocks"
    );
    let mut acc = 0f32;
    for (wb, xb) in w.chunks_exact(BLOCK_BYTES).zip(x) {
        let d = crate::f16_at(wb, 0);
        let mut isum = 0i32;
        for j in 0..QK / 2 {
            let byte = wb[2 + j];
            isum += ((byte & 0x0f) as i32 - 8) * xb.qs[j] as i32;
            isum += ((byte >> 4) as i32 - 8) * xb.qs[j + QK / 2] as i32;
        }
        acc += d * xb.d * isum as f32;
    }
    acc
}

/// Weights of one row as f32.
pub fn dequantize_row(w: &[u8], out: &mut [f32]) {
    for (wb, o) in w.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(QK)) {
        let d = crate::f16_at(wb, 0);
        for j in 0..QK / 2 {
            o[j] = d * ((wb[2 + j] & 0x0f) as i32 - 8) as f32;
            o[j + QK / 2] = d * ((wb[2 + j] >> 4) as i32 - 8) as f32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_avx2(w: &[u8], x: &[BlockQ8]) -> f32 {
    // SAFETY: the caller guarantees the features this kernel's body needs.
    unsafe { vec_dot_x86::<false>(w, x) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn vec_dot_avxvnni(w: &[u8], x: &[BlockQ8]) -> f32 {
    // SAFETY: the caller guarantees the features this kernel's body needs.
    unsafe { vec_dot_x86::<true>(w, x) }
}

/// The AVX2 body, inlined into the wrappers above; `VNNI` selects `vpdpbusd` for the
/// u8·i8 dot of four bytes, else `vpmaddubsw` + `vpmaddwd` (no saturation at these ranges).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn vec_dot_x86<const VNNI: bool>(w: &[u8], x: &[BlockQ8]) -> f32 {
    use crate::dot_u8_i8;
    use std::arch::x86_64::*;
    assert_eq!(
        w.len(),
        x.len() * BLOCK_BYTES,
        "row and activations disagree in blocks"
    );
    let low = _mm256_set1_epi8(0x0f);
    let eight = _mm256_set1_epi8(8);
    let mut acc = [_mm256_setzero_ps(); 2];
    for (i, xb) in x.iter().enumerate() {
        // SAFETY: block `i` spans bytes [18i, 18i + 18) of `w` (length asserted above);
        // unaligned loads.
        let (d, q4) = unsafe {
            let p = w.as_ptr().add(i * BLOCK_BYTES);
            let d = _mm_cvtph_ps(_mm_cvtsi32_si128(p.cast::<u16>().read_unaligned() as i32));
            (_mm_cvtss_f32(d), _mm_loadu_si128(p.add(2).cast()))
        };
        // SAFETY: `xb.qs` is 32 bytes.
        let p = unsafe { _mm256_loadu_si256(xb.qs.as_ptr().cast()) };
        let q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q4, 4), q4), low);
        let q = _mm256_sub_epi8(q, eight);
        // maddubs wants an unsigned operand: |q| times p with q's sign moved onto p.
        let dot = dot_u8_i8::<VNNI>(_mm256_sign_epi8(q, q), _mm256_sign_epi8(p, q));
        let k = i & 1;
        acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb.d), _mm256_cvtepi32_ps(dot), acc[k]);
    }
    crate::hsum(_mm256_add_ps(acc[0], acc[1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_dot, random_q4_0};

    #[test]
    fn matches_scalar_reference() {
        for (_, kernel) in vec_dot_variants() {
            check_dot(random_q4_0, kernel, vec_dot_scalar, dequantize_row);
        }
    }
}
