//! Semi-structured N:M masks (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks"):
//! in every group of `m` consecutive input weights of a row, the `n` with the lowest saliency
//! are zeroed. Used by all three pruners; SparseGPT chooses each group's mask lazily, when its
//! column sweep reaches the group (Frantar & Alistarh 2023, §3 "Semi-structured sparsity").

use crate::mask::mark_lowest;

/// Marks the `n` lowest of every `m` consecutive `scores` of one row (`pruned` all false on
/// entry; a trailing partial group keeps the same ratio, rounded).
pub fn nm_mask_row(scores: &[f32], n: usize, m: usize, pruned: &mut [bool]) {
    for (s, p) in scores.chunks(m).zip(pruned.chunks_mut(m)) {
        let k = if s.len() == m { n } else { (n * s.len()) / m };
        mark_lowest(s, k, p);
    }
}

/// The N:M mask (true = zeroed) of `[rows, cols]` scores.
pub fn nm_mask(scores: &[f32], rows: usize, cols: usize, n: usize, m: usize) -> Vec<bool> {
    let mut pruned = vec![false; rows * cols];
    for (s, p) in scores.chunks(cols).zip(pruned.chunks_mut(cols)) {
        nm_mask_row(s, n, m, p);
    }
    pruned
}

/// Whether every complete group of `m` consecutive weights in each row of `w` holds at least
/// `n` exact zeros.
pub fn is_nm_sparse(w: &[f32], cols: usize, n: usize, m: usize) -> bool {
    w.chunks(cols).all(|row| {
        row.chunks_exact(m)
            .all(|g| g.iter().filter(|&&x| x == 0.0).count() >= n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_of_four_per_group() {
        let s = [4.0, 1.0, 3.0, 2.0, 0.0, 9.0, 8.0, 0.5];
        let m = nm_mask(&s, 1, 8, 2, 4);
        assert_eq!(m, [false, true, false, true, true, false, false, true]);
        let w: Vec<f32> = s
            .iter()
            .zip(&m)
            .map(|(&x, &p)| if p { 0.0 } else { x + 1.0 })
            .collect();
        assert!(is_nm_sparse(&w, 8, 2, 4));
        assert!(!is_nm_sparse(&[1.0, 0.0, 1.0, 1.0], 4, 2, 4));
    }
}
