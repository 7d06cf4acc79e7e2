//! A linear layer `y = x Wᵀ` whose weight is either kept in GGUF quantised blocks (the fast
//! decode path) or dense f32 (the path pruning and analysis work on).
//!
//! Q4_0, Q4_1 and Q8_0 weights run on ferrite's own kernels (`ferrite-kernels`: activations
//! quantised once to 8 bits, integer dot products with AVX2 chosen at run time, rows split over
//! a persistent pool); other block types fall back to candle's `QMatMul`.

use anyhow::{Context, Result};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};
use ferrite_kernels::{pool, Format, QMatrix};
use std::sync::Arc;

/// Rows from which a quantised matmul dequantises the weight and runs the f32 GEMM.
pub const DEQUANT_GEMM_ROWS: usize = 32;

fn rows(x: &Tensor) -> usize {
    x.elem_count() / x.dim(candle_core::D::Minus1).unwrap_or(1).max(1)
}

/// Weight of one projection, `[out_features, in_features]`.
#[derive(Debug, Clone)]
pub enum Linear {
    /// Quantised blocks of a format ferrite's kernels handle, multiplied in place.
    Packed(Arc<QTensor>, Format),
    /// Quantised blocks multiplied directly by candle's quantised kernels.
    Quantized(Arc<QTensor>, QMatMul),
    /// Dense f32 matrix.
    Dense(Tensor),
}

impl Linear {
    /// Keeps the weight quantised (F32/F16 tensors are dequantised by candle).
    pub fn quantized(q: Arc<QTensor>) -> Result<Self> {
        let format = match q.dtype() {
            GgmlDType::Q4_0 => Some(Format::Q4_0),
            GgmlDType::Q4_1 => Some(Format::Q4_1),
            GgmlDType::Q8_0 => Some(Format::Q8_0),
            _ => None,
        };
        if let Some(f) = format {
            let (rows, cols) = q.shape().dims2()?;
            // Validates the block count once, so `forward` cannot meet a malformed matrix.
            QMatrix::new(f, rows, cols, &q.data()?).map_err(anyhow::Error::msg)?;
            return Ok(Self::Packed(q, f));
        }
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
            Self::Packed(q, _) | Self::Quantized(q, _) if rows(x) >= DEQUANT_GEMM_ROWS => {
                x.broadcast_matmul(&q.dequantize(&q.device())?.t()?)?
            }
            Self::Packed(q, f) => packed_matmul(q, *f, x)?,
            Self::Quantized(_, mm) => mm.forward(x)?,
            Self::Dense(w) => x.broadcast_matmul(&w.t()?)?,
        })
    }

    /// `(out_features, in_features)`.
    pub fn shape(&self) -> Result<(usize, usize)> {
        Ok(match self {
            Self::Packed(q, _) | Self::Quantized(q, _) => q.shape().dims2()?,
            Self::Dense(w) => w.dims2()?,
        })
    }

    /// The weight as a dense f32 matrix.
    pub fn to_dense(&self) -> Result<Tensor> {
        Ok(match self {
            Self::Packed(q, _) | Self::Quantized(q, _) => q.dequantize(&q.device())?,
            Self::Dense(w) => w.clone(),
        })
    }

    /// Bytes of the stored weight.
    pub fn storage_bytes(&self) -> usize {
        match self {
            Self::Packed(q, _) | Self::Quantized(q, _) => q.storage_size_in_bytes(),
            Self::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
        }
    }

    /// Storage type name (`q4_1`, `f32`, ...).
    pub fn type_name(&self) -> String {
        match self {
            Self::Packed(q, _) | Self::Quantized(q, _) => format!("{:?}", q.dtype()).to_lowercase(),
            Self::Dense(w) => format!("{:?}", w.dtype()).to_lowercase(),
        }
    }
}

/// `x Wᵀ` on ferrite's kernels: `x: [..., cols]` becomes `[..., rows]`.
fn packed_matmul(q: &QTensor, format: Format, x: &Tensor) -> Result<Tensor> {
    let (rows, cols) = q.shape().dims2()?;
    let data = q.data()?;
    let w = QMatrix::new(format, rows, cols, &data).map_err(anyhow::Error::msg)?;
    let xs = x
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
        .context("reading the matmul input")?;
    let mut y = vec![0f32; xs.len() / cols * rows];
    w.matmul(&xs, &mut y, pool::global());
    let mut dims = x.dims().to_vec();
    *dims.last_mut().context("matmul input has no dimensions")? = rows;
    Ok(Tensor::from_vec(y, dims, x.device())?)
}
