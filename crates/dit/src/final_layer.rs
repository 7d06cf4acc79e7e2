//! The DiT decoder (paper §3.2 "Transformer decoder": "we apply the final layer norm (adaptive if
//! using adaLN) and linearly decode each token into a p x p x 2C tensor"; reference `FinalLayer`).
//! The linear layer is zero-initialised for every design (the network starts by predicting 0);
//! the adaptive norm's regression is zero-initialised for adaLN-Zero, Xavier for adaLN.

use crate::config::{Conditioning, DitConfig};
use crate::layers::Linear;
use crate::layers::{linear, zero_linear, LayerNorm};
use crate::modulated_norm::modulated_layer_norm;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Final norm (adaptive or affine), then `D -> p*p*out_channels`.
#[derive(Debug, Clone)]
pub struct FinalLayer {
    norm: LayerNorm,
    modulation: Option<Linear>,
    linear: Linear,
}

impl FinalLayer {
    /// Reads `linear` and `adaLN_modulation.1` (adaptive designs) or `norm_final` (others) under `vb`.
    pub fn new(vb: &VarBuilder, cfg: &DitConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let out = cfg.patch_size * cfg.patch_size * cfg.out_channels();
        let modulation_vb = vb.pp("adaLN_modulation").pp("1");
        let (norm, modulation) = match cfg.conditioning {
            Conditioning::AdaLnZero => (
                LayerNorm::plain(),
                Some(zero_linear(&modulation_vb, d, 2 * d)?),
            ),
            Conditioning::AdaLn => (LayerNorm::plain(), Some(linear(&modulation_vb, d, 2 * d)?)),
            Conditioning::InContext | Conditioning::CrossAttention => {
                (LayerNorm::affine(&vb.pp("norm_final"), d)?, None)
            }
        };
        Ok(Self {
            norm,
            modulation,
            linear: zero_linear(&vb.pp("linear"), d, out)?,
        })
    }

    /// `[B, T, D]` image tokens and `c = t + y` (`[B, D]`) to `[B, T, p*p*out_channels]`.
    pub fn forward(&self, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let h = match &self.modulation {
            Some(m) => {
                let shift_scale = m.forward(&candle_nn::ops::silu(c)?)?.chunk(2, 1)?;
                modulated_layer_norm(x, &shift_scale[0], &shift_scale[1])?
            }
            None => self.norm.forward(x)?,
        };
        self.linear.forward(&h)
    }
}
