//! Bit packing of quantisation codes: `b`-bit integers stored densely, `8/b` codes per byte for
//! `b ∈ {2, 4, 8}` and a little-endian bit stream for `b = 3` (8 codes in 3 bytes).
//!
//! This is the storage step both papers leave to their CUDA kernels: KIVI (Liu et al. 2024,
//! §3.3 / Alg. 1) packs its 2-bit codes into 32-bit words, and GEAR's `TrueCompression` path
//! (Kang et al. 2024, §3 "quantized backbone" D̂) packs the codes of its uniform quantiser. Here
//! code `i` occupies bits `[i·b, (i+1)·b)` of the stream, lowest bits first.

use anyhow::{bail, Result};

/// Bit widths the packer supports.
pub const SUPPORTED_BITS: [u8; 4] = [2, 3, 4, 8];

/// Checks that `bits` is one of [`SUPPORTED_BITS`].
pub fn check_bits(bits: u8) -> Result<()> {
    if !SUPPORTED_BITS.contains(&bits) {
        bail!("unsupported bit width {bits} (expected 2, 3, 4 or 8)");
    }
    Ok(())
}

/// Bytes needed for `n` codes of `bits` bits.
pub fn packed_len(n: usize, bits: u8) -> usize {
    (n * bits as usize).div_ceil(8)
}

/// Packs `codes` (each `< 2^bits`) into a dense byte stream.
pub fn pack(codes: &[u8], bits: u8) -> Vec<u8> {
    debug_assert!(SUPPORTED_BITS.contains(&bits));
    debug_assert!(codes.iter().all(|&c| (c as u16) < (1u16 << bits)));
    let mut out = vec![0u8; packed_len(codes.len(), bits)];
    match bits {
        8 => out.copy_from_slice(codes),
        2 | 4 => {
            let per_byte = 8 / bits as usize;
            for (byte, chunk) in out.iter_mut().zip(codes.chunks(per_byte)) {
                *byte = chunk
                    .iter()
                    .enumerate()
                    .fold(0u8, |acc, (j, &c)| acc | (c << (j * bits as usize)));
            }
        }
        _ => {
            // General bit stream: code i starts at bit i·b.
            for (i, &c) in codes.iter().enumerate() {
                let bit = i * bits as usize;
                let (byte, shift) = (bit / 8, bit % 8);
                let v = (c as u16) << shift;
                out[byte] |= v as u8;
                if shift + bits as usize > 8 {
                    out[byte + 1] |= (v >> 8) as u8;
                }
            }
        }
    }
    out
}

/// Unpacks `out.len()` codes starting at code index `start` of the stream `packed`.
///
/// For the byte-aligned widths (2, 4, 8) `start` must be a multiple of `8 / bits`; the 3-bit
/// stream accepts any start.
pub fn unpack_into(packed: &[u8], bits: u8, start: usize, out: &mut [u8]) {
    match bits {
        8 => out.copy_from_slice(&packed[start..start + out.len()]),
        4 => {
            debug_assert!(start.is_multiple_of(2));
            let bytes = &packed[start / 2..];
            for (pair, &b) in out.chunks_mut(2).zip(bytes) {
                pair[0] = b & 0x0f;
                if pair.len() > 1 {
                    pair[1] = b >> 4;
                }
            }
        }
        2 => {
            debug_assert!(start.is_multiple_of(4));
            let bytes = &packed[start / 4..];
            for (quad, &b) in out.chunks_mut(4).zip(bytes) {
                for (j, c) in quad.iter_mut().enumerate() {
                    *c = (b >> (2 * j)) & 0x03;
                }
            }
        }
        _ => {
            let mask = (1u16 << bits) - 1;
            for (i, c) in out.iter_mut().enumerate() {
                let bit = (start + i) * bits as usize;
                let (byte, shift) = (bit / 8, bit % 8);
                let lo = packed[byte] as u16;
                let hi = packed.get(byte + 1).copied().unwrap_or(0) as u16;
                *c = (((lo | (hi << 8)) >> shift) & mask) as u8;
            }
        }
    }
}

/// The step and zero point of each code of a dequantised run.
pub trait StepZero: Copy {
    /// Step and zero point of code `i` of the run.
    fn at(&self, i: usize) -> (f32, f32);
    /// Steps and zero points of codes `at..at + DEQUANT_CHUNK`.
    fn chunk(&self, at: usize) -> ([f32; DEQUANT_CHUNK], [f32; DEQUANT_CHUNK]);
}

/// One step and zero point per code (the channels of a per-channel group).
impl StepZero for (&[f32], &[f32]) {
    #[inline(always)]
    fn at(&self, i: usize) -> (f32, f32) {
        (self.0[i], self.1[i])
    }
    #[inline(always)]
    fn chunk(&self, at: usize) -> ([f32; DEQUANT_CHUNK], [f32; DEQUANT_CHUNK]) {
        let s = self.0[at..at + DEQUANT_CHUNK].try_into().expect("length");
        let z = self.1[at..at + DEQUANT_CHUNK].try_into().expect("length");
        (s, z)
    }
}

/// One step and zero point for the whole run (a per-token group covering it).
impl StepZero for (f32, f32) {
    #[inline(always)]
    fn at(&self, _: usize) -> (f32, f32) {
        *self
    }
    #[inline(always)]
    fn chunk(&self, _: usize) -> ([f32; DEQUANT_CHUNK], [f32; DEQUANT_CHUNK]) {
        ([self.0; DEQUANT_CHUNK], [self.1; DEQUANT_CHUNK])
    }
}

/// Dequantises `out.len()` codes starting at code `start` as `code · Δ_j + min_j` with
/// `(Δ_j, min_j) = step_zero.at(j)`, unpacking and scaling in one pass (the hot loop of every
/// decode step). Same alignment rule as [`unpack_into`].
#[inline]
pub fn dequantize_run(
    packed: &[u8],
    bits: u8,
    start: usize,
    step_zero: impl StepZero,
    out: &mut [f32],
) {
    let n = out.len();
    match bits {
        4 if n.is_multiple_of(2) => {
            dequantize_chunks::<2>(&packed[start / 2..start / 2 + n / 2], step_zero, out)
        }
        2 if n.is_multiple_of(4) => {
            dequantize_chunks::<4>(&packed[start / 4..start / 4 + n / 4], step_zero, out)
        }
        8 => dequantize_chunks::<1>(&packed[start..start + n], step_zero, out),
        _ => {
            let mut codes = vec![0u8; n];
            unpack_into(packed, bits, start, &mut codes);
            for (j, (o, &q)) in out.iter_mut().zip(&codes).enumerate() {
                let (s, z) = step_zero.at(j);
                *o = q as f32 * s + z;
            }
        }
    }
}

/// Codes per chunk of [`dequantize_chunks`]: two 512-bit vectors of f32.
pub const DEQUANT_CHUNK: usize = 32;

/// The byte-aligned arms of [`dequantize_run`], `PER_BYTE` codes per byte (1, 2 or 4). Whole
/// chunks of [`DEQUANT_CHUNK`] codes are fixed-size arrays, so the compiler unrolls the
/// unpacking and vectorises the scale-and-add; the tail takes the same steps code by code.
#[inline(always)]
fn dequantize_chunks<const PER_BYTE: usize>(
    bytes: &[u8],
    step_zero: impl StepZero,
    out: &mut [f32],
) {
    let bits = 8 / PER_BYTE;
    let mask = ((1u16 << bits) - 1) as u8;
    let code = |i: usize| (bytes[i / PER_BYTE] >> ((i % PER_BYTE) * bits)) & mask;
    let whole = out.len() / DEQUANT_CHUNK * DEQUANT_CHUNK;
    for (n, o) in out[..whole].chunks_exact_mut(DEQUANT_CHUNK).enumerate() {
        let at = n * DEQUANT_CHUNK;
        let b = &bytes[at / PER_BYTE..][..DEQUANT_CHUNK / PER_BYTE];
        let (s, z) = step_zero.chunk(at);
        let mut codes = [0u8; DEQUANT_CHUNK];
        for i in 0..DEQUANT_CHUNK {
            codes[i] = (b[i / PER_BYTE] >> ((i % PER_BYTE) * bits)) & mask;
        }
        for i in 0..DEQUANT_CHUNK {
            o[i] = codes[i] as f32 * s[i] + z[i];
        }
    }
    for (i, o) in out.iter_mut().enumerate().skip(whole) {
        let (s, z) = step_zero.at(i);
        *o = code(i) as f32 * s + z;
    }
}

/// Unpacks all `n` codes of a stream.
pub fn unpack(packed: &[u8], bits: u8, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    unpack_into(packed, bits, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn round_trip_every_width_and_length() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for bits in SUPPORTED_BITS {
            for n in [0usize, 1, 2, 3, 5, 8, 63, 64, 65, 1000] {
                let codes: Vec<u8> = (0..n)
                    .map(|_| rng.gen_range(0..(1u16 << bits)) as u8)
                    .collect();
                let packed = pack(&codes, bits);
                assert_eq!(packed.len(), packed_len(n, bits));
                assert_eq!(unpack(&packed, bits, n), codes, "bits {bits} n {n}");
            }
        }
    }

    #[test]
    fn partial_unpack_from_an_aligned_start() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        for bits in SUPPORTED_BITS {
            let codes: Vec<u8> = (0..256)
                .map(|_| rng.gen_range(0..(1u16 << bits)) as u8)
                .collect();
            let packed = pack(&codes, bits);
            for start in [0usize, 8, 64, 192] {
                let mut out = vec![0u8; 40];
                unpack_into(&packed, bits, start, &mut out);
                assert_eq!(out, &codes[start..start + 40], "bits {bits} start {start}");
            }
        }
    }

    #[test]
    fn fused_dequantisation_matches_unpacking() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for bits in SUPPORTED_BITS {
            let codes: Vec<u8> = (0..256)
                .map(|_| rng.gen_range(0..(1u16 << bits)) as u8)
                .collect();
            let packed = pack(&codes, bits);
            let scale: Vec<f32> = (0..100).map(|_| rng.gen_range(0.1f32..1.0)).collect();
            let zero: Vec<f32> = (0..100).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            // Whole chunks, a tail, and a run shorter than one chunk.
            for n in [64, 36, 4] {
                let mut per_code = vec![0f32; n];
                dequantize_run(&packed, bits, 128, (&scale[..n], &zero[..n]), &mut per_code);
                let mut uniform = vec![0f32; n];
                dequantize_run(&packed, bits, 128, (scale[0], zero[0]), &mut uniform);
                for j in 0..n {
                    let q = codes[128 + j] as f32;
                    assert_eq!(per_code[j], q * scale[j] + zero[j], "bits {bits} n {n}");
                    assert_eq!(uniform[j], q * scale[0] + zero[0], "bits {bits} n {n}");
                }
            }
        }
    }

    #[test]
    fn packing_is_dense() {
        assert_eq!(pack(&[1, 2, 3, 0], 2), vec![0b00_11_10_01]);
        assert_eq!(pack(&[0xa, 0x5], 4), vec![0x5a]);
        assert_eq!(packed_len(8, 3), 3);
        assert!(check_bits(5).is_err());
    }
}
