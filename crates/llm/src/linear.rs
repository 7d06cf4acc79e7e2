//! A linear layer `y = x Wᵀ` whose weight is either kept in GGUF quantised blocks (the fast
//! decode path) or dense f32 (the path pruning and analysis work on).

use anyhow::Result;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};
use std::sync::Arc;

/// Rows from which a quantised matmul dequantises the weight and runs the f32 GEMM.
pub const DEQUANT_GEMM_ROWS: usize = 32;

fn rows(x: &Tensor) -> usize {
    x.elem_count() / x.dim(candle_core::D::Minus1).unwrap_or(1).max(1)
}

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
    ///
    /// Quantised weights: decode-sized inputs use candle's quantised vec-dot kernels; inputs of
    /// [`DEQUANT_GEMM_ROWS`] rows or more (prompt chunks) dequantise the weight on the fly and
    /// use the f32 GEMM, which is several times faster there and allocates only transiently.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Quantized(q, _) if rows(x) >= DEQUANT_GEMM_ROWS => {
                x.broadcast_matmul(&q.dequantize(&q.device())?.t()?)?
            }
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
