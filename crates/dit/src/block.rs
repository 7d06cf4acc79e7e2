//! The four DiT block designs of paper §3.2 ("DiT block design", Figure 3): one block whose
//! conditioning is a policy, everything else shared (pre-norm self-attention and MLP residual
//! branches; timm `Attention`, `Mlp` with tanh-GELU; LayerNorm eps 1e-6).
//!
//! - in-context: a standard ViT block (affine LayerNorms); t and c reach it as two extra tokens;
//! - cross-attention: a ViT block plus `x += CrossAttn(LN(x), [t; c])` after self-attention;
//! - adaLN: `(γ1, β1, γ2, β2) = Linear(SiLU(t + c))`, each LayerNorm output `LN(x)(1 + γ) + β`;
//! - adaLN-Zero: also `α1, α2` scaling each residual branch, `x += α · F(LN(x)(1 + γ) + β)`, with
//!   the regression zero-initialised so that each block starts as the identity (reference
//!   `DiTBlock`: chunks `shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp`).

use crate::attention::{CrossAttention, SelfAttention};
use crate::config::{Conditioning, DitConfig};
use crate::fused_ops::gated_residual;
use crate::layers::Linear;
use crate::layers::{linear, zero_linear, LayerNorm, Mlp};
use crate::modulated_norm::modulated_layer_norm;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// What a block may read of the condition: the vector `t + c` (`[B, D]`, adaLN designs) and the
/// token sequence `[t, c...]` (`[B, L, D]`, cross-attention).
#[derive(Debug, Clone)]
pub struct ConditionEmbedding {
    /// `t_emb + c_emb`, `[B, D]`.
    pub vector: Tensor,
    /// `[t_emb, c_emb...]`, `[B, 1 + L, D]` (`L = 1` for a class label).
    pub tokens: Tensor,
}

#[derive(Debug, Clone)]
enum BlockDesign {
    InContext,
    CrossAttention {
        norm: LayerNorm,
        attn: CrossAttention,
    },
    AdaLn {
        modulation: Linear,
    },
    AdaLnZero {
        modulation: Linear,
    },
}

/// One DiT block.
#[derive(Debug, Clone)]
pub struct DitBlock {
    norm1: LayerNorm,
    attn: SelfAttention,
    norm2: LayerNorm,
    mlp: Mlp,
    design: BlockDesign,
}

impl DitBlock {
    /// Builds the block of `cfg.conditioning` under `vb` (reference names: `norm1`, `attn`, `norm2`,
    /// `mlp`, `adaLN_modulation.1`; ours for cross-attention: `norm_cross`, `cross_attn`).
    pub fn new(vb: &VarBuilder, cfg: &DitConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let adaptive = cfg.conditioning.is_adaptive();
        let norm = |name: &str| -> Result<LayerNorm> {
            if adaptive {
                Ok(LayerNorm::plain())
            } else {
                LayerNorm::affine(&vb.pp(name), d)
            }
        };
        let norm1 = norm("norm1")?;
        let attn = SelfAttention::new(&vb.pp("attn"), d, cfg.num_heads)?;
        let norm2 = norm("norm2")?;
        let mlp = Mlp::new(&vb.pp("mlp"), d, cfg.mlp_hidden())?;
        let modulation = vb.pp("adaLN_modulation").pp("1");
        let design = match cfg.conditioning {
            Conditioning::InContext => BlockDesign::InContext,
            Conditioning::CrossAttention => BlockDesign::CrossAttention {
                norm: LayerNorm::affine(&vb.pp("norm_cross"), d)?,
                attn: CrossAttention::new(&vb.pp("cross_attn"), d, cfg.num_heads)?,
            },
            Conditioning::AdaLn => BlockDesign::AdaLn {
                modulation: linear(&modulation, d, 4 * d)?,
            },
            Conditioning::AdaLnZero => BlockDesign::AdaLnZero {
                modulation: zero_linear(&modulation, d, 6 * d)?,
            },
        };
        Ok(Self {
            norm1,
            attn,
            norm2,
            mlp,
            design,
        })
    }

    /// `[B, N, D]` tokens through the block.
    pub fn forward(&self, x: &Tensor, cond: &ConditionEmbedding) -> Result<Tensor> {
        match &self.design {
            BlockDesign::InContext => {
                let x = (x + self.attn.forward(&self.norm1.forward(x)?)?)?;
                &x + self.mlp.forward(&self.norm2.forward(&x)?)?
            }
            BlockDesign::CrossAttention { norm, attn } => {
                let x = (x + self.attn.forward(&self.norm1.forward(x)?)?)?;
                let x = (&x + attn.forward(&norm.forward(&x)?, &cond.tokens)?)?;
                &x + self.mlp.forward(&self.norm2.forward(&x)?)?
            }
            BlockDesign::AdaLn { modulation } => {
                let m = modulation
                    .forward(&candle_nn::ops::silu(&cond.vector)?)?
                    .chunk(4, 1)?;
                let h = modulated_layer_norm(x, &m[0], &m[1])?;
                let x = (x + self.attn.forward(&h)?)?;
                let h = modulated_layer_norm(&x, &m[2], &m[3])?;
                &x + self.mlp.forward(&h)?
            }
            BlockDesign::AdaLnZero { modulation } => {
                let m = modulation
                    .forward(&candle_nn::ops::silu(&cond.vector)?)?
                    .chunk(6, 1)?;
                let h = modulated_layer_norm(x, &m[0], &m[1])?;
                let x = gated_residual(x, &self.attn.forward(&h)?, &m[2])?;
                let h = modulated_layer_norm(&x, &m[3], &m[4])?;
                gated_residual(&x, &self.mlp.forward(&h)?, &m[5])
            }
        }
    }
}
