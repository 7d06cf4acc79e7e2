//! A linear layer `y = x Wᵀ` whose weight is either kept in GGUF quantised blocks (the fast
//! decode path) or dense f32 (the path pruning and analysis work on).

use anyhow::Result;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};
use std::sync::Arc;

/// Weight of one projection, `[out_features, in_features]`.
#[derive(Debug, Clone)]
pub enum Linear {
    /// Quantised blocks multiplied directly by candle's quantised kernels.
    Quantized(Arc<QTensor>, QMatMul),
    /// Dense f32 matrix.
    Dense(Tensor),
}

impl Linear {
    /// Keeps the weight quantised (F32/F16 tensors are dequantised by candle).
    pub fn quantized(q: Arc<QTensor>) -> Result<Self> {
        let mm = QMatMul::from_arc(q.clone())?;
        Ok(Self::Quantized(q, mm))
    }

    /// A dense f32 weight.
    pub fn dense(w: Tensor) -> Result<Self> {
        Ok(Self::Dense(w.to_dtype(DType::F32)?.contiguous()?))
    }

    /// `x Wᵀ` for `x: [..., in_features]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Quantized(_, mm) => mm.forward(x)?,
            Self::Dense(w) => x.broadcast_matmul(&w.t()?)?,
        })
    }

    /// `(out_features, in_features)`.
    pub fn shape(&self) -> Result<(usize, usize)> {
        Ok(match self {
            Self::Quantized(q, _) => q.shape().dims2()?,
            Self::Dense(w) => w.dims2()?,
        })
    }

    /// The weight as a dense f32 matrix.
    pub fn to_dense(&self) -> Result<Tensor> {
        Ok(match self {
            Self::Quantized(q, _) => q.dequantize(&q.device())?,
            Self::Dense(w) => w.clone(),
        })
    }

    /// Bytes of the stored weight.
    pub fn storage_bytes(&self) -> usize {
        match self {
            Self::Quantized(q, _) => q.storage_size_in_bytes(),
            Self::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
        }
    }

    /// Storage type name (`q4_1`, `f32`, ...).
    pub fn type_name(&self) -> String {
        match self {
            Self::Quantized(q, _) => format!("{:?}", q.dtype()).to_lowercase(),
            Self::Dense(w) => format!("{:?}", w.dtype()).to_lowercase(),
        }
    }
}
