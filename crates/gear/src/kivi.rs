//! The quantised backbone `D̂` of a K/V block: KIVI's scheme (Liu et al. 2024, §3.2-3.3 and
//! Alg. 1) and GEAR's KCVT (Kang et al. 2024, §4 "KCVT": keys per channel, values per token).
//!
//! KIVI quantises keys **per channel** in groups of `G` tokens — the key cache has a few channels
//! of large magnitude, and grouping along tokens keeps each channel's error local — and values
//! **per token** in groups of `G` channels, while the newest `R` tokens stay in full precision
//! (the streaming buffer of [`crate::policy`]). KCVT is the same split with each group spanning
//! the whole block: one range per channel over the block's tokens for keys, one range per token
//! over all channels (all KV heads) for values.

use crate::pack::check_bits;
use crate::quantize::{Grouping, QuantizedMatrix};
use anyhow::Result;

/// How a block's keys and values are quantised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backbone {
    /// Bits per code (2, 3, 4 or 8).
    pub bits: u8,
    /// Group length: tokens per key group and channels per value group; `0` = the whole block
    /// (KCVT).
    pub group: usize,
}

impl Backbone {
    /// KCVT: per-channel keys and per-token values over the whole block.
    pub fn kcvt(bits: u8) -> Result<Self> {
        check_bits(bits)?;
        Ok(Self { bits, group: 0 })
    }

    /// KIVI: per-channel keys in groups of `group` tokens, per-token values in groups of
    /// `group` channels.
    pub fn kivi(bits: u8, group: usize) -> Result<Self> {
        check_bits(bits)?;
        Ok(Self { bits, group })
    }

    /// Grouping of keys.
    pub fn key_grouping(&self) -> Grouping {
        Grouping::PerChannel { group: self.group }
    }

    /// Grouping of values.
    pub fn value_grouping(&self) -> Grouping {
        Grouping::PerToken { group: self.group }
    }

    /// Grouping for keys (`is_key`) or values.
    pub fn grouping(&self, is_key: bool) -> Grouping {
        if is_key {
            self.key_grouping()
        } else {
            self.value_grouping()
        }
    }

    /// Checks that the groups tile a `[block, channels]` block.
    pub fn check(&self, block: usize, channels: usize) -> Result<()> {
        self.key_grouping().check(block, channels)?;
        self.value_grouping().check(block, channels)
    }

    /// Quantises a `[rows, cols]` block of keys or values, leaving out `exclude`d entries.
    pub fn quantize(
        &self,
        x: &[f32],
        rows: usize,
        cols: usize,
        is_key: bool,
        exclude: Option<&[bool]>,
    ) -> Result<QuantizedMatrix> {
        QuantizedMatrix::quantize(x, rows, cols, self.bits, self.grouping(is_key), exclude)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kivi_groups_keys_by_channel_and_values_by_token() -> Result<()> {
        // Channel 0 of the keys is huge; per-channel grouping keeps channel 1 precise.
        let rows = 8;
        let x: Vec<f32> = (0..rows)
            .flat_map(|t| [100.0 * t as f32, 0.01 * t as f32, 50.0, -30.0])
            .collect();
        let b = Backbone::kivi(2, 0)?;
        let k = b.quantize(&x, rows, 4, true, None)?.dequantize();
        let v = b.quantize(&x, rows, 4, false, None)?.dequantize();
        let err = |y: &[f32]| {
            (0..rows)
                .map(|t| (y[4 * t + 1] - x[4 * t + 1]).abs())
                .fold(0.0, f32::max)
        };
        assert!(err(&k) < 0.013, "{}", err(&k));
        assert!(err(&v) > 1.0, "{}", err(&v));
        assert!(Backbone::kivi(2, 3)?.check(64, 192).is_err());
        assert!(Backbone::kcvt(5).is_err());
        Ok(())
    }
}
