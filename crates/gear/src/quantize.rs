//! Uniform asymmetric quantisation (GEAR, Kang et al. 2024, eq. 1; KIVI, Liu et al. 2024, eq. 2):
//! a group `X_g` is stored as `b`-bit codes `q = round((x − min X_g) / Δ)` with
//! `Δ = (max X_g − min X_g) / (2^b − 1)` and dequantised as `x̂ = q·Δ + min X_g`.
//!
//! A block is a `[tokens, channels]` matrix (channels = KV heads × head width, the heads side by
//! side). Groups run either along the tokens of one channel (per-channel, the keys of KIVI and of
//! GEAR's KCVT) or along the channels of one token (per-token, the values). Codes are bit-packed
//! ([`crate::pack`]); the step `Δ` and the zero point `min` are stored as f16 per group.

use crate::pack::{check_bits, dequantize_run, pack, packed_len};
use anyhow::{bail, Result};
use half::f16;

/// Which way the groups of a quantiser run over a `[tokens, channels]` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Each channel quantised over `group` consecutive tokens (`0` = all tokens of the block).
    PerChannel {
        /// Tokens per group.
        group: usize,
    },
    /// Each token quantised over `group` consecutive channels (`0` = all channels).
    PerToken {
        /// Channels per group.
        group: usize,
    },
}

impl Grouping {
    /// The group length in a `rows × cols` block, `0` resolved to the whole axis.
    pub fn group_len(&self, rows: usize, cols: usize) -> usize {
        match *self {
            Self::PerChannel { group } => {
                if group == 0 {
                    rows
                } else {
                    group
                }
            }
            Self::PerToken { group } => {
                if group == 0 {
                    cols
                } else {
                    group
                }
            }
        }
    }

    /// Checks that groups tile a `rows × cols` block exactly.
    pub fn check(&self, rows: usize, cols: usize) -> Result<()> {
        let (len, axis, what) = match self {
            Self::PerChannel { .. } => (rows, "tokens", "per-channel"),
            Self::PerToken { .. } => (cols, "channels", "per-token"),
        };
        let g = self.group_len(rows, cols);
        if g == 0 || len % g != 0 {
            bail!("{what} group of {g} does not divide the {len} {axis} of a block");
        }
        Ok(())
    }

    /// Number of groups in a `rows × cols` block.
    pub fn n_groups(&self, rows: usize, cols: usize) -> usize {
        rows * cols / self.group_len(rows, cols)
    }

    /// Index of the group holding entry `(t, c)`.
    #[inline]
    pub fn group_of(&self, t: usize, c: usize, rows: usize, cols: usize) -> usize {
        let g = self.group_len(rows, cols);
        match self {
            Self::PerChannel { .. } => (t / g) * cols + c,
            Self::PerToken { .. } => t * (cols / g) + c / g,
        }
    }
}

/// One head of a `[tokens, channels]` block in the layout attention reads: channels
/// `[head·width, (head+1)·width)` of every token, `[tokens, width]` row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Head index.
    pub index: usize,
    /// Head width (`head_dim`).
    pub width: usize,
}

impl Head {
    /// The block's channel range of this head.
    pub fn channels(&self) -> std::ops::Range<usize> {
        self.index * self.width..(self.index + 1) * self.width
    }
}

/// A `[rows, cols]` block quantised group-wise with packed codes.
#[derive(Debug, Clone)]
pub struct QuantizedMatrix {
    /// Bits per code.
    pub bits: u8,
    /// Tokens.
    pub rows: usize,
    /// Channels.
    pub cols: usize,
    /// Group layout.
    pub grouping: Grouping,
    /// Packed codes, row-major (`t·cols + c`).
    pub codes: Vec<u8>,
    /// Step `Δ` per group.
    pub scale: Vec<f16>,
    /// Zero point (the group minimum) per group.
    pub zero: Vec<f16>,
}

impl QuantizedMatrix {
    /// Quantises `x: [rows, cols]` (row-major). Entries flagged in `exclude` (outliers stored
    /// elsewhere) do not widen their group's range.
    pub fn quantize(
        x: &[f32],
        rows: usize,
        cols: usize,
        bits: u8,
        grouping: Grouping,
        exclude: Option<&[bool]>,
    ) -> Result<Self> {
        check_bits(bits)?;
        grouping.check(rows, cols)?;
        if x.len() != rows * cols {
            bail!("block has {} values, expected {rows}x{cols}", x.len());
        }
        let n_groups = grouping.n_groups(rows, cols);
        let mut lo = vec![f32::INFINITY; n_groups];
        let mut hi = vec![f32::NEG_INFINITY; n_groups];
        for t in 0..rows {
            for c in 0..cols {
                let i = t * cols + c;
                if exclude.is_some_and(|m| m[i]) {
                    continue;
                }
                let g = grouping.group_of(t, c, rows, cols);
                lo[g] = lo[g].min(x[i]);
                hi[g] = hi[g].max(x[i]);
            }
        }
        let levels = ((1u16 << bits) - 1) as f32;
        let mut scale = Vec::with_capacity(n_groups);
        let mut zero = Vec::with_capacity(n_groups);
        for (&l, &h) in lo.iter().zip(&hi) {
            let (l, h) = if l.is_finite() { (l, h) } else { (0.0, 0.0) };
            zero.push(f16::from_f32(l));
            scale.push(f16::from_f32((h - l) / levels));
        }
        let mut codes = vec![0u8; rows * cols];
        for t in 0..rows {
            for c in 0..cols {
                let g = grouping.group_of(t, c, rows, cols);
                let (s, z) = (scale[g].to_f32(), zero[g].to_f32());
                let i = t * cols + c;
                codes[i] = if s > 0.0 {
                    ((x[i] - z) / s).round().clamp(0.0, levels) as u8
                } else {
                    0
                };
            }
        }
        Ok(Self {
            bits,
            rows,
            cols,
            grouping,
            codes: pack(&codes, bits),
            scale,
            zero,
        })
    }

    /// Dequantises into `[rows, cols]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        let whole = Head {
            index: 0,
            width: self.cols,
        };
        self.dequantize_head(whole, &mut out);
        out
    }

    /// Dequantises the channels of `head` into `out: [rows, head.width]` row-major.
    pub fn dequantize_head(&self, head: Head, out: &mut [f32]) {
        let (rows, cols, hd) = (self.rows, self.cols, head.width);
        let c0 = head.index * hd;
        let g = self.grouping.group_len(rows, cols);
        let code_run = |t: usize| (t * cols + c0, t * hd..(t + 1) * hd);
        match self.grouping {
            // One step and zero point per channel for each run of `g` tokens.
            Grouping::PerChannel { .. } => {
                let (mut s, mut z) = (vec![0f32; hd], vec![0f32; hd]);
                for group in 0..rows / g {
                    let at = group * cols + c0;
                    for j in 0..hd {
                        s[j] = self.scale[at + j].to_f32();
                        z[j] = self.zero[at + j].to_f32();
                    }
                    for t in group * g..(group + 1) * g {
                        let (start, o) = code_run(t);
                        dequantize_run(
                            &self.codes,
                            self.bits,
                            start,
                            (&s[..], &z[..]),
                            &mut out[o],
                        );
                    }
                }
            }
            // Each token: one step and zero point per run of channels inside one group (the
            // whole head when a group spans it).
            Grouping::PerToken { .. } => {
                let per_row = cols / g;
                let mut segments = Vec::new();
                let mut c = c0;
                while c < c0 + hd {
                    let end = ((c / g + 1) * g).min(c0 + hd);
                    segments.push((c - c0..end - c0, c / g));
                    c = end;
                }
                for t in 0..rows {
                    let (start, o) = code_run(t);
                    let row = &mut out[o];
                    for (range, group) in &segments {
                        let gi = t * per_row + group;
                        let step_zero = (self.scale[gi].to_f32(), self.zero[gi].to_f32());
                        let at = start + range.start;
                        dequantize_run(
                            &self.codes,
                            self.bits,
                            at,
                            step_zero,
                            &mut row[range.clone()],
                        );
                    }
                }
            }
        }
    }

    /// Heap bytes held (codes, steps, zero points).
    pub fn heap_bytes(&self) -> usize {
        self.codes.capacity() + 2 * (self.scale.capacity() + self.zero.capacity())
    }

    /// Bytes of the codes alone.
    pub fn code_bytes(&self) -> usize {
        packed_len(self.rows * self.cols, self.bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..rows * cols)
            .map(|_| rng.gen_range(-3.0f32..3.0))
            .collect()
    }

    /// Max |x − x̂| per group must stay within half a step (plus f16 rounding of Δ and min).
    #[test]
    fn error_is_within_half_a_step() -> Result<()> {
        let (rows, cols) = (64, 24);
        let x = random(rows, cols, 1);
        for bits in [2u8, 3, 4, 8] {
            for grouping in [
                Grouping::PerChannel { group: 0 },
                Grouping::PerChannel { group: 16 },
                Grouping::PerToken { group: 0 },
                Grouping::PerToken { group: 8 },
            ] {
                let q = QuantizedMatrix::quantize(&x, rows, cols, bits, grouping, None)?;
                let y = q.dequantize();
                for t in 0..rows {
                    for c in 0..cols {
                        let g = grouping.group_of(t, c, rows, cols);
                        let step = q.scale[g].to_f32();
                        let err = (x[t * cols + c] - y[t * cols + c]).abs();
                        let bound = 0.5 * step + 3e-3 * (1.0 + x[t * cols + c].abs());
                        assert!(err <= bound, "{bits} bits {grouping:?}: {err} > {bound}");
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn more_bits_less_error_and_fewer_groups_fewer_bytes() -> Result<()> {
        let (rows, cols) = (64, 32);
        let x = random(rows, cols, 2);
        let mse = |bits| -> Result<f32> {
            let q = QuantizedMatrix::quantize(
                &x,
                rows,
                cols,
                bits,
                Grouping::PerToken { group: 0 },
                None,
            )?;
            let y = q.dequantize();
            Ok(x.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum::<f32>() / x.len() as f32)
        };
        assert!(mse(8)? < mse(4)? && mse(4)? < mse(3)? && mse(3)? < mse(2)?);
        let q =
            QuantizedMatrix::quantize(&x, rows, cols, 4, Grouping::PerChannel { group: 0 }, None)?;
        assert_eq!(q.code_bytes(), rows * cols / 2);
        assert_eq!(q.scale.len(), cols);
        Ok(())
    }

    #[test]
    fn excluded_entries_do_not_widen_the_range() -> Result<()> {
        let mut x = vec![0.0f32; 8 * 4];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (i % 5) as f32 * 0.1;
        }
        x[5] = 100.0;
        let mut mask = vec![false; x.len()];
        mask[5] = true;
        let q =
            QuantizedMatrix::quantize(&x, 8, 4, 2, Grouping::PerToken { group: 0 }, Some(&mask))?;
        assert!(q.scale[1].to_f32() < 0.2, "{}", q.scale[1]);
        Ok(())
    }

    #[test]
    fn constant_groups_are_exact_and_bad_groups_refused() -> Result<()> {
        let x = vec![1.5f32; 16];
        let q = QuantizedMatrix::quantize(&x, 4, 4, 2, Grouping::PerChannel { group: 0 }, None)?;
        assert_eq!(q.dequantize(), x);
        assert!(
            QuantizedMatrix::quantize(&x, 4, 4, 2, Grouping::PerToken { group: 3 }, None).is_err()
        );
        assert!(
            QuantizedMatrix::quantize(&x, 4, 4, 5, Grouping::PerToken { group: 0 }, None).is_err()
        );
        Ok(())
    }
}
