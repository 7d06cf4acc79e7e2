//! The experiments of Dong, Cordonnier & Loukas 2021, "Attention is not all you need: pure
//! attention loses rank doubly exponentially with depth": Figure 2 (per-layer relative residual
//! `‖res(X_l)‖/‖X_l‖`, mean ± std over a batch of sequences, for SAN / SAN + skip / SAN + MLP /
//! full, at initialisation and pretrained) and the chained-attention paths of §3 (Figure 3's
//! "path length" view) sampled from a model's own attention.
//!
//! The residual is measured on the residual stream after every block (`X_0` is the token
//! embedding), the quantity the reference code reads from Hugging Face's `hidden_states`.

use crate::paths::{chained_product, path_residual, path_share, sample_path, Quartiles};
use crate::surgery::{layer_residuals, normal, MeanStd, Net, Variant};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Cuts `tokens` into `seqs` windows of `len` tokens, evenly spaced over the text.
pub fn text_windows(tokens: &[u32], seqs: usize, len: usize) -> Result<Vec<Vec<u32>>> {
    if seqs == 0 || len == 0 {
        bail!("need at least one sequence of at least one token");
    }
    if tokens.len() < seqs * len {
        bail!(
            "text has {} tokens, need {} for {seqs} sequences of {len}",
            tokens.len(),
            seqs * len
        );
    }
    let stride = (tokens.len() - len) / seqs.max(1);
    Ok((0..seqs)
        .map(|i| tokens[i * stride..i * stride + len].to_vec())
        .collect())
}

/// Random-initialised embedding of `ids`: row of token `id` is `N(0, std²)`, drawn from a
/// generator seeded by `(seed, id)`, so a token repeated in the text repeats its row.
pub fn random_embedding(ids: &[u32], hidden: usize, std: f64, seed: u64) -> Result<Tensor> {
    let data: Vec<f32> = ids
        .iter()
        .flat_map(|&id| {
            let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(id) << 20) ^ 0x9e37_79b9);
            normal(&mut rng, hidden, std)
        })
        .collect();
    Ok(Tensor::from_vec(data, (ids.len(), hidden), &Device::Cpu)?)
}

/// One architecture variant's curves.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Curve {
    /// Which variant.
    pub variant: Variant,
    /// `‖res‖₁,∞/‖X‖₁,∞`, mean-centred (the reference's Figure 2 measure).
    pub l1inf_mean: MeanStd,
    /// Same, median-centred.
    pub l1inf_median: MeanStd,
    /// Frobenius, mean-centred.
    pub fro: MeanStd,
}

/// The four curves of one model state (at initialisation or pretrained).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Panel {
    /// `pretrained`, `init`, ...
    pub label: String,
    /// Sequences averaged over.
    pub sequences: usize,
    /// Tokens per sequence.
    pub tokens: usize,
    /// One per variant.
    pub curves: Vec<Curve>,
}

/// Runs every variant of `net` on every input `[t, d]` and aggregates the per-layer residuals.
/// `on_done` is called after each (variant, sequence) pass, for progress reporting.
pub fn panel(
    net: &Net,
    inputs: &[Tensor],
    label: &str,
    mut on_done: impl FnMut(Variant, usize),
) -> Result<Panel> {
    let tokens = inputs.first().map_or(Ok(0), |x| x.dim(0))?;
    let mut curves = Vec::new();
    for v in Variant::ALL {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for (i, x) in inputs.iter().enumerate() {
            let r = layer_residuals(&net.forward(x, v, false)?)?;
            a.push(r.l1inf_mean);
            b.push(r.l1inf_median);
            c.push(r.fro);
            on_done(v, i);
        }
        curves.push(Curve {
            variant: v,
            l1inf_mean: MeanStd::of(&a),
            l1inf_median: MeanStd::of(&b),
            fro: MeanStd::of(&c),
        });
    }
    Ok(Panel {
        label: label.to_string(),
        sequences: inputs.len(),
        tokens,
        curves,
    })
}

/// Sampled single-head paths of one length.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PathRow {
    /// Heads on the path.
    pub length: usize,
    /// `C(L,k)Hᵏ/(H+1)ᴸ`.
    pub share: f64,
    /// Paths sampled.
    pub samples: usize,
    /// Distance of `P_k⋯P_1` to rank 1 (best SVD rank-1, composite norm), quartiles.
    pub rank1: Quartiles,
    /// Distance to token-uniform `1xᵀ` (mean-centred, composite norm), quartiles.
    pub token_uniform: Quartiles,
}

/// Samples `per_sequence` paths of every length `1..=L` from each input's attention in the full
/// (unmodified) model and measures their products.
pub fn path_study(
    net: &Net,
    inputs: &[Tensor],
    per_sequence: usize,
    seed: u64,
) -> Result<Vec<PathRow>> {
    let (l_total, h) = (net.arch.n_layer, net.arch.n_head);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rank1 = vec![Vec::new(); l_total];
    let mut uniform = vec![Vec::new(); l_total];
    for x in inputs {
        let attention = net.forward(x, Variant::Full, true)?.attention;
        for k in 1..=l_total {
            for _ in 0..per_sequence {
                let path = sample_path(&mut rng, k, l_total, h);
                let r = path_residual(&chained_product(&attention, &path)?);
                rank1[k - 1].push(r.rank1);
                uniform[k - 1].push(r.token_uniform);
            }
        }
    }
    Ok((1..=l_total)
        .map(|k| PathRow {
            length: k,
            share: path_share(l_total, h, k),
            samples: rank1[k - 1].len(),
            rank1: Quartiles::of(&rank1[k - 1]),
            token_uniform: Quartiles::of(&uniform[k - 1]),
        })
        .collect())
}
