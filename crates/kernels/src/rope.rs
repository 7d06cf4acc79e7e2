//! Rotary position embedding (Su et al. 2021, RoFormer eq. 34) applied in place:
//! each pair `(a, b)` of a head vector at position `p` becomes
//! `(a cos θ_j p − b sin θ_j p, a sin θ_j p + b cos θ_j p)`. The two pairings GGUF/HF models
//! use: `interleaved` pairs `(2j, 2j+1)`, half-split pairs `(j, j + d/2)`.
//! candle's `rope`/`rope_i` split every call over rayon, a thread hand-off per call in decode.

/// Rotates `x: [heads, t, d]` (contiguous) in place with `cos, sin: [t, d/2]`.
pub fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32], t: usize, d: usize, interleaved: bool) {
    let half = d / 2;
    assert!(
        d.is_multiple_of(2) && t > 0,
        "rope needs an even head width and a token"
    );
    assert_eq!(x.len() % (t * d), 0, "x is not [heads, t, d]");
    assert!(
        cos.len() == t * half && sin.len() == t * half,
        "angles are not [t, d/2]"
    );
    for row in x.chunks_exact_mut(t * d) {
        for (i, v) in row.chunks_exact_mut(d).enumerate() {
            let (c, s) = (
                &cos[i * half..(i + 1) * half],
                &sin[i * half..(i + 1) * half],
            );
            if interleaved {
                for (j, pair) in v.chunks_exact_mut(2).enumerate() {
                    let (a, b) = (pair[0], pair[1]);
                    pair[0] = a * c[j] - b * s[j];
                    pair[1] = a * s[j] + b * c[j];
                }
            } else {
                let (lo, hi) = v.split_at_mut(half);
                for j in 0..half {
                    let (a, b) = (lo[j], hi[j]);
                    lo[j] = a * c[j] - b * s[j];
                    hi[j] = a * s[j] + b * c[j];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_preserve_norm_and_match_pairings() {
        let (t, d) = (3, 8);
        let angles: Vec<f32> = (0..t * d / 2).map(|k| 0.37 * k as f32).collect();
        let (cos, sin): (Vec<f32>, Vec<f32>) = angles.iter().map(|a| (a.cos(), a.sin())).unzip();
        let x: Vec<f32> = (0..2 * t * d).map(|k| (k as f32 * 0.71).sin()).collect();
        for interleaved in [false, true] {
            let mut y = x.clone();
            rotate(&mut y, &cos, &sin, t, d, interleaved);
            for (xv, yv) in x.chunks_exact(d).zip(y.chunks_exact(d)) {
                let n = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
                assert!((n(xv) - n(yv)).abs() < 1e-5);
            }
            // second token of the second head, pair j = 1
            let (i, j, base) = (1, 1, t * d + d);
            let (a, b) = if interleaved {
                (x[base + 2 * j], x[base + 2 * j + 1])
            } else {
                (x[base + j], x[base + j + d / 2])
            };
            let (c, s) = (cos[i * d / 2 + j], sin[i * d / 2 + j]);
            let got = if interleaved {
                y[base + 2 * j]
            } else {
                y[base + j]
            };
            assert!((got - (a * c - b * s)).abs() < 1e-6);
        }
    }
}
