//! Sparse outliers (GEAR, Kang et al. 2024, eq. 3 and Alg. 1 line 3): the entries of both tails,
//! `S = Filter_s(X)`, are removed before quantising so that they do not stretch the quantisation
//! range, and stored exactly (here: an index and an f16 value each).
//!
//! Selection runs per stripe, as the GEAR reference code does: along the tokens of each channel
//! for keys (per-channel quantisation) and along the channels of each token for values. Each
//! stripe of length `n` keeps its `k = max(1, ⌊s·n/2⌋)` largest and `k` smallest entries, about a
//! fraction `s` of the block in all. Because every stripe keeps the same count, the stripe an
//! entry belongs to is implied by its position in the list; only its offset inside the stripe
//! (u8 for stripes of up to 256 entries, else u16) and its value (f16) are stored.
//!
//! A leaner variant ([`Tails::Widest`], ours, not in the paper) keeps only the `k` entries of the
//! one tail whose removal narrows the stripe's range `max − min` the most: the quantisation step
//! of a per-channel/per-token group is set by that range, so this spends half the outlier bytes
//! where they shrink the step.

use crate::quantize::Head;
use anyhow::{bail, Result};
use half::f16;

/// Which tails of a stripe are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tails {
    /// The `k` largest and the `k` smallest entries (GEAR).
    Both,
    /// The `k` entries of the one tail whose removal narrows the range most.
    Widest,
}

impl Tails {
    /// Tails kept per stripe.
    pub fn count(self) -> usize {
        match self {
            Tails::Both => 2,
            Tails::Widest => 1,
        }
    }
}

/// Offsets inside a stripe, one byte when stripes hold at most 256 entries.
#[derive(Debug, Clone)]
pub enum Offsets {
    /// Stripes of up to 256 entries.
    Narrow(Vec<u8>),
    /// Longer stripes.
    Wide(Vec<u16>),
}

impl Offsets {
    fn with_capacity(stripe_len: usize, n: usize) -> Self {
        if stripe_len <= 256 {
            Offsets::Narrow(Vec::with_capacity(n))
        } else {
            Offsets::Wide(Vec::with_capacity(n))
        }
    }

    fn push(&mut self, j: usize) {
        match self {
            Offsets::Narrow(o) => o.push(j as u8),
            Offsets::Wide(o) => o.push(j as u16),
        }
    }

    /// The `n`-th offset.
    pub fn get(&self, n: usize) -> usize {
        match self {
            Offsets::Narrow(o) => o[n] as usize,
            Offsets::Wide(o) => o[n] as usize,
        }
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Offsets::Narrow(o) => o.capacity(),
            Offsets::Wide(o) => 2 * o.capacity(),
        }
    }
}

/// Outliers of one `[rows, cols]` block.
#[derive(Debug, Clone)]
pub struct Outliers {
    /// Stripes run along the tokens of a channel (keys) rather than the channels of a token.
    pub per_channel: bool,
    /// Entries kept per tail per stripe.
    pub per_tail: usize,
    /// Tails kept per stripe.
    pub tails: Tails,
    /// Offset of each entry inside its stripe; stripe `i` owns entries
    /// `[m·i, m·(i+1))`, `m = per_tail · tails.count()`.
    pub offsets: Offsets,
    /// Exact (f16) value of each entry.
    pub values: Vec<f16>,
}

/// Entries kept per tail in a stripe of `len` entries for an outlier fraction `s`.
pub fn per_tail(s: f64, len: usize) -> usize {
    if s <= 0.0 {
        return 0;
    }
    (((s * len as f64) / 2.0).floor() as usize).clamp(1, len / 2)
}

impl Outliers {
    /// Picks the outliers of `x: [rows, cols]` for fraction `s` and returns them with the mask
    /// of picked entries (row-major).
    pub fn extract(
        x: &[f32],
        rows: usize,
        cols: usize,
        s: f64,
        tails: Tails,
        per_channel: bool,
    ) -> Result<(Self, Vec<bool>)> {
        if !(0.0..0.5).contains(&s) {
            bail!("outlier fraction {s} must be in [0, 0.5)");
        }
        let (n_stripes, len) = if per_channel {
            (cols, rows)
        } else {
            (rows, cols)
        };
        if len > u16::MAX as usize + 1 {
            bail!("stripes of {len} entries are too long for u16 offsets");
        }
        let k = per_tail(s, len);
        let at = |stripe: usize, j: usize| {
            if per_channel {
                j * cols + stripe
            } else {
                stripe * cols + j
            }
        };
        let mut mask = vec![false; rows * cols];
        let per_stripe = k * tails.count();
        let mut offsets = Offsets::with_capacity(len, n_stripes * per_stripe);
        let mut values = Vec::with_capacity(n_stripes * per_stripe);
        let mut order: Vec<usize> = Vec::with_capacity(len);
        for stripe in 0..n_stripes {
            if k == 0 {
                break;
            }
            order.clear();
            order.extend(0..len);
            order.sort_unstable_by(|&a, &b| x[at(stripe, a)].total_cmp(&x[at(stripe, b)]));
            let v = |r: usize| x[at(stripe, order[r])];
            // Entries taken from the bottom and from the top of the sorted stripe.
            let (bottom, top) = match tails {
                Tails::Both => (k, k),
                // Range left after dropping the top k vs after dropping the bottom k.
                Tails::Widest if v(len - 1 - k) - v(0) <= v(len - 1) - v(k) => (0, k),
                Tails::Widest => (k, 0),
            };
            for &j in order[..bottom].iter().chain(&order[len - top..]) {
                let i = at(stripe, j);
                mask[i] = true;
                offsets.push(j);
                values.push(f16::from_f32(x[i]));
            }
        }
        Ok((
            Self {
                per_channel,
                per_tail: k,
                tails,
                offsets,
                values,
            },
            mask,
        ))
    }

    /// Number of stored entries.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Block coordinates `(t, c)` of every entry with its value.
    pub fn entries(&self) -> impl Iterator<Item = (usize, usize, f32)> + '_ {
        let per_stripe = (self.tails.count() * self.per_tail).max(1);
        self.values.iter().enumerate().map(move |(n, v)| {
            let j = self.offsets.get(n);
            {
                let stripe = n / per_stripe;
                let (t, c) = if self.per_channel {
                    (j, stripe)
                } else {
                    (stripe, j)
                };
                (t, c, v.to_f32())
            }
        })
    }

    /// Overwrites the dequantised entries of `head` in `out: [rows, head.width]` with the stored
    /// exact values. Stripes are walked directly, so no entry's position needs a division.
    pub fn scatter_head(&self, head: Head, out: &mut [f32]) {
        let per_stripe = self.tails.count() * self.per_tail;
        if self.values.is_empty() || per_stripe == 0 {
            return;
        }
        let (hd, channels) = (head.width, head.channels());
        let entries = |stripe: usize| {
            let range = stripe * per_stripe..(stripe + 1) * per_stripe;
            let values = self.values[range.clone()].iter().map(|v| v.to_f32());
            range.map(|n| self.offsets.get(n)).zip(values)
        };
        if self.per_channel {
            // Stripe = channel, offset = token.
            for c in channels.clone() {
                for (t, v) in entries(c) {
                    out[t * hd + c - channels.start] = v;
                }
            }
        } else {
            // Stripe = token, offset = channel.
            for t in 0..self.values.len() / per_stripe {
                for (c, v) in entries(t).filter(|(c, _)| channels.contains(c)) {
                    out[t * hd + c - channels.start] = v;
                }
            }
        }
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.offsets.heap_bytes() + 2 * self.values.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_both_tails_of_each_stripe() -> Result<()> {
        // 4 tokens x 3 channels; per channel, token 1 is the max and token 2 the min.
        let x = vec![
            0.0, 0.1, 0.2, //
            9.0, 8.0, 7.0, //
            -9.0, -8.0, -7.0, //
            0.5, 0.4, 0.3,
        ];
        let (o, mask) = Outliers::extract(&x, 4, 3, 0.3, Tails::Both, true)?;
        assert_eq!(o.per_tail, 1);
        assert_eq!(o.len(), 6);
        let mut got: Vec<_> = o.entries().map(|(t, c, _)| (t, c)).collect();
        got.sort();
        assert_eq!(got, vec![(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]);
        assert_eq!(mask.iter().filter(|&&m| m).count(), 6);
        for (t, c, v) in o.entries() {
            assert_eq!(v, x[t * 3 + c]);
        }
        // Per token: token 1's max is channel 0, its min channel 2.
        let (o, _) = Outliers::extract(&x, 4, 3, 0.5 - 1e-9, Tails::Both, false)?;
        let token1: Vec<_> = o.entries().filter(|e| e.0 == 1).map(|e| e.1).collect();
        assert_eq!(token1, vec![2, 0]);
        Ok(())
    }

    #[test]
    fn fraction_zero_keeps_nothing_and_counts_follow_s() -> Result<()> {
        let x: Vec<f32> = (0..64 * 192).map(|i| (i as f32 * 0.37).sin()).collect();
        let (o, mask) = Outliers::extract(&x, 64, 192, 0.0, Tails::Both, true)?;
        assert!(o.is_empty() && !mask.contains(&true));
        // The reference setting: s = 2% keeps 1 per tail per stripe for 64 and 192 entries.
        assert_eq!(per_tail(0.02, 64), 1);
        assert_eq!(per_tail(0.02, 192), 1);
        assert_eq!(per_tail(0.02, 4096), 40);
        assert!(Outliers::extract(&x, 64, 192, 0.7, Tails::Both, true).is_err());
        Ok(())
    }

    #[test]
    fn widest_tail_keeps_the_side_that_narrows_the_range_and_offsets_are_bytes() -> Result<()> {
        // Channel 0: a far max (50) and a near min; channel 1: a far min (-40).
        let x = vec![
            0.0, 0.0, //
            50.0, 1.0, //
            -1.0, -40.0, //
            2.0, 3.0,
        ];
        let (o, mask) = Outliers::extract(&x, 4, 2, 0.3, Tails::Widest, true)?;
        let got: Vec<_> = o.entries().collect();
        assert_eq!(got, vec![(1, 0, 50.0), (2, 1, -40.0)]);
        assert_eq!(mask.iter().filter(|&&m| m).count(), 2);
        // Two entries: one byte of offset and two of value each.
        assert!(matches!(o.offsets, Offsets::Narrow(_)));
        assert_eq!(o.heap_bytes(), 2 + 4);
        // Stripes longer than 256 entries need two-byte offsets.
        let long: Vec<f32> = (0..300).map(|i| (i as f32 * 0.1).sin()).collect();
        let (o, _) = Outliers::extract(&long, 300, 1, 0.02, Tails::Both, true)?;
        assert!(matches!(o.offsets, Offsets::Wide(_)));
        assert_eq!(o.heap_bytes(), 6 * 2 + 6 * 2);
        Ok(())
    }
}
