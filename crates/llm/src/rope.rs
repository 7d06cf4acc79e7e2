//! Rotary position embedding (Su et al. 2021, "RoFormer", eq. 34): channel pair `(x₁, x₂)` of a
//! head at position `m` is rotated by the angle `m·θ^(-2i/d)`.
//!
//! Angles are computed in f64 for the exact positions asked for, so there is no table bound to a
//! maximum sequence length and positions far beyond the training context stay accurate.

use crate::config::RopeStyle;
use crate::{cpu_ops, profile};
use anyhow::Result;
use candle_core::{Device, Tensor};

/// RoPE of one model: base θ, head width and channel pairing.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f64>,
    style: RopeStyle,
    device: Device,
}

/// cos/sin tables for a list of positions, computed once and applied to any number of heads.
#[derive(Debug, Clone)]
pub struct RopeAngles {
    positions: Vec<usize>,
    cos: Tensor,
    sin: Tensor,
    style: RopeStyle,
}

impl Rope {
    /// RoPE with base `theta` for heads of width `head_dim`.
    pub fn new(theta: f64, head_dim: usize, style: RopeStyle, device: &Device) -> Self {
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64))
            .collect();
        Self {
            inv_freq,
            style,
            device: device.clone(),
        }
    }

    /// The cos/sin tables `[positions.len(), head_dim/2]` for these positions.
    pub fn angles(&self, positions: &[usize]) -> Result<RopeAngles> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in &self.inv_freq {
                let a = p as f64 * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        let shape = (positions.len(), half);
        Ok(RopeAngles {
            positions: positions.to_vec(),
            cos: Tensor::from_vec(cos, shape, &self.device)?,
            sin: Tensor::from_vec(sin, shape, &self.device)?,
            style: self.style,
        })
    }

    /// Rotates `x: [n_heads, t, head_dim]` to the given positions (one per row `t`).
    pub fn rotate(&self, x: &Tensor, positions: &[usize]) -> Result<Tensor> {
        self.angles(positions)?.rotate(x)
    }
}

impl RopeAngles {
    /// The positions these tables were built for.
    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    /// Rotates `x: [n_heads, t, head_dim]`, row `i` to `positions[i]`.
    pub fn rotate(&self, x: &Tensor) -> Result<Tensor> {
        let _span = profile::span(profile::Op::Rope);
        let interleaved = self.style == RopeStyle::Interleaved;
        if x.device().is_cpu() {
            return cpu_ops::rope(x, &self.cos, &self.sin, interleaved);
        }
        let x = x.unsqueeze(0)?.contiguous()?;
        let y = if interleaved {
            candle_nn::rotary_emb::rope_i(&x, &self.cos, &self.sin)?
        } else {
            candle_nn::rotary_emb::rope(&x, &self.cos, &self.sin)?
        };
        Ok(y.squeeze(0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_preserves_relative_position() -> Result<()> {
        // <R(a)q, R(b)k> depends only on b - a: the property StreamingLLM relies on.
        let dev = Device::Cpu;
        for style in [RopeStyle::Interleaved, RopeStyle::HalfSplit] {
            let rope = Rope::new(10_000.0, 8, style, &dev);
            let q = Tensor::new(&[[[0.3f32, -1.0, 0.5, 2.0, 0.1, 0.7, -0.2, 1.1]]], &dev)?;
            let k = Tensor::new(&[[[1.0f32, 0.2, -0.4, 0.9, 1.5, -0.3, 0.6, 0.05]]], &dev)?;
            let dot = |a: usize, b: usize| -> Result<f32> {
                let qa = rope.rotate(&q, &[a])?;
                let kb = rope.rotate(&k, &[b])?;
                Ok((qa * kb)?.sum_all()?.to_scalar::<f32>()?)
            };
            let near = dot(7, 3)?;
            let far = dot(100_007, 100_003)?;
            assert!((near - far).abs() < 1e-3, "{style:?}: {near} vs {far}");
            assert!((dot(7, 3)? - dot(7, 6)?).abs() > 1e-3);
        }
        Ok(())
    }

    #[test]
    fn position_zero_is_identity() -> Result<()> {
        let dev = Device::Cpu;
        let rope = Rope::new(10_000.0, 4, RopeStyle::Interleaved, &dev);
        let x = Tensor::new(&[[[1f32, 2., 3., 4.]]], &dev)?;
        let y = rope.rotate(&x, &[0])?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![1., 2., 3., 4.]);
        Ok(())
    }
}
