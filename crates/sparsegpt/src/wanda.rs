//! Wanda (Sun, Liu, Bair & Kolter 2023, "A Simple and Effective Pruning Approach for Large
//! Language Models"), Eq. 1: saliency `S_ij = |W_ij| · ‖X_j‖₂`, the weight magnitude times the
//! norm of its input feature over the calibration tokens, compared within each output row
//! (§3 "comparison group"; within each N:M group for semi-structured sparsity). No weight
//! update.

use crate::mask::{lowest_scores_mask, Comparison};
use crate::matrix::Matrix;
use crate::pattern::Sparsity;
use crate::pruner::{InputStats, PruneNotes, Pruner};
use anyhow::{bail, Result};

/// `|W| · ‖X‖₂` saliency, per-row comparison.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wanda;

impl Pruner for Wanda {
    fn name(&self) -> &'static str {
        "wanda"
    }

    fn needs_calibration(&self) -> bool {
        true
    }

    fn prune(
        &self,
        w: &mut Matrix,
        inputs: Option<&InputStats>,
        sparsity: Sparsity,
    ) -> Result<PruneNotes> {
        let Some(inputs) = inputs else {
            bail!("Wanda needs calibration inputs");
        };
        sparsity.check_shape(w.rows, w.cols)?;
        let norms = inputs.gram.column_norms();
        if norms.len() != w.cols {
            bail!(
                "{} input norms for a layer with {} inputs",
                norms.len(),
                w.cols
            );
        }
        let scores: Vec<f32> = w
            .data
            .chunks(w.cols)
            .flat_map(|row| row.iter().zip(&norms).map(|(x, n)| x.abs() * n))
            .collect();
        let pruned = lowest_scores_mask(&scores, w.rows, w.cols, sparsity, Comparison::Row);
        w.apply_mask(&pruned);
        Ok(PruneNotes::default())
    }
}
