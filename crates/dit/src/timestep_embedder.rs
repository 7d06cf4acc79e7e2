//! Timestep embedding (paper §3.2 "Conditioning inputs": "we embed input timesteps using a
//! 256-dimensional frequency embedding followed by a two-layer MLP with dimensionality equal to
//! the transformer's hidden size and SiLU activations").
//!
//! Frequencies as in GLIDE / the reference: `f_k = exp(-ln(10000) * k / 128)`, `k < 128`, features
//! `[cos(t f), sin(t f)]` (cosine first). diffusers' `Timesteps(256, flip_sin_to_cos=True,
//! downscale_freq_shift=1)` in its DiT divides by 127 instead of 128; we follow the original.

use crate::config::FREQUENCY_EMBEDDING_SIZE;
use crate::init::EMBEDDING_INIT;
use crate::layers::linear_with_init;
use crate::layers::Linear;
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// The sinusoidal features `[B, dim]` of timesteps `t` (`[B]`, possibly fractional).
pub fn timestep_frequencies(t: &Tensor, dim: usize, max_period: f64) -> Result<Tensor> {
    let half = dim / 2;
    // In f32 like the reference (`torch.exp(-log(P) * arange(half, f32) / half)`): at t ~ 1000 an
    // f64-rounded frequency would already move the features by ~1e-5.
    let freqs: Vec<f32> = (0..half)
        .map(|k| (-(max_period.ln() as f32) * k as f32 / half as f32).exp())
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = t
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?;
    let mut emb = Tensor::cat(&[args.cos()?, args.sin()?], 1)?;
    if dim % 2 == 1 {
        emb = emb.pad_with_zeros(1, 0, 1)?;
    }
    Ok(emb)
}

/// `t -> MLP(freq(t))`, weights N(0, 0.02), biases zero.
#[derive(Debug, Clone)]
pub struct TimestepEmbedder {
    fc1: Linear,
    fc2: Linear,
}

impl TimestepEmbedder {
    /// Reads `mlp.0` and `mlp.2` under `vb` (the reference's `nn.Sequential` indices).
    pub fn new(vb: &VarBuilder, hidden: usize) -> Result<Self> {
        let vb = vb.pp("mlp");
        Ok(Self {
            fc1: linear_with_init(
                &vb.pp("0"),
                FREQUENCY_EMBEDDING_SIZE,
                hidden,
                EMBEDDING_INIT,
            )?,
            fc2: linear_with_init(&vb.pp("2"), hidden, hidden, EMBEDDING_INIT)?,
        })
    }

    /// `[B]` timesteps to `[B, D]`.
    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
        let freq = timestep_frequencies(t, FREQUENCY_EMBEDDING_SIZE, 10000.0)?;
        self.fc2
            .forward(&candle_nn::ops::silu(&self.fc1.forward(&freq)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn frequencies_cos_first() {
        let t = Tensor::new(&[0f32, 3.0], &Device::Cpu).unwrap();
        let e = timestep_frequencies(&t, 8, 10000.0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(e[0], vec![1., 1., 1., 1., 0., 0., 0., 0.]);
        // k = 1 of half = 4: f = 10000^(-1/4) = 0.1
        assert!((e[1][1] - (0.3f32).cos()).abs() < 1e-6);
        assert!((e[1][5] - (0.3f32).sin()).abs() < 1e-6);
        assert_eq!(
            timestep_frequencies(&t, 9, 10000.0).unwrap().dims(),
            &[2, 9]
        );
    }
}
