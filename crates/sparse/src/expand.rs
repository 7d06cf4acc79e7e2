//! The AVX2 kernel shared by the bitmap and the 2:4 layouts: both keep one code byte per 8
//! columns, from which a table gives the permutation that scatters the packed values of those
//! 8 columns to their lanes (`vpermps`) and which lanes hold a value at all. The expanded 8
//! weights then meet 8 contiguous inputs with one FMA, so the inputs are read sequentially and
//! only the stored values are read from memory (the decode bottleneck).
//!
//! Bitmap: code = the 8 mask bits, lane `j` takes value `popcount(code & (2^j − 1))`, the code
//! consumes `popcount(code)` values. 2:4: code = the four 2-bit indices of two groups, the code
//! consumes 4 values.

/// Per code byte: for each of the 8 lanes, the index of the packed value it takes, and a bit
/// per lane saying whether it takes one.
pub(crate) struct ExpandTable {
    /// `perm[code][lane]`: index among the code's packed values.
    pub perm: [[u32; 8]; 256],
    /// `lanes[code]`: bit `j` set when lane `j` holds a value.
    pub lanes: [u8; 256],
    /// `keep[code][lane]`: all ones when the lane holds a value, else 0 (an AND mask).
    pub keep: [[u32; 8]; 256],
    /// `advance[code]`: packed values the code consumes.
    pub advance: [u8; 256],
}

const fn bitmap_table() -> ExpandTable {
    let mut t = ExpandTable {
        perm: [[0; 8]; 256],
        lanes: [0; 256],
        keep: [[0; 8]; 256],
        advance: [0; 256],
    };
    let mut code = 0;
    while code < 256 {
        let mut j = 0;
        let mut k = 0u32;
        while j < 8 {
            t.perm[code][j] = k;
            if code & (1 << j) != 0 {
                k += 1;
            }
            j += 1;
        }
        t.lanes[code] = code as u8;
        t.advance[code] = k as u8;
        code += 1;
    }
    with_keep_masks(t)
}

/// Fills [`ExpandTable::keep`] from [`ExpandTable::lanes`].
const fn with_keep_masks(mut t: ExpandTable) -> ExpandTable {
    let mut code = 0;
    while code < 256 {
        let mut j = 0;
        while j < 8 {
            t.keep[code][j] = if t.lanes[code] & (1 << j) != 0 {
                u32::MAX
            } else {
                0
            };
            j += 1;
        }
        code += 1;
    }
    t
}

const fn nm24_table() -> ExpandTable {
    let mut t = ExpandTable {
        perm: [[0; 8]; 256],
        lanes: [0; 256],
        keep: [[0; 8]; 256],
        advance: [4; 256],
    };
    let mut code = 0;
    while code < 256 {
        let mut slot = 0;
        while slot < 4 {
            let lane = (slot / 2) * 4 + ((code >> (2 * slot)) & 3);
            t.perm[code][lane] = slot as u32;
            t.lanes[code] |= 1 << lane;
            slot += 1;
        }
        code += 1;
    }
    with_keep_masks(t)
}

/// Table of the bitmap layout.
pub(crate) static BITMAP: ExpandTable = bitmap_table();
/// Table of the 2:4 layout.
pub(crate) static NM24: ExpandTable = nm24_table();

/// Packed values (floats) ahead of the current position that [`expand_dot`] prefetches.
const PREFETCH_AHEAD: usize = 512;

/// Byte `i` of the result: the packed-value offset of chunk `i` of an 8-code word.
///
/// Bitmap: the exclusive prefix sum of the codes' popcounts (SWAR byte popcounts, then a
/// multiply sums them; every partial sum is at most 56, so bytes never carry). 2:4: `4i`.
/// Offsets inside a word thus do not wait on each other, only the word's total does.
#[inline(always)]
fn word_offsets<const BITMAP: bool>(w: u64) -> (u64, usize) {
    if !BITMAP {
        return (0x1C18_1410_0C08_0400, 32);
    }
    let x = w - ((w >> 1) & 0x5555_5555_5555_5555);
    let x = (x & 0x3333_3333_3333_3333) + ((x >> 2) & 0x3333_3333_3333_3333);
    let x = (x + (x >> 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    (
        x.wrapping_mul(0x0101_0101_0101_0101) << 8,
        w.count_ones() as usize,
    )
}

/// Partial dot products over the full 8-column chunks described by `codes`: returns the `T`
/// sums and how many packed values were consumed. `BITMAP` selects the bitmap's offsets
/// (popcounts) over 2:4's (4 per code).
///
/// # Safety
/// AVX2 and FMA must be available; `values` must be readable for the consumed values plus 8
/// more (the layouts pad their value arrays); each `xs[i]` must hold `8 · codes.len()` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn expand_dot<const T: usize, const BITMAP: bool>(
    table: &ExpandTable,
    codes: &[u8],
    values: *const f32,
    xs: [*const f32; T],
) -> ([f32; T], usize) {
    use std::arch::x86_64::*;
    // The 8 weights of a chunk, expanded from the packed values at `k`.
    let expand = |code: usize, k: usize| {
        // SAFETY: `values + k` has 8 readable floats (padding); table rows are 8 u32.
        unsafe {
            let v = _mm256_loadu_ps(values.add(k));
            let perm = _mm256_loadu_si256(table.perm[code].as_ptr().cast());
            let keep = _mm256_loadu_ps(table.keep[code].as_ptr().cast());
            _mm256_and_ps(_mm256_permutevar8x32_ps(v, perm), keep)
        }
    };
    // Two accumulator sets (even and odd chunks) hide the FMA latency; kept in registers by
    // naming them rather than indexing.
    let mut even = [_mm256_setzero_ps(); T];
    let mut odd = [_mm256_setzero_ps(); T];
    let mut k = 0usize;
    let mut words = codes.chunks_exact(8);
    let mut b = 0;
    for word in &mut words {
        let w = u64::from_le_bytes(word.try_into().expect("8 codes"));
        let (offsets, total) = word_offsets::<BITMAP>(w);
        // The values stream is read at data-dependent offsets; fetch two lines well ahead so
        // the decode loop is not left waiting on memory (past the end this only hints).
        _mm_prefetch::<_MM_HINT_T0>(values.wrapping_add(k + PREFETCH_AHEAD).cast());
        _mm_prefetch::<_MM_HINT_T0>(values.wrapping_add(k + PREFETCH_AHEAD + 16).cast());
        for pair in 0..4 {
            let (i0, i1) = (2 * pair, 2 * pair + 1);
            let code = |i: usize| ((w >> (8 * i)) & 0xff) as usize;
            let off = |i: usize| k + ((offsets >> (8 * i)) & 0xff) as usize;
            let (w0, w1) = (expand(code(i0), off(i0)), expand(code(i1), off(i1)));
            for i in 0..T {
                // SAFETY: `xs[i]` holds 8 floats per code (caller's contract).
                unsafe {
                    let x = xs[i].add(8 * (b + i0));
                    even[i] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x), even[i]);
                    odd[i] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x.add(8)), odd[i]);
                }
            }
        }
        k += total;
        b += 8;
    }
    for &c in words.remainder() {
        let w = expand(c as usize, k);
        k += table.advance[c as usize] as usize;
        for i in 0..T {
            // SAFETY: as above.
            unsafe { even[i] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xs[i].add(8 * b)), even[i]) };
        }
        b += 1;
    }
    let mut out = [0f32; T];
    for i in 0..T {
        out[i] = hsum(_mm256_add_ps(even[i], odd[i]));
    }
    (out, k)
}

/// The bitmap layout's partial dot products with AVX-512: two code bytes are the 16-bit mask
/// of 16 columns, and `vexpandps` moves the next `popcount(mask)` packed values to the lanes the
/// mask sets (zeros elsewhere) in one instruction, replacing [`expand_dot`]'s table lookups and
/// permutes. Returns the `T` sums and the packed values consumed.
///
/// # Safety
/// AVX-512F, AVX2 and FMA must be available; `values` must be readable for the consumed values
/// plus 16 more (the layout pads its values); each `xs[i]` must hold `8 · codes.len()` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,popcnt")]
pub(crate) unsafe fn bitmap_dot_avx512<const T: usize>(
    codes: &[u8],
    values: *const f32,
    xs: [*const f32; T],
) -> ([f32; T], usize) {
    use std::arch::x86_64::*;
    let mut even = [_mm512_setzero_ps(); T];
    let mut odd = [_mm512_setzero_ps(); T];
    let mut k = 0usize;
    let mut b = 0usize; // column
    let mut quads = codes.chunks_exact(4);
    for quad in &mut quads {
        let m0 = u16::from_le_bytes([quad[0], quad[1]]);
        let m1 = u16::from_le_bytes([quad[2], quad[3]]);
        _mm_prefetch::<_MM_HINT_T0>(values.wrapping_add(k + PREFETCH_AHEAD).cast());
        // SAFETY: 16 floats from any stored position are readable (padding).
        let (w0, k1) = unsafe {
            (
                _mm512_maskz_expand_ps(m0, _mm512_loadu_ps(values.add(k))),
                k + m0.count_ones() as usize,
            )
        };
        let w1 = unsafe { _mm512_maskz_expand_ps(m1, _mm512_loadu_ps(values.add(k1))) };
        k = k1 + m1.count_ones() as usize;
        for i in 0..T {
            // SAFETY: `xs[i]` holds 8 floats per code byte, so 32 from column `b`.
            unsafe {
                let x = xs[i].add(b);
                even[i] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x), even[i]);
                odd[i] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x.add(16)), odd[i]);
            }
        }
        b += 32;
    }
    for &code in quads.remainder() {
        let mask = code as u16;
        // SAFETY: as above; only the 8 inputs of this code byte are loaded (masked lanes do not
        // fault).
        let w = unsafe { _mm512_maskz_expand_ps(mask, _mm512_loadu_ps(values.add(k))) };
        k += code.count_ones() as usize;
        for i in 0..T {
            unsafe {
                even[i] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(0x00ff, xs[i].add(b)), even[i]);
            }
        }
        b += 8;
    }
    let mut out = [0f32; T];
    for i in 0..T {
        out[i] = _mm512_reduce_add_ps(_mm512_add_ps(even[i], odd[i]));
    }
    (out, k)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_offsets_are_prefix_popcounts() {
        let w: u64 = 0xFF00_0301_8000_F00F;
        let (offs, total) = word_offsets::<true>(w);
        let mut k = 0;
        for i in 0..8 {
            assert_eq!((offs >> (8 * i)) & 0xff, k, "chunk {i}");
            k += ((w >> (8 * i)) & 0xff).count_ones() as u64;
        }
        assert_eq!(total as u64, k);
        let (offs, total) = word_offsets::<false>(w);
        assert_eq!(((offs >> 40) & 0xff, total), (20, 32));
    }

    #[test]
    fn tables_place_values_where_the_codes_say() {
        // Bitmap 0b1010_0110: values 0,1,2 at lanes 1,2,5 and value 3 at lane 7.
        let c = 0b1010_0110usize;
        assert_eq!(BITMAP.advance[c], 4);
        assert_eq!(
            [1, 2, 5, 7].map(|l| BITMAP.perm[c][l]),
            [0, 1, 2, 3],
            "bitmap lanes"
        );
        // 2:4 indices (1, 3 | 0, 2): lanes 1, 3, 4, 6.
        let c = 0b10_00_11_01; // slots (1, 3 | 0, 2), two bits each, LSB first
        assert_eq!(NM24.lanes[c], 0b0101_1010);
        assert_eq!([1, 3, 4, 6].map(|l| NM24.perm[c][l]), [0, 1, 2, 3]);
    }
}
