//! The experiments of Dong, Cordonnier & Loukas 2021, "Attention is not all you need: pure
//! attention loses rank doubly exponentially with depth": Figure 2 (per-layer relative residual
//! `‖res(X_l)‖/‖X_l‖`, mean ± std over a batch of sequences, for SAN / SAN + skip / SAN + MLP /
//! full, at initialisation and pretrained) and the chained-attention paths of §3 (the path
//! length view of eq. 5) sampled from a model's own attention.
//!
//! The residual is measured on the residual stream after every block (`X_0` is the token
//! embedding), the quantity the reference code reads from Hugging Face's `hidden_states`.

use crate::paths::{chained_product, path_residual, path_share, sample_path, Quartiles};
use crate::surgery::{layer_residuals, normal, LayerResiduals, MeanStd, Net, Variant};
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Curve {
    /// Which variant.
    pub variant: Variant,
    /// `‖res‖₁,∞/‖X‖₁,∞`, mean-centred (the reference's Figure 2 measure).
    pub l1inf_mean: MeanStd,
    /// Same, median-centred.
    pub l1inf_median: MeanStd,
    /// The paper's argmin-centred ratio, certified lower end (see
    /// [`crate::residual::argmin_residual`]).
    pub l1inf_argmin_lower: MeanStd,
    /// The argmin-centred ratio, attained upper end.
    pub l1inf_argmin_upper: MeanStd,
    /// Frobenius, mean-centred.
    pub fro: MeanStd,
}

/// The four curves of one model state (at initialisation or pretrained), and the sampled
/// attention paths of its full variant.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Panel {
    /// `pretrained`, `init`, ...
    pub label: String,
    /// Sequences averaged over.
    pub sequences: usize,
    /// Tokens per sequence.
    pub tokens: usize,
    /// Blocks `L` of the network.
    pub n_layer: usize,
    /// Heads per block `H`.
    pub n_head: usize,
    /// One per variant.
    pub curves: Vec<Curve>,
    /// One row per path length `1..=L` (empty when no paths were sampled).
    pub paths: Vec<PathRow>,
}

/// Runs every variant of `net` on every input `[t, d]` and aggregates the per-layer residuals;
/// during the full variant's passes samples `paths_per_length` single-head paths of every length
/// per sequence from its attention. `on_done` is called after each (variant, sequence) pass.
pub fn panel(
    net: &Net,
    inputs: &[Tensor],
    label: &str,
    paths_per_length: usize,
    seed: u64,
    mut on_done: impl FnMut(Variant, usize),
) -> Result<Panel> {
    let tokens = inputs.first().map_or(Ok(0), |x| x.dim(0))?;
    let mut sampler = PathSampler::new(net.arch.n_layer, net.arch.n_head, seed);
    let mut curves = Vec::new();
    for v in Variant::ALL {
        let mut rows: Vec<LayerResiduals> = Vec::new();
        for (i, x) in inputs.iter().enumerate() {
            let keep = v == Variant::Full && paths_per_length > 0;
            let trace = net.forward(x, v, keep)?;
            rows.push(layer_residuals(&trace)?);
            if keep {
                sampler.sample(&trace.attention, paths_per_length)?;
            }
            on_done(v, i);
        }
        let stat = |f: fn(&LayerResiduals) -> &Vec<f64>| -> MeanStd {
            MeanStd::of(&rows.iter().map(|r| f(r).clone()).collect::<Vec<_>>())
        };
        curves.push(Curve {
            variant: v,
            l1inf_mean: stat(|r| &r.l1inf_mean),
            l1inf_median: stat(|r| &r.l1inf_median),
            l1inf_argmin_lower: stat(|r| &r.l1inf_argmin_lower),
            l1inf_argmin_upper: stat(|r| &r.l1inf_argmin_upper),
            fro: stat(|r| &r.fro),
        });
    }
    Ok(Panel {
        label: label.to_string(),
        sequences: inputs.len(),
        tokens,
        n_layer: net.arch.n_layer,
        n_head: net.arch.n_head,
        curves,
        paths: if paths_per_length > 0 {
            sampler.rows()
        } else {
            Vec::new()
        },
    })
}

/// Sampled single-head paths of one length.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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

/// Collects chained-attention products of uniformly sampled single-head paths (as the
/// reference samples them: `k` distinct layers, one random head each) and their residuals.
pub struct PathSampler {
    n_layer: usize,
    n_head: usize,
    rng: StdRng,
    rank1: Vec<Vec<f64>>,
    token_uniform: Vec<Vec<f64>>,
}

impl PathSampler {
    /// A sampler for `n_layer` blocks of `n_head` heads.
    pub fn new(n_layer: usize, n_head: usize, seed: u64) -> Self {
        Self {
            n_layer,
            n_head,
            rng: StdRng::seed_from_u64(seed ^ 0x7061_7468),
            rank1: vec![Vec::new(); n_layer],
            token_uniform: vec![Vec::new(); n_layer],
        }
    }

    /// Samples `per_length` paths of every length `1..=L` from one sequence's attention
    /// (`attention[l]: [H, t, t]`) and records their residuals.
    pub fn sample(&mut self, attention: &[Tensor], per_length: usize) -> Result<()> {
        for k in 1..=self.n_layer {
            for _ in 0..per_length {
                let path = sample_path(&mut self.rng, k, self.n_layer, self.n_head);
                let r = path_residual(&chained_product(attention, &path)?);
                self.rank1[k - 1].push(r.rank1);
                self.token_uniform[k - 1].push(r.token_uniform);
            }
        }
        Ok(())
    }

    /// One row per length: share, sample count and residual quartiles.
    pub fn rows(&self) -> Vec<PathRow> {
        (1..=self.n_layer)
            .map(|k| PathRow {
                length: k,
                share: path_share(self.n_layer, self.n_head, k),
                samples: self.rank1[k - 1].len(),
                rank1: Quartiles::of(&self.rank1[k - 1]),
                token_uniform: Quartiles::of(&self.token_uniform[k - 1]),
            })
            .collect()
    }
}
