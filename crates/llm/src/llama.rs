//! The llama-family decoder (Touvron et al. 2023): pre-norm blocks
//! `h = x + Attn(RMSNorm(x))`, `out = h + MLP(RMSNorm(h))`, grouped-query attention with RoPE,
//! SwiGLU MLP `W_down(silu(W_gate x) ⊙ W_up x)`.
//!
//! Batch size is 1 throughout: activations are `[t, hidden]`. The KV cache is a policy behind
//! [`KvCache`]; the model asks it for positions and hands it pre-RoPE keys.

use crate::config::LlamaConfig;
use crate::kv_cache::{KvCache, KvGeometry};
use crate::linear::{Linear, DEQUANT_GEMM_ROWS};
use crate::rope::{Rope, RopeAngles};
use crate::{cpu_ops, profile};
use anyhow::{bail, Context, Result};
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use std::sync::Arc;

/// RMSNorm (Zhang & Sennrich 2019): `x / sqrt(mean(x²) + ε) ⊙ g`.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    /// Gain `g`.
    pub weight: Tensor,
    /// ε.
    pub eps: f32,
}

impl RmsNorm {
    /// Normalises the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _span = profile::span(profile::Op::Norm);
        cpu_ops::rms_norm(x, &self.weight, self.eps)
    }
}

/// Token embedding, kept in the file's blocks on the quantised path (rows dequantised on
/// lookup) or dense.
#[derive(Debug, Clone)]
pub enum Embedding {
    /// Quantised table.
    Quantized(Arc<QTensor>),
    /// Dense f32 table.
    Dense(Tensor),
}

impl Embedding {
    /// Rows of `ids`: `[t, hidden]`.
    pub fn forward(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        let ids = Tensor::new(ids, device)?;
        Ok(match self {
            Self::Quantized(q) => q.embedding(&ids)?,
            Self::Dense(w) => w.index_select(&ids, 0)?,
        })
    }

    /// Bytes stored.
    pub fn storage_bytes(&self) -> usize {
        match self {
            Self::Quantized(q) => q.storage_size_in_bytes(),
            Self::Dense(w) => w.elem_count() * 4,
        }
    }
}

/// Grouped-query self-attention.
#[derive(Debug, Clone)]
pub struct Attention {
    /// `W_q`.
    pub q: Linear,
    /// `W_k`.
    pub k: Linear,
    /// `W_v`.
    pub v: Linear,
    /// `W_o`.
    pub o: Linear,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
}

/// SwiGLU MLP.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// `W_gate`.
    pub gate: Linear,
    /// `W_up`.
    pub up: Linear,
    /// `W_down`.
    pub down: Linear,
}

impl Mlp {
    /// `W_down(silu(W_gate x) ⊙ W_up x)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.down.forward(&self.hidden(x)?)
    }

    /// `silu(W_gate x) ⊙ W_up x`: the input of `W_down`. Prompt-sized inputs (from
    /// [`DEQUANT_GEMM_ROWS`] rows) take the fused kernel; decode keeps candle's `silu`, with
    /// which the decode figures in the docs were measured (the two agree to rounding, but the
    /// quantised decode path's 8-bit activations can magnify rounding differences).
    pub fn hidden(&self, x: &Tensor) -> Result<Tensor> {
        let (gate, up) = (self.gate.forward(x)?, self.up.forward(x)?);
        if crate::linear::rows(x) >= DEQUANT_GEMM_ROWS {
            return cpu_ops::swiglu(&gate, &up);
        }
        Ok((candle_nn::ops::silu(&gate)? * up)?)
    }
}

impl Attention {
    /// Attention weights and output for `x: [t, hidden]` (already normed). New K/V go through
    /// the cache; the queries are rotated with `angles`.
    pub fn forward(
        &self,
        x: &Tensor,
        layer: usize,
        angles: &RopeAngles,
        cache: &mut dyn KvCache,
    ) -> Result<Tensor> {
        self.o.forward(&self.heads_output(x, layer, angles, cache)?)
    }

    /// The concatenated heads `softmax(q Kᵀ/√d) V` before `W_o`: `[t, n_head·head_dim]`, the
    /// input of `W_o`.
    pub fn heads_output(
        &self,
        x: &Tensor,
        layer: usize,
        angles: &RopeAngles,
        cache: &mut dyn KvCache,
    ) -> Result<Tensor> {
        let (t, _) = x.dims2()?;
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            Ok(y.reshape((t, n, self.head_dim))?
                .transpose(0, 1)?
                .contiguous()?)
        };
        let q = heads(self.q.forward(x)?, self.n_head)?;
        let k = heads(self.k.forward(x)?, self.n_kv_head)?;
        let v = heads(self.v.forward(x)?, self.n_kv_head)?;
        let q = angles.rotate(&q)?;
        let _span = profile::span(profile::Op::Attention);
        cache.attend(layer, &q, &k, &v, angles, &mut |k_all, v_all| {
            self.attend(&q, k_all, v_all, t)
        })
    }

    /// softmax(q Kᵀ / √d + causal mask) V with query heads grouped by their key head, so K and V are
    /// never repeated: `q: [n_head, t, d]`, `k, v: [n_kv_head, total, d]` → `[t, n_head·d]`.
    pub fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, t: usize) -> Result<Tensor> {
        if let Some(y) = cpu_ops::fused_attention(q, k, v)? {
            return Ok(y);
        }
        // Views the fused kernel cannot read (another device or dtype): candle's GEMM by blocks
        // of queries, each against only the keys it can see, so the masked upper triangle of
        // q Kᵀ is (mostly) never computed.
        let (n_rep, d) = (self.n_head / self.n_kv_head, self.head_dim);
        let total = k.dim(1)?;
        let q = q.reshape((self.n_kv_head, n_rep, t, d))?;
        let scale = 1.0 / (d as f32).sqrt();
        let mut blocks = Vec::with_capacity(t.div_ceil(PREFILL_QUERY_BLOCK));
        for start in (0..t).step_by(PREFILL_QUERY_BLOCK) {
            let rows = PREFILL_QUERY_BLOCK.min(t - start);
            let keys = total - t + start + rows;
            let qb = q
                .narrow(2, start, rows)?
                .reshape((self.n_kv_head, n_rep * rows, d))?;
            let scores = qb.matmul(&k.narrow(1, 0, keys)?.t()?)?;
            let probs = cpu_ops::causal_softmax(&scores, rows, scale)?;
            let y = probs.matmul(&v.narrow(1, 0, keys)?.contiguous()?)?;
            blocks.push(y.reshape((self.n_kv_head, n_rep, rows, d))?);
        }
        Ok(Tensor::cat(&blocks, 2)?
            .reshape((self.n_head, t, d))?
            .transpose(0, 1)?
            .reshape((t, self.n_head * self.head_dim))?)
    }
}

/// Queries per block of the prompt-chunk attention (see [`Attention::attend`]).
const PREFILL_QUERY_BLOCK: usize = ferrite_kernels::attention::QUERY_BLOCK;

/// One decoder block.
#[derive(Debug, Clone)]
pub struct Block {
    /// Pre-attention norm.
    pub attn_norm: RmsNorm,
    /// Self-attention.
    pub attn: Attention,
    /// Pre-MLP norm.
    pub ffn_norm: RmsNorm,
    /// MLP.
    pub mlp: Mlp,
}

/// Where a block's linear layers read their input: the four stops of a [`BlockPass`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum LinearInput {
    /// `RMSNorm(x)`, read by `W_q`, `W_k` and `W_v`.
    Attention,
    /// The concatenated attention heads, read by `W_o`.
    AttentionOutput,
    /// `RMSNorm(h)`, read by `W_gate` and `W_up`.
    Mlp,
    /// `silu(W_gate x) ⊙ W_up x`, read by `W_down`.
    MlpHidden,
}

impl LinearInput {
    /// The four inputs in the order a block's forward reaches them.
    pub const ALL: [Self; 4] = [
        Self::Attention,
        Self::AttentionOutput,
        Self::Mlp,
        Self::MlpHidden,
    ];
}

/// A block's forward pass stopped at the input of some of its linear layers.
///
/// [`Block::forward`] is `begin_pass` then `advance` until done; a caller that steps the pass
/// itself can read [`BlockPass::input`] at each stop (calibration statistics) and change the
/// layers that read it before advancing (sequential pruning of many sequences, one stop at a
/// time).
#[derive(Debug, Clone)]
pub struct BlockPass {
    residual: Tensor,
    input: Tensor,
    at: Option<LinearInput>,
}

impl BlockPass {
    /// The stop reached, or `None` once the block's output is ready.
    pub fn at(&self) -> Option<LinearInput> {
        self.at
    }

    /// The input of the linear layers at this stop, `[t, features]` (the block's output once
    /// done).
    pub fn input(&self) -> &Tensor {
        &self.input
    }

    /// The block's output `[t, hidden]` (errors if the pass is not done).
    pub fn into_output(self) -> Result<Tensor> {
        match self.at {
            None => Ok(self.input),
            Some(at) => bail!("block pass still stopped at {at:?}"),
        }
    }
}

impl Block {
    /// `h = x + Attn(norm(x)); h + MLP(norm(h))`.
    pub fn forward(
        &self,
        x: &Tensor,
        layer: usize,
        angles: &RopeAngles,
        cache: &mut dyn KvCache,
    ) -> Result<Tensor> {
        let mut pass = self.begin_pass(x)?;
        while pass.at.is_some() {
            pass = self.advance(pass, layer, angles, cache)?;
        }
        pass.into_output()
    }

    /// Starts a pass on `x: [t, hidden]`: stops at [`LinearInput::Attention`].
    pub fn begin_pass(&self, x: &Tensor) -> Result<BlockPass> {
        Ok(BlockPass {
            residual: x.clone(),
            input: self.attn_norm.forward(x)?,
            at: Some(LinearInput::Attention),
        })
    }

    /// Runs the layers that read the current stop's input, up to the next stop.
    pub fn advance(
        &self,
        pass: BlockPass,
        layer: usize,
        angles: &RopeAngles,
        cache: &mut dyn KvCache,
    ) -> Result<BlockPass> {
        let BlockPass {
            residual,
            input,
            at,
        } = pass;
        let (residual, input, at) = match at {
            Some(LinearInput::Attention) => (
                residual,
                self.attn.heads_output(&input, layer, angles, cache)?,
                Some(LinearInput::AttentionOutput),
            ),
            Some(LinearInput::AttentionOutput) => {
                let h = (residual + self.attn.o.forward(&input)?)?;
                let normed = self.ffn_norm.forward(&h)?;
                (h, normed, Some(LinearInput::Mlp))
            }
            Some(LinearInput::Mlp) => (
                residual,
                self.mlp.hidden(&input)?,
                Some(LinearInput::MlpHidden),
            ),
            Some(LinearInput::MlpHidden) => {
                let out = (&residual + self.mlp.down.forward(&input)?)?;
                (residual, out, None)
            }
            None => bail!("block pass already done"),
        };
        Ok(BlockPass {
            residual,
            input,
            at,
        })
    }
}

/// How weights are held for compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ComputeDType {
    /// Quantised GGUF blocks multiplied directly (default; fast decode, small memory).
    Quantized,
    /// Every weight dequantised to dense f32 (pruning, analysis, reference parity).
    F32,
    /// Sparse layouts (`ferrite-sparse`) for matrices with enough exact zeros, dense f32 for
    /// the rest; sparse-stored matrices are kept as stored.
    Sparse,
}

impl std::str::FromStr for ComputeDType {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "q" | "quant" | "quantized" | "native" => Ok(Self::Quantized),
            "f32" => Ok(Self::F32),
            "sparse" => Ok(Self::Sparse),
            other => bail!("unknown --dtype `{other}` (expected `quant`, `f32` or `sparse`)"),
        }
    }
}

impl std::fmt::Display for ComputeDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Quantized => "quant",
            Self::F32 => "f32",
            Self::Sparse => "sparse",
        })
    }
}

/// Loads a tensor the model cannot do without.
fn required(
    source: &mut dyn crate::weights::WeightSource,
    role: crate::weights::TensorRole,
) -> Result<crate::weights::StoredTensor> {
    source
        .load(role)?
        .with_context(|| format!("model file lacks the tensor for {role:?}"))
}

/// A llama-family causal language model.
#[derive(Debug, Clone)]
pub struct Llama {
    /// Hyper-parameters.
    pub config: LlamaConfig,
    /// Token embedding.
    pub embedding: Embedding,
    /// Decoder blocks.
    pub blocks: Vec<Block>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Output projection (the embedding when tied).
    pub lm_head: Linear,
    /// RoPE of the model.
    pub rope: Rope,
    /// How weights are held.
    pub dtype: ComputeDType,
    device: Device,
}

impl Llama {
    /// Builds the model from a weight source.
    pub fn load(
        config: LlamaConfig,
        source: &mut dyn crate::weights::WeightSource,
        dtype: ComputeDType,
        device: &Device,
    ) -> Result<Self> {
        use crate::weights::{StoredTensor, TensorRole as R};
        let linear = |t: StoredTensor| Linear::load(t, dtype);
        let norm = |t: StoredTensor| -> Result<RmsNorm> {
            Ok(RmsNorm {
                weight: t.to_f32()?.flatten_all()?,
                eps: config.rms_norm_eps as f32,
            })
        };
        let mut blocks = Vec::with_capacity(config.n_layer);
        for l in 0..config.n_layer {
            blocks.push(Block {
                attn_norm: norm(required(source, R::AttnNorm(l))?)?,
                attn: Attention {
                    q: linear(required(source, R::Q(l))?)?,
                    k: linear(required(source, R::K(l))?)?,
                    v: linear(required(source, R::V(l))?)?,
                    o: linear(required(source, R::O(l))?)?,
                    n_head: config.n_head,
                    n_kv_head: config.n_kv_head,
                    head_dim: config.head_dim,
                },
                ffn_norm: norm(required(source, R::FfnNorm(l))?)?,
                mlp: Mlp {
                    gate: linear(required(source, R::Gate(l))?)?,
                    up: linear(required(source, R::Up(l))?)?,
                    down: linear(required(source, R::Down(l))?)?,
                },
            });
        }
        let embd = required(source, R::TokenEmbedding)?;
        let lm_head = match source.load(R::Output)? {
            Some(t) => linear(t)?,
            None => linear(embd.clone())?,
        };
        let embedding = match (&embd, dtype) {
            (StoredTensor::Quantized(q), ComputeDType::Quantized)
                if q.shape().dims2()?.1.is_multiple_of(q.dtype().block_size()) =>
            {
                Embedding::Quantized(q.clone())
            }
            _ => Embedding::Dense(embd.to_f32()?),
        };
        let (vocab, hidden) = lm_head.shape()?;
        if hidden != config.hidden_size || vocab != config.vocab_size {
            bail!(
                "output projection is {vocab}x{hidden}, config says {}x{}",
                config.vocab_size,
                config.hidden_size
            );
        }
        Ok(Self {
            rope: Rope::new(
                config.rope_theta,
                config.head_dim,
                config.rope_style,
                device,
            ),
            norm: norm(required(source, R::OutputNorm)?)?,
            config,
            embedding,
            blocks,
            lm_head,
            dtype,
            device: device.clone(),
        })
    }

    /// Geometry of the K/V this model produces, for building cache policies.
    pub fn kv_geometry(&self) -> KvGeometry {
        KvGeometry {
            n_layer: self.config.n_layer,
            n_kv_head: self.config.n_kv_head,
            head_dim: self.config.head_dim,
            max_tokens: self.config.context_length,
            device: self.device.clone(),
        }
    }

    /// Device of the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Embeds `tokens` and prepares the step: returns the embeddings and the RoPE angles of the
    /// positions the cache assigns.
    pub fn begin(&self, tokens: &[u32], cache: &mut dyn KvCache) -> Result<(Tensor, RopeAngles)> {
        if tokens.is_empty() {
            bail!("no tokens to process");
        }
        if let Some(&bad) = tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            bail!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            );
        }
        let positions = cache.begin_step(tokens.len())?;
        let angles = self.rope.angles(&positions)?;
        Ok((self.embedding.forward(tokens, &self.device)?, angles))
    }

    /// Runs `tokens` through every block, appending them to `cache`; returns the final-normed
    /// hidden states `[t, hidden]`.
    pub fn forward_hidden(&self, tokens: &[u32], cache: &mut dyn KvCache) -> Result<Tensor> {
        let (mut x, angles) = self.begin(tokens, cache)?;
        for (l, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, l, &angles, cache)?;
        }
        self.norm.forward(&x)
    }

    /// Logits `[t, vocab]` of hidden states.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }

    /// Logits of the last token after running `tokens`: what decoding needs.
    pub fn forward_last(&self, tokens: &[u32], cache: &mut dyn KvCache) -> Result<Vec<f32>> {
        let h = self.forward_hidden(tokens, cache)?;
        let last = h.narrow(0, h.dim(0)? - 1, 1)?;
        Ok(self.logits(&last)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// Bytes of all weights as held for compute.
    pub fn weight_bytes(&self) -> usize {
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                [
                    &b.attn.q,
                    &b.attn.k,
                    &b.attn.v,
                    &b.attn.o,
                    &b.mlp.gate,
                    &b.mlp.up,
                    &b.mlp.down,
                ]
                .iter()
                .map(|l| l.storage_bytes())
                .sum::<usize>()
            })
            .sum();
        blocks + self.embedding.storage_bytes() + self.lm_head.storage_bytes()
    }
}
