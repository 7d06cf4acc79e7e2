//! One seam for the three pruners: a [`Pruner`] turns a dense layer and the statistics of its
//! calibration inputs into a pruned layer of the requested [`Sparsity`]. The sequential driver
//! (`sequential.rs`) is the same for all of them.

use crate::hessian::{inverse_cholesky, Gram, InverseCholesky};
use crate::matrix::Matrix;
use crate::pattern::Sparsity;
use anyhow::Result;
use std::sync::OnceLock;

/// Calibration statistics of one linear-layer input, shared by the layers that read it
/// (`q/k/v`, `gate/up`): the Gram matrix and, once a pruner asks, its inverse factor.
#[derive(Debug)]
pub struct InputStats {
    /// `Σ x xᵀ` over calibration tokens.
    pub gram: Gram,
    factor: OnceLock<InverseCholesky>,
}

impl InputStats {
    /// Wraps an accumulated Gram matrix.
    pub fn new(gram: Gram) -> Self {
        Self {
            gram,
            factor: OnceLock::new(),
        }
    }

    /// The upper Cholesky factor of `(H + λI)⁻¹`, computed once for all layers of this input.
    pub fn inverse_factor(&self, percdamp: f64) -> Result<&InverseCholesky> {
        if let Some(f) = self.factor.get() {
            return Ok(f);
        }
        let f = inverse_cholesky(&self.gram, percdamp)?;
        Ok(self.factor.get_or_init(|| f))
    }
}

/// What a pruner reports about one layer besides the weights.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneNotes {
    /// SparseGPT: the OBS loss estimate `Σ (w−q)²/[H⁻¹]²_jj / 2`.
    pub obs_loss: Option<f64>,
    /// SparseGPT: damping used, as a fraction of `mean(diag H)`.
    pub damp_fraction: Option<f64>,
    /// SparseGPT: times the damping was raised because Cholesky failed.
    pub damp_retries: usize,
}

/// A one-shot pruning method.
pub trait Pruner: Sync {
    /// Name in reports (`magnitude`, `wanda`, `sparsegpt`).
    fn name(&self) -> &'static str;

    /// Whether the method reads calibration inputs (magnitude does not).
    fn needs_calibration(&self) -> bool;

    /// Prunes `w` in place to `sparsity`, given its input statistics when calibrated.
    fn prune(
        &self,
        w: &mut Matrix,
        inputs: Option<&InputStats>,
        sparsity: Sparsity,
    ) -> Result<PruneNotes>;
}
