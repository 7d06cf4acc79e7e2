//! SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately
//! Pruned in One-Shot"), Algorithm 1: prune a layer column by column, each pruned weight's
//! error compensated by an Optimal Brain Surgeon update of the columns not yet visited, with
//! the inverse Hessians of the shrinking column sets read off one Cholesky factor.
//!
//! Algorithm 1 (numbering ours, as in the paper's listing):
//! ```text
//!  1  M ← 1                                  mask
//!  2  E ← 0 (d_row × B)                      block errors
//!  3  H⁻¹ ← Cholesky(H⁻¹)ᵀ                   (hessian.rs)
//!  4  for i = 0, B, 2B, …
//!  5    M[:, i:i+B] ← keep the (1−p) with largest w²/[H⁻¹]²_cc      adaptive mask selection
//!  6    for j = i … i+B−1
//!  7      E[:, j−i] ← W[:, j] / [H⁻¹]_jj                            pruning error
//!  8      E[:, j−i] ← (1 − M[:, j]) · E[:, j−i]                     only pruned weights
//!  9      W[:, j:i+B] ← W[:, j:i+B] − E[:, j−i] · H⁻¹[j, j:i+B]     OBS update
//! 10    end
//! 11    W[:, i+B:] ← W[:, i+B:] − E · H⁻¹[i:i+B, i+B:]             lazy batch update
//! 12  end
//! 13  W ← W ⊙ M
//! ```
//! N:M (§3 "Semi-structured sparsity"): line 5 is replaced by choosing, when the sweep reaches
//! column `j ≡ 0 (mod M)`, the N weights of `W[r, j:j+M]` with the lowest `w²/[H⁻¹]²_cc` in
//! each row. Rows are independent given `H⁻¹` and the mask, so lines 6–10 run row-parallel;
//! line 11 is one GEMM.

use crate::hessian::InverseCholesky;
use crate::mask::mark_lowest;
use crate::matrix::Matrix;
use crate::nm_mask::nm_mask_row;
use crate::pattern::{zeros_up_to, Sparsity};
use anyhow::{bail, Result};
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Column block width `B` of the reference (also its adaptive-mask block `B_s`).
pub const DEFAULT_BLOCK_SIZE: usize = 128;

/// Which weights Algorithm 1 prunes.
#[derive(Debug, Clone)]
pub enum MaskChoice {
    /// Chosen by the algorithm as it sweeps (line 5, or the lazy N:M choice).
    Adaptive(Sparsity),
    /// A fixed mask (true = pruned), row-major like the weight: only the OBS updates run.
    Fixed(Vec<bool>),
}

/// What pruning one layer did.
#[derive(Debug, Clone)]
pub struct ObsOutcome {
    /// The mask applied (true = zeroed).
    pub pruned: Vec<bool>,
    /// `Σ (w − q)² / [H⁻¹]²_jj / 2` over pruned weights: the OBS estimate of the loss increase
    /// (the reference's `error`), in units of the scaled Hessian `2XXᵀ/n`.
    pub obs_loss: f64,
}

/// Runs Algorithm 1 on `w` in place with the factor `u` of its Hessian inverse.
pub fn prune(
    w: &mut Matrix,
    u: &InverseCholesky,
    mask: &MaskChoice,
    block_size: usize,
) -> Result<ObsOutcome> {
    let (rows, cols) = (w.rows, w.cols);
    if u.dim != cols {
        bail!(
            "Hessian is {}x{} for a layer with {cols} inputs",
            u.dim,
            u.dim
        );
    }
    if block_size == 0 {
        bail!("block size must be positive");
    }
    match mask {
        MaskChoice::Adaptive(s) => s.check_shape(rows, cols)?,
        MaskChoice::Fixed(m) if m.len() != rows * cols => {
            bail!("fixed mask has {} entries for {rows}x{cols}", m.len())
        }
        MaskChoice::Fixed(_) => {}
    }
    if let MaskChoice::Adaptive(Sparsity::NM { m, .. }) = mask {
        if !block_size.is_multiple_of(*m) {
            bail!("block size {block_size} must be a multiple of M = {m}");
        }
    }
    // Features never seen in calibration carry no information: zero them (as the reference).
    for r in 0..rows {
        for (c, &d) in u.dead.iter().enumerate() {
            if d {
                w.data[r * cols + c] = 0.0;
            }
        }
    }
    let diag: Vec<f32> = (0..cols).map(|j| u.at(j, j)).collect();
    let mut pruned = vec![false; rows * cols];
    let mut losses = vec![0f64; rows];
    for i1 in (0..cols).step_by(block_size) {
        let i2 = (i1 + block_size).min(cols);
        let b = i2 - i1;
        let mut block_mask = vec![false; rows * b];
        match mask {
            MaskChoice::Fixed(m) => {
                for r in 0..rows {
                    block_mask[r * b..(r + 1) * b]
                        .copy_from_slice(&m[r * cols + i1..r * cols + i2]);
                }
            }
            // Line 5: the p lowest w²/[H⁻¹]²_cc over the whole block, all rows together.
            MaskChoice::Adaptive(Sparsity::Unstructured(p)) => {
                let mut scores = vec![0f32; rows * b];
                for r in 0..rows {
                    for c in 0..b {
                        let x = w.data[r * cols + i1 + c];
                        let d = diag[i1 + c];
                        scores[r * b + c] = x * x / (d * d);
                    }
                }
                let k = zeros_up_to(*p, rows * i1, rows * i2);
                mark_lowest(&scores, k, &mut block_mask);
            }
            // N:M: chosen inside the sweep, per row.
            MaskChoice::Adaptive(Sparsity::NM { .. }) => {}
        }
        let nm = match mask {
            MaskChoice::Adaptive(Sparsity::NM { n, m }) => Some((*n, *m)),
            _ => None,
        };
        let mut errors = vec![0f32; rows * b];
        // Lines 6–10, one row at a time.
        w.data
            .par_chunks_mut(cols)
            .zip(errors.par_chunks_mut(b))
            .zip(block_mask.par_chunks_mut(b))
            .zip(losses.par_iter_mut())
            .for_each(|(((row, err), keep_out), loss)| {
                sweep_row(&mut row[i1..i2], err, keep_out, loss, u, i1, nm);
            });
        for r in 0..rows {
            pruned[r * cols + i1..r * cols + i2].copy_from_slice(&block_mask[r * b..(r + 1) * b]);
        }
        // Line 11: W[:, i2:] −= E · U[i1:i2, i2:].
        if i2 < cols {
            let wm = MatMut::from_row_major_slice_mut(&mut w.data, rows, cols);
            let tail = wm.submatrix_mut(0, i2, rows, cols - i2);
            let e = MatRef::from_row_major_slice(&errors, rows, b);
            let uu =
                MatRef::from_row_major_slice(&u.upper, cols, cols).submatrix(i1, i2, b, cols - i2);
            faer::linalg::matmul::matmul(tail, Accum::Add, e, uu, -1.0f32, Par::rayon(0));
        }
    }
    // Line 13 (the sweep already wrote exact zeros; this guards the dead features' mask).
    w.apply_mask(&pruned);
    Ok(ObsOutcome {
        pruned,
        obs_loss: losses.iter().sum::<f64>() / 2.0,
    })
}

/// Lines 6–10 for one row's block `w = W[r, i1:i1+B]`: prunes the masked weights one column
/// at a time, spreading each one's error over the later columns of the block.
fn sweep_row(
    w: &mut [f32],
    err: &mut [f32],
    pruned: &mut [bool],
    loss: &mut f64,
    u: &InverseCholesky,
    i1: usize,
    nm: Option<(usize, usize)>,
) {
    let b = w.len();
    for j in 0..b {
        let col = i1 + j;
        let d = u.at(col, col);
        if let Some((n, m)) = nm {
            if j % m == 0 {
                let end = (j + m).min(b);
                let scores: Vec<f32> = (j..end)
                    .map(|c| {
                        let dc = u.at(i1 + c, i1 + c);
                        w[c] * w[c] / (dc * dc)
                    })
                    .collect();
                nm_mask_row(&scores, n, m, &mut pruned[j..end]);
            }
        }
        if !pruned[j] {
            // Line 8: a kept weight has no error; later columns are unchanged by it.
            continue;
        }
        // Line 7.
        let e = w[j] / d;
        *loss += (e * e) as f64;
        err[j] = e;
        w[j] = 0.0;
        // Line 9: W[r, j+1:i2] −= e · U[j, j+1:i2].
        let urow = &u.upper[col * u.dim + col + 1..col * u.dim + i1 + b];
        for (x, &h) in w[j + 1..].iter_mut().zip(urow) {
            *x -= e * h;
        }
    }
}

/// SparseGPT as a [`Pruner`](crate::pruner::Pruner): Algorithm 1 with an adaptive mask.
#[derive(Debug, Clone, Copy)]
pub struct SparseGpt {
    /// Column block `B` (lazy batch and adaptive-mask block), 128 in the paper.
    pub block_size: usize,
    /// Dampening `λ = percdamp · mean(diag H)`, 0.01 in the paper.
    pub percdamp: f64,
}

impl Default for SparseGpt {
    fn default() -> Self {
        Self {
            block_size: DEFAULT_BLOCK_SIZE,
            percdamp: 0.01,
        }
    }
}

impl crate::pruner::Pruner for SparseGpt {
    fn name(&self) -> &'static str {
        "sparsegpt"
    }

    fn needs_calibration(&self) -> bool {
        true
    }

    fn prune(
        &self,
        w: &mut Matrix,
        inputs: Option<&crate::pruner::InputStats>,
        sparsity: Sparsity,
    ) -> Result<crate::pruner::PruneNotes> {
        let Some(inputs) = inputs else {
            bail!("SparseGPT needs calibration inputs");
        };
        let factor = inputs.inverse_factor(self.percdamp)?;
        let outcome = prune(w, factor, &MaskChoice::Adaptive(sparsity), self.block_size)?;
        Ok(crate::pruner::PruneNotes {
            obs_loss: Some(outcome.obs_loss),
            damp_fraction: Some(factor.damp_fraction),
            damp_retries: factor.retries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hessian::{inverse_cholesky, Gram};
    use crate::magnitude::Magnitude;
    use crate::mask::{lowest_scores_mask, Comparison};
    use crate::pruner::{InputStats, Pruner};
    use crate::wanda::Wanda;
    use rand::{Rng, SeedableRng};

    /// Correlated inputs with feature scales spread over two orders of magnitude, as in LLM
    /// activations, and a random weight.
    fn problem(rows: usize, cols: usize, tokens: usize, seed: u64) -> (Matrix, Gram) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mix: Vec<f32> = (0..cols * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let scale: Vec<f32> = (0..cols)
            .map(|j| 10f32.powf(-((j % 7) as f32) / 3.0))
            .collect();
        let mut x = vec![0f32; tokens * cols];
        for t in 0..tokens {
            let z: Vec<f32> = (0..cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            for j in 0..cols {
                let v: f32 = (0..cols).map(|k| mix[j * cols + k] * z[k]).sum::<f32>() * 0.3 + z[j];
                x[t * cols + j] = v * scale[j];
            }
        }
        let mut g = Gram::new(cols);
        g.add(&x).unwrap();
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
        (Matrix::new(rows, cols, w).unwrap(), g)
    }

    fn error(dense: &Matrix, pruned: &Matrix, g: &Gram) -> f64 {
        let d: Vec<f32> = dense
            .data
            .iter()
            .zip(&pruned.data)
            .map(|(a, b)| a - b)
            .collect();
        g.output_energy(&d, dense.rows)
    }

    #[test]
    fn obs_update_beats_masking_alone_for_the_same_mask() -> Result<()> {
        let (w, g) = problem(24, 40, 400, 1);
        let s = Sparsity::Unstructured(0.5);
        let scores: Vec<f32> = w.data.iter().map(|x| x.abs()).collect();
        let mask = lowest_scores_mask(&scores, w.rows, w.cols, s, Comparison::Layer);
        let mut masked = w.clone();
        masked.apply_mask(&mask);
        let u = inverse_cholesky(&g, 0.01)?;
        let mut updated = w.clone();
        let out = prune(&mut updated, &u, &MaskChoice::Fixed(mask.clone()), 16)?;
        assert_eq!(out.pruned, mask);
        for (x, &p) in updated.data.iter().zip(&mask) {
            assert_eq!(*x == 0.0, p, "zeros exactly where the mask is");
        }
        let (e_mask, e_obs) = (error(&w, &masked, &g), error(&w, &updated, &g));
        assert!(e_obs < 0.9 * e_mask, "OBS {e_obs} vs mask only {e_mask}");
        Ok(())
    }

    #[test]
    fn lazy_batches_do_not_change_the_result() -> Result<()> {
        let (w, g) = problem(8, 30, 200, 2);
        let u = inverse_cholesky(&g, 0.01)?;
        let mask: Vec<bool> = (0..w.data.len()).map(|i| (i * 7) % 3 == 0).collect();
        let run = |b| -> Result<Matrix> {
            let mut x = w.clone();
            prune(&mut x, &u, &MaskChoice::Fixed(mask.clone()), b)?;
            Ok(x)
        };
        let (one, lazy) = (run(30)?, run(4)?);
        for (a, b) in one.data.iter().zip(&lazy.data) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        Ok(())
    }

    #[test]
    fn sparsegpt_beats_wanda_and_magnitude_on_reconstruction() -> Result<()> {
        let (w, g) = problem(32, 64, 600, 3);
        let stats = InputStats::new(g.clone());
        for s in [Sparsity::Unstructured(0.5), Sparsity::NM { n: 2, m: 4 }] {
            let err = |p: &dyn Pruner| -> Result<f64> {
                let mut x = w.clone();
                p.prune(&mut x, Some(&stats), s)?;
                assert_eq!(x.zeros(), w.data.len() / 2, "{} {s}", p.name());
                Ok(error(&w, &x, &g))
            };
            let (sg, wa, ma) = (err(&SparseGpt::default())?, err(&Wanda)?, err(&Magnitude)?);
            assert!(
                sg < wa && wa < ma,
                "{s}: sparsegpt {sg}, wanda {wa}, magnitude {ma}"
            );
        }
        Ok(())
    }

    #[test]
    fn nm_masks_are_exact_and_unstructured_counts_exact() -> Result<()> {
        let (w, g) = problem(10, 48, 300, 4);
        let u = inverse_cholesky(&g, 0.01)?;
        for (n, m) in [(2, 4), (4, 8), (1, 4)] {
            let mut x = w.clone();
            let out = prune(&mut x, &u, &MaskChoice::Adaptive(Sparsity::NM { n, m }), 16)?;
            for (row, mrow) in x.data.chunks(48).zip(out.pruned.chunks(48)) {
                for (g, gm) in row.chunks(m).zip(mrow.chunks(m)) {
                    assert_eq!(gm.iter().filter(|&&p| p).count(), n);
                    assert_eq!(g.iter().filter(|&&v| v == 0.0).count(), n);
                }
            }
        }
        for p in [0.3, 0.5, 0.77] {
            let mut x = w.clone();
            prune(
                &mut x,
                &u,
                &MaskChoice::Adaptive(Sparsity::Unstructured(p)),
                16,
            )?;
            assert_eq!(x.zeros(), (p * 480.0f64).round() as usize, "p = {p}");
        }
        assert!(prune(
            &mut w.clone(),
            &u,
            &MaskChoice::Adaptive(Sparsity::NM { n: 2, m: 5 }),
            16
        )
        .is_err());
        Ok(())
    }
}
