//! Architectural surgery (Dong, Cordonnier & Loukas 2021, "Attention is not all you need: pure
//! attention loses rank doubly exponentially with depth", §4 and Figure 2): run a transformer as
//! a pure self-attention network (SAN), SAN + skip connections, SAN + MLP, or the full
//! transformer, and record the residual stream after every block.
//!
//! On a pre-norm llama block `h = x + Attn(N₁(x))`, `y = h + MLP(N₂(h))` the variants are the
//! 2×2 of the reference code's switches `remove_attn_skip` × `remove_ffn`:
//!
//! | variant    | block                                      |
//! |------------|--------------------------------------------|
//! | SAN        | `y = Attn(N₁(x))`                          |
//! | SAN + skip | `y = x + Attn(N₁(x))`                      |
//! | SAN + MLP  | `h = Attn(N₁(x))`, `y = h + MLP(N₂(h))`    |
//! | full       | `h = x + Attn(N₁(x))`, `y = h + MLP(N₂(h))` |
//!
//! As in the reference (which keeps BERT's LayerNorms and the MLP's own residual when it removes
//! the attention skip), the norms stay and "SAN + MLP" keeps the skip around the MLP: with the
//! attention skip gone, a token-uniform `h` stays token-uniform through `h + MLP(N₂(h))`, so only
//! the MLP's non-linearity can restore rank. Attention keeps the model's RoPE and causal mask.
//!
//! [`Net`] holds dense weights taken from a loaded [`Llama`] (its trained norms, projections and
//! MLPs) or drawn at random (`N(0, 0.02²)` matrices and unit norm gains, the Hugging Face
//! initialisation the reference's "at initialization" curves use).

use crate::residual::{relative_argmin_residual, relative_residual, Centering, Mat, Norm};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use ferrite_llm::linear::Linear;
use ferrite_llm::llama::{Mlp, RmsNorm};
use ferrite_llm::rope::Rope;
use ferrite_llm::Llama;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Which parts of each block run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Variant {
    /// Pure self-attention: no skip, no MLP.
    San,
    /// Attention with its skip connection, no MLP.
    SanSkip,
    /// Attention without skip, then the MLP (with its own skip).
    SanMlp,
    /// The unmodified transformer.
    Full,
}

impl Variant {
    /// All four, in the paper's legend order.
    pub const ALL: [Variant; 4] = [Self::San, Self::SanSkip, Self::SanMlp, Self::Full];

    /// Label used in tables and plots.
    pub fn label(self) -> &'static str {
        match self {
            Self::San => "SAN",
            Self::SanSkip => "SAN+skip",
            Self::SanMlp => "SAN+MLP",
            Self::Full => "full",
        }
    }

    fn attn_skip(self) -> bool {
        matches!(self, Self::SanSkip | Self::Full)
    }

    fn mlp(self) -> bool {
        matches!(self, Self::SanMlp | Self::Full)
    }
}

/// Shape of a llama-style transformer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Arch {
    /// Residual width `d`.
    pub hidden: usize,
    /// Query heads `H`.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention).
    pub n_kv_head: usize,
    /// Blocks `L`.
    pub n_layer: usize,
    /// SwiGLU hidden width.
    pub mlp: usize,
    /// RoPE base θ, or `None` for no positional rotation.
    pub rope_theta: Option<f64>,
    /// Causal mask (decoder) or bidirectional (encoder, the paper's BERT setting).
    pub causal: bool,
}

impl Arch {
    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.n_head
    }

    fn validate(&self) -> Result<()> {
        if self.n_head == 0
            || self.n_kv_head == 0
            || self.n_head % self.n_kv_head != 0
            || self.hidden % self.n_head != 0
        {
            bail!(
                "width {} must split into {} heads, a multiple of {} key/value heads",
                self.hidden,
                self.n_head,
                self.n_kv_head
            );
        }
        if self.rope_theta.is_some() && self.head_dim() % 2 != 0 {
            bail!("RoPE needs an even head width, got {}", self.head_dim());
        }
        if self.n_layer == 0 || self.mlp == 0 {
            bail!("need at least one layer and a non-empty MLP");
        }
        Ok(())
    }
}

/// One block's weights.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Pre-attention norm `N₁`.
    pub attn_norm: RmsNorm,
    /// `W_q, W_k, W_v, W_o`.
    pub q: Linear,
    /// `W_k`.
    pub k: Linear,
    /// `W_v`.
    pub v: Linear,
    /// `W_o`.
    pub o: Linear,
    /// Pre-MLP norm `N₂`.
    pub ffn_norm: RmsNorm,
    /// SwiGLU MLP.
    pub mlp: Mlp,
}

/// A transformer to cut up: dense weights plus its attention geometry.
#[derive(Debug, Clone)]
pub struct Net {
    /// Shape.
    pub arch: Arch,
    /// Blocks.
    pub layers: Vec<Layer>,
    rope: Option<Rope>,
}

/// What one forward pass records.
#[derive(Debug)]
pub struct Trace {
    /// Residual stream `X₀` (input) then the output of every block: `L + 1` tensors `[t, d]`.
    pub hidden: Vec<Tensor>,
    /// Per block, the attention probabilities `[H, t, t]` (when asked for).
    pub attention: Vec<Tensor>,
}

/// `n` draws of `N(0, std²)` (Box–Muller), as `f32`.
pub fn normal(rng: &mut impl Rng, n: usize, std: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
            let u2: f64 = rng.gen();
            (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

impl Net {
    /// The trained weights of a loaded model (dequantised to dense f32 where needed).
    pub fn from_llama(model: &Llama) -> Result<Self> {
        let c = &model.config;
        let dense = |l: &Linear| -> Result<Linear> { Linear::dense(l.to_dense()?) };
        let layers = model
            .blocks
            .iter()
            .map(|b| {
                Ok(Layer {
                    attn_norm: b.attn_norm.clone(),
                    q: dense(&b.attn.q)?,
                    k: dense(&b.attn.k)?,
                    v: dense(&b.attn.v)?,
                    o: dense(&b.attn.o)?,
                    ffn_norm: b.ffn_norm.clone(),
                    mlp: Mlp {
                        gate: dense(&b.mlp.gate)?,
                        up: dense(&b.mlp.up)?,
                        down: dense(&b.mlp.down)?,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let arch = Arch {
            hidden: c.hidden_size,
            n_head: c.n_head,
            n_kv_head: c.n_kv_head,
            n_layer: c.n_layer,
            mlp: c.intermediate_size,
            rope_theta: Some(c.rope_theta),
            causal: true,
        };
        if arch.head_dim() != c.head_dim {
            bail!(
                "head width {} is not hidden/heads = {}",
                c.head_dim,
                arch.head_dim()
            );
        }
        Ok(Self {
            rope: Some(model.rope.clone()),
            arch,
            layers,
        })
    }

    /// Random weights: every matrix `N(0, std²)` (`std = 0.02` is the Hugging Face
    /// initialisation), norm gains 1, RoPE with half-split pairs when `arch.rope_theta` is set.
    pub fn random(arch: Arch, std: f64, eps: f32, seed: u64) -> Result<Self> {
        arch.validate()?;
        let dev = Device::Cpu;
        let mut rng = StdRng::seed_from_u64(seed);
        let hd = arch.head_dim();
        let mut lin = |out: usize, inp: usize| -> Result<Linear> {
            Linear::dense(Tensor::from_vec(
                normal(&mut rng, out * inp, std),
                (out, inp),
                &dev,
            )?)
        };
        let norm = || -> Result<RmsNorm> {
            Ok(RmsNorm {
                weight: Tensor::ones(arch.hidden, DType::F32, &dev)?,
                eps,
            })
        };
        let mut layers = Vec::with_capacity(arch.n_layer);
        for _ in 0..arch.n_layer {
            layers.push(Layer {
                attn_norm: norm()?,
                q: lin(arch.n_head * hd, arch.hidden)?,
                k: lin(arch.n_kv_head * hd, arch.hidden)?,
                v: lin(arch.n_kv_head * hd, arch.hidden)?,
                o: lin(arch.hidden, arch.n_head * hd)?,
                ffn_norm: norm()?,
                mlp: Mlp {
                    gate: lin(arch.mlp, arch.hidden)?,
                    up: lin(arch.mlp, arch.hidden)?,
                    down: lin(arch.hidden, arch.mlp)?,
                },
            });
        }
        let rope = arch
            .rope_theta
            .map(|theta| Rope::new(theta, hd, ferrite_llm::config::RopeStyle::HalfSplit, &dev));
        Ok(Self { arch, layers, rope })
    }

    /// Multi-head attention of block `l` on `x: [t, d]` (already normed): the output `[t, d]`
    /// and the attention probabilities `[H, t, t]` (row `i` of head `h` is token `i`'s weights).
    pub fn attention(&self, l: usize, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let a = &self.arch;
        let layer = &self.layers[l];
        let (t, _) = x.dims2()?;
        let hd = a.head_dim();
        let n_rep = a.n_head / a.n_kv_head;
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            Ok(y.reshape((t, n, hd))?.transpose(0, 1)?.contiguous()?)
        };
        let mut q = heads(layer.q.forward(x)?, a.n_head)?;
        let mut k = heads(layer.k.forward(x)?, a.n_kv_head)?;
        let v = heads(layer.v.forward(x)?, a.n_kv_head)?;
        if let Some(rope) = &self.rope {
            let angles = rope.angles(&(0..t).collect::<Vec<_>>())?;
            q = angles.rotate(&q)?;
            k = angles.rotate(&k)?;
        }
        // Query head h reads key/value head h / n_rep (llama's grouping).
        let expand = |y: Tensor| -> Result<Tensor> {
            Ok(y.unsqueeze(1)?
                .expand((a.n_kv_head, n_rep, t, hd))?
                .reshape((a.n_head, t, hd))?)
        };
        let (k, v) = (expand(k)?, expand(v)?);
        let mut scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        if a.causal && t > 1 {
            let mask: Vec<f32> = (0..t * t)
                .map(|ij| {
                    if ij % t <= ij / t {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect();
            scores = scores.broadcast_add(&Tensor::from_vec(mask, (t, t), x.device())?)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let y = probs
            .matmul(&v)?
            .transpose(0, 1)?
            .reshape((t, a.n_head * hd))?;
        Ok((layer.o.forward(&y)?, probs))
    }

    /// Runs `x0: [t, d]` through every block as `variant`; records the residual stream after
    /// each block and, when `keep_attention`, the attention probabilities.
    pub fn forward(&self, x0: &Tensor, variant: Variant, keep_attention: bool) -> Result<Trace> {
        let mut x = x0.to_dtype(DType::F32)?;
        let mut trace = Trace {
            hidden: vec![x.clone()],
            attention: Vec::new(),
        };
        for (l, layer) in self.layers.iter().enumerate() {
            let (a, probs) = self.attention(l, &layer.attn_norm.forward(&x)?)?;
            let h = if variant.attn_skip() { (&x + a)? } else { a };
            x = if variant.mlp() {
                (&h + layer.mlp.forward(&layer.ffn_norm.forward(&h)?)?)?
            } else {
                h
            };
            trace.hidden.push(x.clone());
            if keep_attention {
                trace.attention.push(probs);
            }
        }
        Ok(trace)
    }
}

/// Relative residuals of one sequence, per recorded layer (`L + 1` values).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerResiduals {
    /// `‖res(X_l)‖₁,∞ / ‖X_l‖₁,∞`, mean-centred (the reference's measure).
    pub l1inf_mean: Vec<f64>,
    /// Same with the column-median centre (the `‖·‖₁` argmin).
    pub l1inf_median: Vec<f64>,
    /// The paper's argmin-centred ratio `min_x ‖X_l − 1xᵀ‖₁,∞ / ‖X_l‖₁,∞`: certified lower end.
    pub l1inf_argmin_lower: Vec<f64>,
    /// Its attained upper end (the better of the mean and median centres).
    pub l1inf_argmin_upper: Vec<f64>,
    /// `‖res(X_l)‖_F / ‖X_l‖_F`, mean-centred (the Frobenius argmin).
    pub fro: Vec<f64>,
}

/// The relative residuals of every hidden state in `trace`.
pub fn layer_residuals(trace: &Trace) -> Result<LayerResiduals> {
    let mut out = LayerResiduals {
        l1inf_mean: Vec::new(),
        l1inf_median: Vec::new(),
        l1inf_argmin_lower: Vec::new(),
        l1inf_argmin_upper: Vec::new(),
        fro: Vec::new(),
    };
    for h in &trace.hidden {
        let m = Mat::from_tensor(h)?;
        out.l1inf_mean
            .push(relative_residual(&m, Centering::Mean, Norm::L1Inf));
        out.l1inf_median
            .push(relative_residual(&m, Centering::Median, Norm::L1Inf));
        let argmin = relative_argmin_residual(&m);
        out.l1inf_argmin_lower.push(argmin.lower);
        out.l1inf_argmin_upper.push(argmin.upper);
        out.fro
            .push(relative_residual(&m, Centering::Mean, Norm::Frobenius));
    }
    Ok(out)
}

/// Mean and (population) standard deviation over sequences, per layer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MeanStd {
    /// Per-layer mean.
    pub mean: Vec<f64>,
    /// Per-layer standard deviation.
    pub std: Vec<f64>,
}

impl MeanStd {
    /// Statistics of `rows` (one per sequence, equal lengths).
    pub fn of(rows: &[Vec<f64>]) -> Self {
        let layers = rows.first().map_or(0, |r| r.len());
        let n = rows.len().max(1) as f64;
        let mean: Vec<f64> = (0..layers)
            .map(|l| rows.iter().map(|r| r[l]).sum::<f64>() / n)
            .collect();
        let std = (0..layers)
            .map(|l| (rows.iter().map(|r| (r[l] - mean[l]).powi(2)).sum::<f64>() / n).sqrt())
            .collect();
        Self { mean, std }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::residual::relative_residual;

    fn tiny(causal: bool, rope: bool) -> Net {
        Net::random(
            Arch {
                hidden: 16,
                n_head: 4,
                n_kv_head: 2,
                n_layer: 3,
                mlp: 24,
                rope_theta: rope.then_some(10_000.0),
                causal,
            },
            0.3,
            1e-5,
            7,
        )
        .unwrap()
    }

    fn input(t: usize, d: usize, seed: u64) -> Tensor {
        let mut rng = StdRng::seed_from_u64(seed);
        Tensor::from_vec(normal(&mut rng, t * d, 1.0), (t, d), &Device::Cpu).unwrap()
    }

    #[test]
    fn uniform_attention_maps_any_input_to_rank_one() -> Result<()> {
        // W_q = 0 makes every score 0: bidirectional softmax is uniform, A = 11ᵀ/n, and
        // A X W_v W_o has identical rows whatever X is.
        let mut net = tiny(false, false);
        net.layers[0].q = Linear::dense(Tensor::zeros((16, 16), DType::F32, &Device::Cpu)?)?;
        let x = input(10, 16, 1);
        let (y, probs) = net.attention(0, &x)?;
        let p = probs.flatten_all()?.to_vec1::<f32>()?;
        assert!(p.iter().all(|&v| (v - 0.1).abs() < 1e-6));
        let r = relative_residual(&Mat::from_tensor(&y)?, Centering::Mean, Norm::L1Inf);
        assert!(r < 1e-6, "residual {r}");
        assert!(relative_residual(&Mat::from_tensor(&x)?, Centering::Mean, Norm::L1Inf) > 0.5);
        Ok(())
    }

    #[test]
    fn rank_one_input_stays_rank_one_through_san_and_mlp() -> Result<()> {
        // A token-uniform X (no RoPE, no mask) gives identical rows through every variant.
        let net = tiny(false, false);
        let row = input(1, 16, 2);
        let x = row.repeat((6, 1))?;
        for v in Variant::ALL {
            let trace = net.forward(&x, v, false)?;
            let r = layer_residuals(&trace)?;
            assert!(r.l1inf_mean.iter().all(|&e| e < 1e-5), "{v:?}: {r:?}");
        }
        Ok(())
    }

    #[test]
    fn san_collapses_faster_than_skip_variants() -> Result<()> {
        let mut arch = tiny(false, false).arch;
        arch.n_layer = 6;
        let net = Net::random(arch, 0.3, 1e-5, 3)?;
        let x = input(12, 16, 4);
        let last = |v: Variant| -> Result<f64> {
            let r = layer_residuals(&net.forward(&x, v, false)?)?;
            Ok(*r.l1inf_mean.last().unwrap())
        };
        let san = last(Variant::San)?;
        let skip = last(Variant::SanSkip)?;
        assert!(san < 1e-2, "SAN residual {san}");
        assert!(skip > 10.0 * san, "skip {skip} vs SAN {san}");
        Ok(())
    }

    #[test]
    fn mean_std() {
        let s = MeanStd::of(&[vec![1.0, 0.0], vec![3.0, 0.0]]);
        assert_eq!(s.mean, vec![2.0, 0.0]);
        assert_eq!(s.std, vec![1.0, 0.0]);
    }
}
