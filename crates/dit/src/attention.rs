//! Multi-head attention (Vaswani et al. 2017, eq. 1: `softmax(Q K^T / sqrt(d_h)) V` per head):
//! self-attention as timm's `Attention` (one fused `qkv` projection with bias, then `proj`), and the
//! cross-attention of the paper's cross-attention block (§3.2), whose queries are the image tokens
//! and whose keys and values are the conditioning sequence (fused `kv` projection).

use crate::layers::linear;
use crate::layers::Linear;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `[B, N, n * H * d_h]` projections to `n` tensors `[B, H, N, d_h]`.
fn split_heads(x: &Tensor, n: usize, heads: usize) -> Result<Vec<Tensor>> {
    let (b, len, width) = x.dims3()?;
    let head_dim = width / (n * heads);
    let x = x
        .reshape((b, len, n, heads, head_dim))?
        .permute((2, 0, 3, 1, 4))?;
    (0..n).map(|i| x.get(i)?.contiguous()).collect()
}

/// Scaled dot-product attention of `[B, H, N, d_h]` queries on `[B, H, M, d_h]` keys / values,
/// heads merged back to `[B, N, H * d_h]`.
pub fn scaled_dot_product(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (b, heads, n, head_dim) = q.dims4()?;
    let scores = (q.matmul(&k.t()?)? * (1.0 / (head_dim as f64).sqrt()))?;
    let weights = candle_nn::ops::softmax(&scores, candle_core::D::Minus1)?;
    weights
        .matmul(v)?
        .transpose(1, 2)?
        .reshape((b, n, heads * head_dim))
}

/// Self-attention with a fused `qkv` projection.
#[derive(Debug, Clone)]
pub struct SelfAttention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl SelfAttention {
    /// Reads `qkv` and `proj` under `vb`.
    pub fn new(vb: &VarBuilder, dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            qkv: linear(&vb.pp("qkv"), dim, 3 * dim)?,
            proj: linear(&vb.pp("proj"), dim, dim)?,
            heads,
        })
    }
}

impl Module for SelfAttention {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let qkv = split_heads(&self.qkv.forward(x)?, 3, self.heads)?;
        self.proj
            .forward(&scaled_dot_product(&qkv[0], &qkv[1], &qkv[2])?)
    }
}

/// Cross-attention of tokens `[B, T, D]` on a condition sequence `[B, L, D]`.
#[derive(Debug, Clone)]
pub struct CrossAttention {
    q: Linear,
    kv: Linear,
    proj: Linear,
    heads: usize,
}

impl CrossAttention {
    /// Reads `q`, `kv` and `proj` under `vb`.
    pub fn new(vb: &VarBuilder, dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            q: linear(&vb.pp("q"), dim, dim)?,
            kv: linear(&vb.pp("kv"), dim, 2 * dim)?,
            proj: linear(&vb.pp("proj"), dim, dim)?,
            heads,
        })
    }

    /// Attends from `x` to `context`.
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let q = split_heads(&self.q.forward(x)?, 1, self.heads)?;
        let kv = split_heads(&self.kv.forward(context)?, 2, self.heads)?;
        self.proj
            .forward(&scaled_dot_product(&q[0], &kv[0], &kv[1])?)
    }
}
