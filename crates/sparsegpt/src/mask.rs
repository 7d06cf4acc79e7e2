//! Mask selection shared by every pruner: zero the weights with the lowest saliency scores,
//! compared within a group (the whole layer, one output row, or an N:M group).
//!
//! Counts are exact: a group of `c` weights loses `round(p · c)` of them (ties broken by
//! position), so a layer's sparsity is exactly what was asked, not "at least".

use crate::nm_mask::nm_mask;
use crate::pattern::{zeros_up_to, Sparsity};
use std::cmp::Ordering;

/// Among which weights scores are compared for unstructured sparsity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// The whole layer (magnitude pruning, Zhu & Gupta 2017).
    Layer,
    /// Each output row separately (Wanda, Sun et al. 2023, §3 "comparison group").
    Row,
}

/// Total order on scores: lower score first, then lower index (NaN sorts last).
fn by_score(scores: &[f32]) -> impl Fn(&usize, &usize) -> Ordering + '_ {
    |&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b))
}

/// Marks the `k` lowest of `scores` in `pruned` (which must be all `false` on entry).
pub fn mark_lowest(scores: &[f32], k: usize, pruned: &mut [bool]) {
    let k = k.min(scores.len());
    if k == 0 {
        return;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, by_score(scores));
    }
    for &i in &idx[..k] {
        pruned[i] = true;
    }
}

/// The pruning mask (true = zeroed) of `[rows, cols]` scores for `sparsity`, comparing
/// unstructured scores within `comparison` groups.
pub fn lowest_scores_mask(
    scores: &[f32],
    rows: usize,
    cols: usize,
    sparsity: Sparsity,
    comparison: Comparison,
) -> Vec<bool> {
    let mut pruned = vec![false; rows * cols];
    match (sparsity, comparison) {
        (Sparsity::NM { n, m }, _) => return nm_mask(scores, rows, cols, n, m),
        (Sparsity::Unstructured(p), Comparison::Layer) => {
            mark_lowest(scores, zeros_up_to(p, 0, rows * cols), &mut pruned)
        }
        (Sparsity::Unstructured(p), Comparison::Row) => {
            // Rows differ by at most one zero so that the layer total is exact.
            for (r, (s, m)) in scores.chunks(cols).zip(pruned.chunks_mut(cols)).enumerate() {
                mark_lowest(s, zeros_up_to(p, r * cols, (r + 1) * cols), m);
            }
        }
    }
    pruned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_are_marked_with_ties_by_position() {
        let s = [3.0, 1.0, 1.0, 0.5, 2.0];
        let mut m = [false; 5];
        mark_lowest(&s, 2, &mut m);
        assert_eq!(m, [false, true, false, true, false]);
    }

    #[test]
    fn row_comparison_prunes_each_row_equally() {
        // Row 0 holds all the small scores: a layer-wide comparison empties it, per row does not.
        let s = [0.1, 0.2, 0.3, 0.4, 5.0, 6.0, 7.0, 8.0];
        let u = Sparsity::Unstructured(0.5);
        let layer = lowest_scores_mask(&s, 2, 4, u, Comparison::Layer);
        assert_eq!(layer, [true, true, true, true, false, false, false, false]);
        let row = lowest_scores_mask(&s, 2, 4, u, Comparison::Row);
        assert_eq!(row, [true, true, false, false, true, true, false, false]);
    }
}
