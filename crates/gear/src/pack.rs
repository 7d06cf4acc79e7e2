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

/// Dequantises `out.len()` codes starting at code `start` as `code · scale[j] + zero[j]`,
/// unpacking and scaling in one pass (the hot loop of every decode step). Same alignment rule as
/// [`unpack_into`].
pub fn dequantize_run(
    packed: &[u8],
    bits: u8,
    start: usize,
    scale: &[f32],
    zero: &[f32],
    out: &mut [f32],
) {
    let n = out.len();
    let (scale, zero) = (&scale[..n], &zero[..n]);
    match bits {
        8 => {
            for (((o, &q), &s), &z) in out
                .iter_mut()
                .zip(&packed[start..start + n])
                .zip(scale)
                .zip(zero)
            {
                *o = q as f32 * s + z;
            }
        }
        4 if n.is_multiple_of(2) => {
            let bytes = &packed[start / 2..start / 2 + n / 2];
            for (((o, &b), s), z) in out
                .chunks_exact_mut(2)
                .zip(bytes)
                .zip(scale.chunks_exact(2))
                .zip(zero.chunks_exact(2))
            {
                o[0] = (b & 0x0f) as f32 * s[0] + z[0];
                o[1] = (b >> 4) as f32 * s[1] + z[1];
            }
        }
        2 if n.is_multiple_of(4) => {
            let bytes = &packed[start / 4..start / 4 + n / 4];
            for (((o, &b), s), z) in out
                .chunks_exact_mut(4)
                .zip(bytes)
                .zip(scale.chunks_exact(4))
                .zip(zero.chunks_exact(4))
            {
                o[0] = (b & 0x03) as f32 * s[0] + z[0];
                o[1] = ((b >> 2) & 0x03) as f32 * s[1] + z[1];
                o[2] = ((b >> 4) & 0x03) as f32 * s[2] + z[2];
                o[3] = (b >> 6) as f32 * s[3] + z[3];
            }
        }
        _ => {
            let mut codes = vec![0u8; n];
            unpack_into(packed, bits, start, &mut codes);
            for (((o, &q), &s), &z) in out.iter_mut().zip(&codes).zip(scale).zip(zero) {
                *o = q as f32 * s + z;
            }
        }
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
            let codes: Vec<u8> = (0..192)
                .map(|_| rng.gen_range(0..(1u16 << bits)) as u8)
                .collect();
            let packed = pack(&codes, bits);
            let scale: Vec<f32> = (0..64).map(|_| rng.gen_range(0.1f32..1.0)).collect();
            let zero: Vec<f32> = (0..64).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let mut out = vec![0f32; 64];
            dequantize_run(&packed, bits, 128, &scale, &zero, &mut out);
            for j in 0..64 {
                assert_eq!(
                    out[j],
                    codes[128 + j] as f32 * scale[j] + zero[j],
                    "bits {bits}"
                );
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
