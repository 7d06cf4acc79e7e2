//! A linear layer `y = x Wᵀ` whose weight is kept in GGUF quantised blocks (the fast decode
//! path), dense f32 (the path pruning and analysis work on), or a sparse layout
//! (`ferrite-sparse`: bitmap, CSR or N:M, multiplied by its AVX2 sparse kernels).
//!
//! Q4_0, Q4_1 and Q8_0 weights run on ferrite's own kernels (`ferrite-kernels`: activations
//! quantised once to 8 bits, integer dot products with AVX2 chosen at run time, rows split over
//! a persistent pool); other block types fall back to candle's `QMatMul`.

use crate::llama::ComputeDType;
use crate::weights::StoredTensor;
use anyhow::{Context, Result};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};
use ferrite_kernels::tiled_gemm::{self, WeightRows};
use ferrite_kernels::{pool, Format, QMatrix};
use ferrite_sparse::{EncodePolicy, SparseMatrix};
use std::sync::Arc;

/// Rows from which a quantised matmul dequantises the weight and runs the f32 GEMM.
pub const DEQUANT_GEMM_ROWS: usize = 32;

/// Rows of `x: [..., cols]` (the product of the leading dimensions).
pub(crate) fn rows(x: &Tensor) -> usize {
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
    /// Sparse matrix (exact f32 values).
    Sparse(Arc<SparseMatrix>),
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

    /// The layer for a stored weight under a compute dtype:
    /// - quantised blocks stay quantised under `quant`;
    /// - sparse-stored matrices stay sparse under `quant` (the default: the file chose) and
    ///   `sparse`, and are densified under `f32`;
    /// - under `sparse`, dense (or dequantised) weights are encoded when their sparsity reaches
    ///   [`ferrite_sparse::DEFAULT_MIN_SPARSITY`] ([`Self::sparse_if_sparse`]);
    /// - anything else becomes dense f32.
    pub fn load(t: StoredTensor, dtype: ComputeDType) -> Result<Self> {
        match (t, dtype) {
            (StoredTensor::Quantized(q), ComputeDType::Quantized) => Self::quantized(q),
            (StoredTensor::Sparse(s), ComputeDType::Quantized | ComputeDType::Sparse) => {
                Ok(Self::Sparse(s))
            }
            (t, ComputeDType::Sparse) => {
                Self::sparse_if_sparse(t.to_f32()?, &EncodePolicy::default())
            }
            (t, _) => Self::dense(t.to_f32()?),
        }
    }

    /// `w` in a sparse layout when `policy` finds it sparse enough, else dense f32.
    pub fn sparse_if_sparse(w: Tensor, policy: &EncodePolicy) -> Result<Self> {
        let w = w.to_dtype(DType::F32)?.contiguous()?;
        let (rows, cols) = w.dims2()?;
        let values = w.flatten_all()?.to_vec1::<f32>()?;
        Ok(match policy.encode(&values, rows, cols)? {
            Some(s) => Self::Sparse(Arc::new(s)),
            None => Self::Dense(w),
        })
    }

    /// `x Wᵀ` for `x: [..., in_features]`.
    ///
    /// Quantised weights: decode-sized inputs use the integer vec-dot kernels; inputs of
    /// [`DEQUANT_GEMM_ROWS`] rows or more (prompt chunks) run the f32 GEMM, several times
    /// faster there: ferrite's formats tile by tile ([`ferrite_kernels::tiled_gemm`], which
    /// dequantises one tile per thread at a time), others dequantised whole by candle. Dense
    /// weights take the tiled GEMM from the same row count.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _span = crate::profile::span(crate::profile::Op::Matmul);
        Ok(match self {
            Self::Quantized(q, _) if rows(x) >= DEQUANT_GEMM_ROWS => {
                x.broadcast_matmul(&q.dequantize(&q.device())?.t()?)?
            }
            Self::Packed(q, f) => packed_matmul(q, *f, x)?,
            Self::Quantized(_, mm) => mm.forward(x)?,
            Self::Dense(w) if rows(x) >= DEQUANT_GEMM_ROWS => dense_tiled_matmul(w, x)?,
            Self::Dense(w) => x.broadcast_matmul(&w.t()?)?,
            Self::Sparse(s) => sparse_matmul(s, x)?,
        })
    }

    /// `(out_features, in_features)`.
    pub fn shape(&self) -> Result<(usize, usize)> {
        Ok(match self {
            Self::Packed(q, _) | Self::Quantized(q, _) => q.shape().dims2()?,
            Self::Dense(w) => w.dims2()?,
            Self::Sparse(s) => s.shape(),
        })
    }

    /// The weight as a dense f32 matrix.
    pub fn to_dense(&self) -> Result<Tensor> {
        Ok(match self {
            Self::Packed(q, _) | Self::Quantized(q, _) => q.dequantize(&q.device())?,
            Self::Dense(w) => w.clone(),
            Self::Sparse(s) => {
                Tensor::from_vec(s.to_dense(), s.shape(), &candle_core::Device::Cpu)?
            }
        })
    }

    /// Bytes of the stored weight.
    pub fn storage_bytes(&self) -> usize {
        match self {
            Self::Packed(q, _) | Self::Quantized(q, _) => q.storage_size_in_bytes(),
            Self::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            Self::Sparse(s) => s.heap_bytes(),
        }
    }

    /// Storage type name (`q4_1`, `f32`, ...).
    pub fn type_name(&self) -> String {
        match self {
            Self::Packed(q, _) | Self::Quantized(q, _) => format!("{:?}", q.dtype()).to_lowercase(),
            Self::Dense(w) => format!("{:?}", w.dtype()).to_lowercase(),
            Self::Sparse(s) => format!("sparse-{}", s.layout()),
        }
    }
}

/// The input rows of `x: [..., cols]` as one f32 vector.
fn input_rows(x: &Tensor) -> Result<Vec<f32>> {
    x.to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
        .context("reading the matmul input")
}

/// `y: [n·rows]` shaped like `x: [..., cols]` with the last dimension `rows`.
fn output_like(x: &Tensor, y: Vec<f32>, rows: usize) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    *dims.last_mut().context("matmul input has no dimensions")? = rows;
    Ok(Tensor::from_vec(y, dims, x.device())?)
}

/// An error unless the last dimension of `x` is the weight's `cols`.
fn check_width(x: &Tensor, cols: usize) -> Result<()> {
    let width = x.dim(candle_core::D::Minus1)?;
    if width != cols {
        anyhow::bail!("matmul input width {width} does not match the weight's {cols} columns");
    }
    Ok(())
}

/// `x Wᵀ` on the tiled f32 GEMM ([`ferrite_kernels::tiled_gemm`]), over the pool.
fn tiled_matmul(w: WeightRows<'_>, x: &Tensor) -> Result<Tensor> {
    let (rows, cols) = w.shape();
    check_width(x, cols)?;
    let y = crate::cpu_ops::with_f32_contiguous(x, |xs| {
        let mut y = vec![0f32; xs.len() / cols * rows];
        tiled_gemm::matmul(w, xs, &mut y, pool::global());
        y
    })?;
    output_like(x, y, rows)
}

/// [`tiled_matmul`] reading a dense f32 weight in place.
fn dense_tiled_matmul(w: &Tensor, x: &Tensor) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    crate::cpu_ops::with_f32_contiguous(w, |values| {
        tiled_matmul(WeightRows::F32 { values, rows, cols }, x)
    })?
}

/// `x Wᵀ` on the sparse kernels, rows split over ferrite-kernels' pool.
fn sparse_matmul(s: &SparseMatrix, x: &Tensor) -> Result<Tensor> {
    let (rows, cols) = s.shape();
    check_width(x, cols)?;
    let xs = input_rows(x)?;
    let mut y = vec![0f32; xs.len() / cols * rows];
    s.matmul(&xs, &mut y, pool::global());
    output_like(x, y, rows)
}

/// `x Wᵀ` on ferrite's kernels: `x: [..., cols]` becomes `[..., rows]`; from
/// [`DEQUANT_GEMM_ROWS`] rows on the tiled f32 GEMM, below on the integer vec-dot kernels.
fn packed_matmul(q: &QTensor, format: Format, x: &Tensor) -> Result<Tensor> {
    let (rows, cols) = q.shape().dims2()?;
    check_width(x, cols)?;
    let data = q.data()?;
    let w = QMatrix::new(format, rows, cols, &data).map_err(anyhow::Error::msg)?;
    if self::rows(x) >= DEQUANT_GEMM_ROWS {
        return tiled_matmul(WeightRows::Quantized(w), x);
    }
    let xs = input_rows(x)?;
    let mut y = vec![0f32; xs.len() / cols * rows];
    w.matmul(&xs, &mut y, pool::global());
    output_like(x, y, rows)
}
