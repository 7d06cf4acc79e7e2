//! ferrite-sparse: sparse weight storage and CPU sparse matmul (issue 5, the part no reference
//! implementation has: SparseGPT's pruned weights actually stored and multiplied sparsely).
//!
//! - Layouts: [`bitmap`] (unstructured, 1 bit a weight + packed values), [`csr`] (very sparse,
//!   16-bit column indices) and [`nm`] (N:M semi-structured, e.g. 2:4, 2-bit indices).
//! - [`SparseMatrix`] encodes a dense f32 matrix exactly (values stay f32), splits itself into
//!   plain arrays for safetensors ([`component`]) with a JSON descriptor for the file's metadata,
//!   and is rebuilt from them with every index checked.
//! - [`SparseMatrix::matmul`] computes `y = x Wᵀ` on ferrite-kernels' persistent pool, with AVX2/FMA
//!   kernels chosen at run time ([`Isa::detect`]) and a portable scalar path ([`matmul`]).

pub mod bitmap;
pub mod component;
pub mod csr;
pub mod error;
mod expand;
pub mod matmul;
pub mod nm;
mod rows;

pub use bitmap::BitmapMatrix;
pub use component::{Component, ComponentDType, ComponentSource};
pub use csr::CsrMatrix;
pub use error::{Result, SparseError};
pub use nm::NmMatrix;

use ferrite_kernels::pool::Pool;
use rows::SparseRows;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// Safetensors metadata key prefix: `ferrite.sparse.<tensor name>` holds the descriptor.
pub const METADATA_PREFIX: &str = "ferrite.sparse.";

/// Instruction set a kernel runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust.
    Scalar,
    /// AVX2 + FMA (x86-64, detected at run time).
    Avx2,
    /// AVX-512F on top of AVX2 + FMA: the bitmap layout's decode kernel expands 16 weights per
    /// instruction (`vexpandps`); the other kernels are the AVX2 ones.
    Avx512,
}

impl Isa {
    /// The best instruction set of this CPU (detected once).
    pub fn detect() -> Self {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                if is_x86_feature_detected!("avx512f") {
                    return Isa::Avx512;
                }
                return Isa::Avx2;
            }
            Isa::Scalar
        })
    }

    /// Every instruction set this CPU can run, slowest first.
    pub fn available() -> Vec<Self> {
        let best = Self::detect();
        [Self::Scalar, Self::Avx2, Self::Avx512]
            .into_iter()
            .filter(|&isa| isa <= best)
            .collect()
    }

    /// Whether the AVX2 + FMA kernels may run.
    pub fn has_avx2(self) -> bool {
        self >= Self::Avx2
    }
}

/// Which layout to encode a matrix in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The smallest of bitmap and CSR, or 2:4 when the matrix is 2:4 and its encoding is at
    /// most [`NM_SIZE_SLACK`] times larger.
    Auto,
    /// [`BitmapMatrix`].
    Bitmap,
    /// [`CsrMatrix`].
    Csr,
    /// [`NmMatrix`] with at most `n` non-zeros per `m`.
    Nm {
        /// Non-zeros per group.
        n: usize,
        /// Group size.
        m: usize,
    },
}

impl std::str::FromStr for Layout {
    type Err = SparseError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => Self::Auto,
            "bitmap" => Self::Bitmap,
            "csr" => Self::Csr,
            other => {
                let bad = || {
                    SparseError::Descriptor(format!(
                        "unknown sparse layout `{other}` (expected auto, bitmap, csr or N:M such as 2:4)"
                    ))
                };
                let (n, m) = other.split_once(':').ok_or_else(bad)?;
                let (n, m) = (n.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
                nm::check_nm(n, m)?;
                Self::Nm { n, m }
            }
        })
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Bitmap => f.write_str("bitmap"),
            Self::Csr => f.write_str("csr"),
            Self::Nm { n, m } => write!(f, "{n}:{m}"),
        }
    }
}

/// Which matrices to store sparsely, and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncodePolicy {
    /// Matrices with at least this fraction of exact zeros are encoded; others stay dense.
    pub min_sparsity: f64,
    /// Layout of the encoded ones.
    pub layout: Layout,
}

/// Default [`EncodePolicy::min_sparsity`]: below it a dense f32 matmul is as fast (measured in
/// docs/sparse-storage.md), though the bitmap is already smaller from about 3%.
pub const DEFAULT_MIN_SPARSITY: f64 = 0.3;

impl Default for EncodePolicy {
    fn default() -> Self {
        Self {
            min_sparsity: DEFAULT_MIN_SPARSITY,
            layout: Layout::Auto,
        }
    }
}

/// How much larger than the smallest layout a 2:4 encoding may be and still be chosen by
/// [`Layout::Auto`].
pub const NM_SIZE_SLACK: f64 = 1.02;

/// Fraction of exact zeros.
pub fn sparsity(dense: &[f32]) -> f64 {
    dense.iter().filter(|&&w| w == 0.0).count() as f64 / dense.len().max(1) as f64
}

impl EncodePolicy {
    /// The matrix encoded per this policy, or `None` when it is not sparse enough.
    pub fn encode(&self, dense: &[f32], rows: usize, cols: usize) -> Result<Option<SparseMatrix>> {
        if dense.is_empty() || sparsity(dense) < self.min_sparsity {
            return Ok(None);
        }
        SparseMatrix::encode(dense, rows, cols, self.layout).map(Some)
    }
}

/// A sparse matrix in one of the layouts.
#[derive(Debug, Clone, PartialEq)]
pub enum SparseMatrix {
    /// Bitmap layout.
    Bitmap(BitmapMatrix),
    /// CSR layout.
    Csr(CsrMatrix),
    /// N:M layout.
    Nm(NmMatrix),
}

/// The metadata entry describing one stored sparse matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// `bitmap`, `csr` or `nm`.
    pub format: String,
    /// Rows of the dense matrix.
    pub rows: usize,
    /// Columns of the dense matrix.
    pub cols: usize,
    /// N of N:M.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// M of N:M.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<usize>,
    /// Value type (`f32`).
    pub values: String,
}

impl SparseMatrix {
    /// Encodes a dense row-major `rows × cols` matrix exactly (signed zeros become `+0`).
    pub fn encode(dense: &[f32], rows: usize, cols: usize, layout: Layout) -> Result<Self> {
        assert_eq!(dense.len(), rows * cols, "dense matrix must be rows x cols");
        Ok(match layout {
            Layout::Bitmap => Self::Bitmap(BitmapMatrix::encode(dense, rows, cols)),
            Layout::Csr => Self::Csr(CsrMatrix::encode(dense, rows, cols)?),
            Layout::Nm { n, m } => Self::Nm(NmMatrix::encode(dense, rows, cols, n, m)?),
            Layout::Auto => {
                // The smallest file wins, but 2:4 is taken up to NM_SIZE_SLACK larger: real 2:4
                // weights hold a few exact zeros (the bitmap then saves a few bytes), and the 2:4
                // kernel needs no popcounts.
                let nnz = dense.len() - dense.iter().filter(|&&w| w == 0.0).count();
                let bitmap_bytes = nnz * 4 + rows * cols.div_ceil(8);
                let csr_bytes = nnz * 6 + (rows + 1) * 4;
                let nm24_slots = cols / 4 * 2 + 2.min(cols % 4);
                let nm24_bytes = rows * (nm24_slots * 4 + (2 * nm24_slots).div_ceil(8));
                if nm24_bytes as f64 <= NM_SIZE_SLACK * bitmap_bytes.min(csr_bytes) as f64 {
                    if let Ok(nm) = NmMatrix::encode(dense, rows, cols, 2, 4) {
                        return Ok(Self::Nm(nm));
                    }
                }
                if csr_bytes < bitmap_bytes && cols <= csr::CSR_MAX_COLS {
                    Self::Csr(CsrMatrix::encode(dense, rows, cols)?)
                } else {
                    Self::Bitmap(BitmapMatrix::encode(dense, rows, cols))
                }
            }
        })
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Self::Bitmap(m) => m.shape(),
            Self::Csr(m) => m.shape(),
            Self::Nm(m) => m.shape(),
        }
    }

    /// Layout name: `bitmap`, `csr` or `N:M`.
    pub fn layout(&self) -> Layout {
        match self {
            Self::Bitmap(_) => Layout::Bitmap,
            Self::Csr(_) => Layout::Csr,
            Self::Nm(m) => {
                let (n, m) = m.pattern();
                Layout::Nm { n, m }
            }
        }
    }

    /// Values stored (N:M padding zeros included).
    pub fn stored_values(&self) -> usize {
        match self {
            Self::Bitmap(m) => m.nnz(),
            Self::Csr(m) => m.nnz(),
            Self::Nm(m) => m.stored(),
        }
    }

    /// Bytes held in memory.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Self::Bitmap(m) => m.heap_bytes(),
            Self::Csr(m) => m.heap_bytes(),
            Self::Nm(m) => m.heap_bytes(),
        }
    }

    /// Bytes of the components on disk.
    pub fn file_bytes(&self) -> usize {
        match self {
            Self::Bitmap(m) => m.file_bytes(),
            Self::Csr(m) => m.file_bytes(),
            Self::Nm(m) => m.file_bytes(),
        }
    }

    /// The dense row-major matrix.
    pub fn to_dense(&self) -> Vec<f32> {
        fn fill<M: SparseRows>(m: &M) -> Vec<f32> {
            let (rows, cols) = m.shape();
            let mut d = vec![0f32; rows * cols];
            for r in 0..rows {
                for (c, v) in m.nonzeros(r) {
                    d[r * cols + c] = v;
                }
            }
            d
        }
        match self {
            Self::Bitmap(m) => fill(m),
            Self::Csr(m) => fill(m),
            Self::Nm(m) => fill(m),
        }
    }

    /// `y = x Wᵀ` with `x: [n, cols]` and `y: [n, rows]` (row-major) on `pool`, with the
    /// fastest kernels of this CPU.
    pub fn matmul(&self, x: &[f32], y: &mut [f32], pool: &Pool) {
        self.matmul_with(x, y, pool, Isa::detect());
    }

    /// [`Self::matmul`] with the kernels of `isa` (which must be available here).
    pub fn matmul_with(&self, x: &[f32], y: &mut [f32], pool: &Pool, isa: Isa) {
        assert!(
            isa <= Isa::detect(),
            "{isa:?} kernels are not available on this CPU"
        );
        match self {
            Self::Bitmap(m) => matmul::matmul(m, x, y, pool, isa),
            Self::Csr(m) => matmul::matmul(m, x, y, pool, isa),
            Self::Nm(m) => matmul::matmul(m, x, y, pool, isa),
        }
    }

    /// The safetensors metadata entry (JSON) describing this matrix.
    pub fn descriptor(&self) -> String {
        let (rows, cols) = self.shape();
        let (format, n, m) = match self.layout() {
            Layout::Nm { n, m } => ("nm", Some(n), Some(m)),
            Layout::Csr => ("csr", None, None),
            _ => ("bitmap", None, None),
        };
        let d = Descriptor {
            format: format.into(),
            rows,
            cols,
            n,
            m,
            values: "f32".into(),
        };
        serde_json::to_string(&d).expect("a descriptor serialises")
    }

    /// The arrays to store, each as `<name>.<suffix>`.
    pub fn components(&self) -> Vec<Component> {
        match self {
            Self::Bitmap(m) => m.components(),
            Self::Csr(m) => m.components(),
            Self::Nm(m) => m.components(),
        }
    }

    /// Rebuilds a matrix from its descriptor and components; bad or inconsistent pieces give
    /// an error naming the problem.
    pub fn from_components(descriptor: &str, src: &mut dyn ComponentSource) -> Result<Self> {
        let d: Descriptor = serde_json::from_str(descriptor)
            .map_err(|e| SparseError::Descriptor(format!("`{descriptor}`: {e}")))?;
        if d.values != "f32" {
            return Err(SparseError::Descriptor(format!(
                "values of type `{}` (this build reads f32)",
                d.values
            )));
        }
        if d.rows == 0 || d.cols == 0 {
            return Err(SparseError::Descriptor(format!(
                "empty shape {}x{}",
                d.rows, d.cols
            )));
        }
        let (rows, cols) = (d.rows, d.cols);
        Ok(match (d.format.as_str(), d.n, d.m) {
            ("bitmap", ..) => Self::Bitmap(BitmapMatrix::from_components(rows, cols, src)?),
            ("csr", ..) => Self::Csr(CsrMatrix::from_components(rows, cols, src)?),
            ("nm", Some(n), Some(m)) => Self::Nm(NmMatrix::from_components(rows, cols, n, m, src)?),
            ("nm", ..) => return Err(SparseError::Descriptor("nm without n and m".into())),
            (other, ..) => {
                return Err(SparseError::Descriptor(format!(
                    "unknown format `{other}` (expected bitmap, csr or nm)"
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests;
