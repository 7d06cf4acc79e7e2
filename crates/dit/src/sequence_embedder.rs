//! Sequence conditions (e.g. a caption's token embeddings): a linear projection `cond_dim -> D`
//! of every condition vector, and a learned null token (N(0, 0.02)) that replaces every position
//! of a dropped condition for classifier-free guidance. Cross-attention reads the projected
//! sequence directly (the paper's cross-attention design, §3.2); in-context appends it as tokens;
//! the adaLN designs and the final layer use its mean over the sequence.

use crate::init::EMBEDDING_INIT;
use crate::layers::linear;
use crate::layers::Linear;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Projection and null token.
#[derive(Debug, Clone)]
pub struct SequenceEmbedder {
    proj: Linear,
    null_token: Tensor,
}

impl SequenceEmbedder {
    /// Reads `proj` and `null_token` under `vb`.
    pub fn new(vb: &VarBuilder, cond_dim: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            proj: linear(&vb.pp("proj"), cond_dim, hidden)?,
            null_token: vb.get_with_hints(hidden, "null_token", EMBEDDING_INIT)?,
        })
    }

    /// `[B, L, cond_dim]` to `[B, L, D]`; where `drop[i]` every position of sample `i` is the null token.
    pub fn forward(&self, seq: &Tensor, drop: Option<&[bool]>) -> Result<Tensor> {
        let projected = self.proj.forward(seq)?;
        let Some(drop) = drop else {
            return Ok(projected);
        };
        let (b, l, d) = projected.dims3()?;
        if drop.len() != b {
            candle_core::bail!(
                "condition drop mask has {} entries for a batch of {b}",
                drop.len()
            )
        }
        let keep: Vec<f32> = drop.iter().map(|&x| if x { 0.0 } else { 1.0 }).collect();
        let keep = Tensor::from_vec(keep, (b, 1, 1), seq.device())?;
        let null = self
            .null_token
            .reshape((1, 1, d))?
            .broadcast_as((b, l, d))?;
        projected
            .broadcast_mul(&keep)?
            .add(&null.broadcast_mul(&(1.0 - &keep)?)?)
    }
}
