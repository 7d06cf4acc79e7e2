//! One loader for the llama family; file-format differences live behind [`WeightSource`]
//! (`gguf.rs`, `safetensors.rs`), which maps canonical tensor roles to the file's names.

use anyhow::Result;
use candle_core::quantized::QTensor;
use candle_core::Tensor;
use ferrite_sparse::SparseMatrix;
use std::sync::Arc;

/// The role of a tensor in a llama-family model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    /// Token embedding `[vocab, hidden]`.
    TokenEmbedding,
    /// Final RMSNorm weight.
    OutputNorm,
    /// Output projection (absent when tied to the embedding).
    Output,
    /// Block `l`'s pre-attention RMSNorm.
    AttnNorm(usize),
    /// Block `l`'s `W_q`.
    Q(usize),
    /// Block `l`'s `W_k`.
    K(usize),
    /// Block `l`'s `W_v`.
    V(usize),
    /// Block `l`'s attention output projection `W_o`.
    O(usize),
    /// Block `l`'s pre-MLP RMSNorm.
    FfnNorm(usize),
    /// Block `l`'s SwiGLU gate projection.
    Gate(usize),
    /// Block `l`'s SwiGLU up projection.
    Up(usize),
    /// Block `l`'s MLP down projection.
    Down(usize),
}

/// A tensor as stored in the file.
#[derive(Debug, Clone)]
pub enum StoredTensor {
    /// GGUF blocks (any ggml type candle reads).
    Quantized(Arc<QTensor>),
    /// A plain tensor (safetensors), any float dtype.
    Dense(Tensor),
    /// A matrix stored in a sparse layout (`ferrite-sparse` components in safetensors).
    Sparse(Arc<SparseMatrix>),
}

impl StoredTensor {
    /// Dequantised f32 copy.
    pub fn to_f32(&self) -> Result<Tensor> {
        Ok(match self {
            Self::Quantized(q) => q.dequantize(&q.device())?,
            Self::Dense(t) => t.to_dtype(candle_core::DType::F32)?,
            Self::Sparse(s) => {
                Tensor::from_vec(s.to_dense(), s.shape(), &candle_core::Device::Cpu)?
            }
        })
    }
}

/// Where the weights of a model come from.
pub trait WeightSource {
    /// Loads the tensor of this role, or `None` when the file lacks it.
    fn load(&mut self, role: TensorRole) -> Result<Option<StoredTensor>>;
    /// A short description of the file (`gguf`, `safetensors`).
    fn format(&self) -> &'static str;
}
