//! Random blocks and the shared kernel-vs-reference check of the unit tests.

use crate::quantize_q8::{quantize_row_scalar, BlockQ8, QK};
use crate::VecDot;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn f16_bytes(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// `nb` random `Q4_0` blocks (`unit`: d = 1).
pub fn random_q4_0(rng: &mut StdRng, nb: usize, unit: bool) -> Vec<u8> {
    let mut w = Vec::new();
    for _ in 0..nb {
        let d = if unit { 1.0 } else { rng.gen_range(0.001..0.1) };
        w.extend(f16_bytes(d));
        w.extend((0..16).map(|_| rng.gen::<u8>()));
    }
    w
}

/// `nb` random `Q4_1` blocks (`unit`: d = 1, m = 0).
pub fn random_q4_1(rng: &mut StdRng, nb: usize, unit: bool) -> Vec<u8> {
    let mut w = Vec::new();
    for _ in 0..nb {
        let (d, m) = if unit {
            (1.0, 0.0)
        } else {
            (rng.gen_range(0.001..0.1), rng.gen_range(-0.5..0.1))
        };
        w.extend(f16_bytes(d));
        w.extend(f16_bytes(m));
        w.extend((0..16).map(|_| rng.gen::<u8>()));
    }
    w
}

/// `nb` random `Q8_0` blocks (`unit`: d = 1), including the extreme value -128.
pub fn random_q8_0(rng: &mut StdRng, nb: usize, unit: bool) -> Vec<u8> {
    let mut w = Vec::new();
    for b in 0..nb {
        let d = if unit { 1.0 } else { rng.gen_range(0.001..0.1) };
        w.extend(f16_bytes(d));
        w.extend((0..32).map(|j| if j == b % 32 { 0x80 } else { rng.gen::<u8>() }));
    }
    w
}

/// Checks a fast kernel against the scalar reference and against a float dot of the
/// dequantised row, on odd block counts, unaligned weight slices, and unit scales (where the
/// result is the exact integer sum, so the integer part must agree bit for bit).
pub fn check_dot(
    gen: fn(&mut StdRng, usize, bool) -> Vec<u8>,
    fast: VecDot,
    scalar: VecDot,
    dequantize: fn(&[u8], &mut [f32]),
) {
    let mut rng = StdRng::seed_from_u64(7);
    for nb in [1, 2, 3, 5, 17, 18, 48] {
        for offset in [0, 1, 3] {
            // Weights copied to an odd address.
            let w = gen(&mut rng, nb, false);
            let mut buf = vec![0u8; offset];
            buf.extend(&w);
            let w = &buf[offset..];
            let x: Vec<f32> = (0..nb * QK).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let mut xq = vec![BlockQ8::default(); nb];
            quantize_row_scalar(&x, &mut xq);
            let (a, b) = (fast(w, &xq), scalar(w, &xq));
            let mut wf = vec![0f32; nb * QK];
            dequantize(w, &mut wf);
            let xf: Vec<f32> = xq
                .iter()
                .flat_map(|b| b.qs.map(|q| b.d * q as f32))
                .collect();
            let exact: f64 = wf.iter().zip(&xf).map(|(&p, &q)| p as f64 * q as f64).sum();
            let scale: f64 = wf
                .iter()
                .zip(&xf)
                .map(|(&p, &q)| (p * q).abs() as f64)
                .sum();
            let tol = 1e-5 * scale + 1e-6;
            assert!(
                ((a - b) as f64).abs() <= tol,
                "nb {nb}: fast {a} scalar {b}"
            );
            // Q4_1's offset uses s = d_x·Σp, which is exact up to f32 rounding.
            assert!(
                (b as f64 - exact).abs() <= 1e-4 * scale + 1e-5,
                "nb {nb}: {b} vs {exact}"
            );

            // Unit scales: integer sums, exact in f32 at these sizes.
            let w = gen(&mut rng, nb, true);
            let mut xq = vec![BlockQ8::default(); nb];
            for b in &mut xq {
                b.qs = std::array::from_fn(|_| rng.gen_range(-127..=127));
                b.d = 1.0;
                b.s = b.qs.iter().map(|&q| q as f32).sum();
            }
            assert_eq!(
                fast(&w, &xq),
                scalar(&w, &xq),
                "nb {nb}: integer parts differ"
            );
        }
    }
}

/// `n` deterministic values spread over `[lo, hi)` (a 64-bit LCG; no RNG state to thread through).
pub fn lcg_values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}
