//! A dense row-major f32 weight matrix `[rows = out_features, cols = in_features]`, the form
//! every pruner works on, with conversions from and to candle tensors.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

/// Row-major `[rows, cols]` f32 matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// `rows · cols` values, row by row.
    pub data: Vec<f32>,
}

impl Matrix {
    /// Wraps `data`, checking its length.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != rows * cols {
            bail!("{} values for a {rows}x{cols} matrix", data.len());
        }
        Ok(Self { rows, cols, data })
    }

    /// Copies a 2-D tensor (any float dtype).
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let (rows, cols) = t.dims2()?;
        let data = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Self::new(rows, cols, data)
    }

    /// The matrix as a `[rows, cols]` f32 tensor.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.data,
            (self.rows, self.cols),
            device,
        )?)
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Number of exact zeros.
    pub fn zeros(&self) -> usize {
        self.data.iter().filter(|&&x| x == 0.0).count()
    }

    /// Fraction of exact zeros.
    pub fn sparsity(&self) -> f64 {
        self.zeros() as f64 / self.data.len().max(1) as f64
    }

    /// Zeroes the entries where `pruned` is true (same layout as `data`).
    pub fn apply_mask(&mut self, pruned: &[bool]) {
        for (w, &p) in self.data.iter_mut().zip(pruned) {
            if p {
                *w = 0.0;
            }
        }
    }

    /// Errors on NaN or infinite entries.
    pub fn check_finite(&self, what: &str) -> Result<()> {
        if let Some(i) = self.data.iter().position(|x| !x.is_finite()) {
            bail!(
                "{what} holds a non-finite value ({}) at row {}, column {}",
                self.data[i],
                i / self.cols,
                i % self.cols
            );
        }
        Ok(())
    }
}
