//! Magnitude pruning, the baseline of SparseGPT's §4 (Zhu & Gupta 2017 applied one-shot per
//! layer): zero the weights of smallest `|w|`, compared across the whole layer (or within each
//! N:M group). Needs no calibration data.

use crate::mask::{lowest_scores_mask, Comparison};
use crate::matrix::Matrix;
use crate::pattern::Sparsity;
use crate::pruner::{InputStats, PruneNotes, Pruner};
use anyhow::Result;

/// `|w|` saliency, layer-wide comparison.
#[derive(Debug, Clone, Copy, Default)]
pub struct Magnitude;

impl Pruner for Magnitude {
    fn name(&self) -> &'static str {
        "magnitude"
    }

    fn needs_calibration(&self) -> bool {
        false
    }

    fn prune(
        &self,
        w: &mut Matrix,
        _inputs: Option<&InputStats>,
        sparsity: Sparsity,
    ) -> Result<PruneNotes> {
        sparsity.check_shape(w.rows, w.cols)?;
        let scores: Vec<f32> = w.data.iter().map(|x| x.abs()).collect();
        let pruned = lowest_scores_mask(&scores, w.rows, w.cols, sparsity, Comparison::Layer);
        w.apply_mask(&pruned);
        Ok(PruneNotes::default())
    }
}
