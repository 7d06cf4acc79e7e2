//! The Diffusion Transformer (Peebles & Xie 2023, §3.2, Figure 3; reference `DiT` in models.py):
//! patchify + fixed sin-cos positions, timestep and condition embeddings, `N` DiT blocks of the
//! configured design, the final (adaptive) layer, unpatchify. Classifier-free guidance (Ho &
//! Salimans 2022, eq. 6 as DiT §4 writes it: `ε̂ = ε(x, ∅) + s (ε(x, c) − ε(x, ∅))`) in
//! [`DiT::forward_with_cfg`].

use crate::block::{ConditionEmbedding, DitBlock};
use crate::config::{Conditioning, DitConfig};
use crate::final_layer::FinalLayer;
use crate::label_embedder::LabelEmbedder;
use crate::patchify::{unpatchify, PatchEmbed};
use crate::pos_embed::sincos_2d;
use crate::sequence_embedder::SequenceEmbedder;
use crate::timestep_embedder::TimestepEmbedder;
use candle_core::{bail, Result, Tensor};
use candle_nn::VarBuilder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Mutex;

/// What the model is conditioned on.
#[derive(Debug, Clone, Copy)]
pub enum Condition<'a> {
    /// Class labels, u32 `[B]`.
    Labels(&'a Tensor),
    /// A sequence of condition vectors, `[B, L, cond_dim]` (needs `cond_dim` in the config).
    Sequence(&'a Tensor),
}

/// Which output channels classifier-free guidance extrapolates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuidedChannels {
    /// The first three channels, as the reference's `forward_with_cfg` does "for exact
    /// reproducibility" (on its 4-channel latents); clipped to the output channels.
    Reference,
    /// The first `in_channels` (ε) channels, the standard approach the reference's comment names
    /// (and what diffusers' DiT pipeline does); the learned-Σ channels are the conditional ones.
    Eps,
}

/// A DiT with any of the four block designs.
#[derive(Debug)]
pub struct DiT {
    cfg: DitConfig,
    x_embedder: PatchEmbed,
    pos_embed: Tensor,
    t_embedder: TimestepEmbedder,
    y_embedder: LabelEmbedder,
    seq_embedder: Option<SequenceEmbedder>,
    blocks: Vec<DitBlock>,
    final_layer: FinalLayer,
    dropout_rng: Mutex<StdRng>,
}

impl DiT {
    /// Builds the model, its variables read or created through `vb` with the reference's init
    /// hints (use [`crate::seeded_var_builder`] for a trainable, seeded model, or a safetensors
    /// `VarBuilder` to load weights). Tensor names follow the reference's `state_dict`.
    pub fn new(cfg: &DitConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.hidden_size;
        let x_embedder = PatchEmbed::new(&vb.pp("x_embedder"), cfg.in_channels, d, cfg.patch_size)?;
        let pos_embed = sincos_2d(d, cfg.grid_size(), vb.device())?
            .to_dtype(vb.dtype())?
            .unsqueeze(0)?;
        let t_embedder = TimestepEmbedder::new(&vb.pp("t_embedder"), d)?;
        let y_embedder = LabelEmbedder::new(
            &vb.pp("y_embedder"),
            cfg.num_classes,
            d,
            cfg.has_null_class(),
        )?;
        let seq_embedder = match cfg.cond_dim {
            Some(cond_dim) => Some(SequenceEmbedder::new(&vb.pp("seq_embedder"), cond_dim, d)?),
            None => None,
        };
        let blocks = (0..cfg.depth)
            .map(|i| DitBlock::new(&vb.pp("blocks").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let final_layer = FinalLayer::new(&vb.pp("final_layer"), cfg)?;
        Ok(Self {
            cfg: cfg.clone(),
            x_embedder,
            pos_embed,
            t_embedder,
            y_embedder,
            seq_embedder,
            blocks,
            final_layer,
            dropout_rng: Mutex::new(StdRng::seed_from_u64(0)),
        })
    }

    /// The same model with its label-dropout generator reseeded (default seed 0).
    pub fn with_dropout_seed(self, seed: u64) -> Self {
        *self.dropout_rng.lock().expect("dropout rng poisoned") = StdRng::seed_from_u64(seed);
        self
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &DitConfig {
        &self.cfg
    }

    /// Noise prediction for `x` (`[B, C, H, W]`) at timesteps `t` (`[B]`) under condition `c`:
    /// `[B, C, H, W]`, or `[B, 2C, H, W]` with learned Σ. With `train`, each condition is replaced
    /// by the null condition with probability `class_dropout_prob` (reference `token_drop`).
    pub fn forward(&self, x: &Tensor, t: &Tensor, c: Condition, train: bool) -> Result<Tensor> {
        let drop = if train && self.cfg.has_null_class() {
            let batch = x.dim(0)?;
            let mut rng = self.dropout_rng.lock().expect("dropout rng poisoned");
            Some(
                (0..batch)
                    .map(|_| rng.gen::<f64>() < self.cfg.class_dropout_prob)
                    .collect::<Vec<_>>(),
            )
        } else {
            None
        };
        self.forward_with_drop(x, t, c, drop.as_deref())
    }

    /// [`DiT::forward`] with an explicit null-condition mask (reference `force_drop_ids`):
    /// `drop[i]` replaces sample `i`'s condition by the null class / null token.
    pub fn forward_with_drop(
        &self,
        x: &Tensor,
        t: &Tensor,
        c: Condition,
        drop: Option<&[bool]>,
    ) -> Result<Tensor> {
        let (b, channels, h, w) = x.dims4()?;
        let size = self.cfg.input_size;
        if channels != self.cfg.in_channels || h != size || w != size {
            bail!(
                "DiT expects [B, {}, {size}, {size}] inputs, got {:?}",
                self.cfg.in_channels,
                x.dims()
            )
        }
        if t.dims() != [b] {
            bail!(
                "DiT expects one timestep per sample ([{b}]), got {:?}",
                t.dims()
            )
        }
        let tokens = self.x_embedder.forward(x)?.broadcast_add(&self.pos_embed)?;
        let cond = self.embed_condition(t, c, b, drop)?;
        let num_patches = tokens.dim(1)?;
        let mut hidden = match self.cfg.conditioning {
            Conditioning::InContext => Tensor::cat(&[&tokens, &cond.tokens], 1)?,
            _ => tokens,
        };
        for block in &self.blocks {
            hidden = block.forward(&hidden, &cond)?;
        }
        if self.cfg.conditioning == Conditioning::InContext {
            hidden = hidden.narrow(1, 0, num_patches)?;
        }
        let out = self.final_layer.forward(&hidden, &cond.vector)?;
        unpatchify(&out, self.cfg.patch_size, self.cfg.out_channels())
    }

    fn embed_condition(
        &self,
        t: &Tensor,
        c: Condition,
        batch: usize,
        drop: Option<&[bool]>,
    ) -> Result<ConditionEmbedding> {
        let t_emb = self.t_embedder.forward(t)?;
        let c_tokens = match c {
            Condition::Labels(y) => {
                if y.dims() != [batch] {
                    bail!(
                        "DiT expects one label per sample ([{batch}]), got {:?}",
                        y.dims()
                    )
                }
                self.y_embedder.forward(y, drop)?.unsqueeze(1)?
            }
            Condition::Sequence(s) => {
                let Some(embedder) = &self.seq_embedder else {
                    bail!("this DiT was built without cond_dim: it takes labels, not sequences")
                };
                let (sb, _, sd) = s.dims3()?;
                if sb != batch || Some(sd) != self.cfg.cond_dim {
                    bail!(
                        "DiT expects sequence conditions [{batch}, L, {}], got {:?}",
                        self.cfg.cond_dim.unwrap_or(0),
                        s.dims()
                    )
                }
                embedder.forward(s, drop)?
            }
        };
        Ok(ConditionEmbedding {
            vector: (&t_emb + c_tokens.mean(1)?)?,
            tokens: Tensor::cat(&[&t_emb.unsqueeze(1)?, &c_tokens], 1)?,
        })
    }

    /// Classifier-free guidance on class labels: `x` (`[B, C, H, W]`), `t` (`[B]`) and labels `y`
    /// (`[B]`) are run once conditionally and once with the null class in one batch of `2B`; the
    /// guided channels become `ε_∅ + s (ε_y − ε_∅)`, the rest are the conditional output. Returns
    /// `[B, out_channels, H, W]`. Guides the first three channels, as the reference does (see
    /// [`GuidedChannels`]; [`DiT::forward_guided`] chooses). Unlike the reference, `x` holds each
    /// sample once instead of the duplicated `2B` batch.
    pub fn forward_with_cfg(
        &self,
        x: &Tensor,
        t: &Tensor,
        y: &Tensor,
        cfg_scale: f64,
    ) -> Result<Tensor> {
        self.forward_guided(
            x,
            t,
            Condition::Labels(y),
            cfg_scale,
            GuidedChannels::Reference,
        )
    }

    /// Classifier-free guidance for any condition (labels or sequences, the latter against the
    /// learned null token) on the chosen channels.
    pub fn forward_guided(
        &self,
        x: &Tensor,
        t: &Tensor,
        c: Condition,
        cfg_scale: f64,
        guided: GuidedChannels,
    ) -> Result<Tensor> {
        if !self.cfg.has_null_class() {
            bail!("classifier-free guidance needs a null condition: this DiT has class_dropout_prob = 0")
        }
        let b = x.dim(0)?;
        let x2 = Tensor::cat(&[x, x], 0)?;
        let t2 = Tensor::cat(&[t, t], 0)?;
        let doubled;
        let c2 = match c {
            Condition::Labels(y) => {
                doubled = Tensor::cat(&[y, y], 0)?;
                Condition::Labels(&doubled)
            }
            Condition::Sequence(s) => {
                doubled = Tensor::cat(&[s, s], 0)?;
                Condition::Sequence(&doubled)
            }
        };
        let drop: Vec<bool> = (0..2 * b).map(|i| i >= b).collect();
        let out = self.forward_with_drop(&x2, &t2, c2, Some(&drop))?;
        let out_channels = self.cfg.out_channels();
        let g = match guided {
            GuidedChannels::Reference => 3.min(out_channels),
            GuidedChannels::Eps => self.cfg.in_channels,
        };
        let cond = out.narrow(0, 0, b)?;
        let uncond = out.narrow(0, b, b)?;
        let cond_eps = cond.narrow(1, 0, g)?;
        let uncond_eps = uncond.narrow(1, 0, g)?;
        let guided_eps = (&uncond_eps + ((&cond_eps - &uncond_eps)? * cfg_scale)?)?;
        if g == out_channels {
            return Ok(guided_eps);
        }
        Tensor::cat(&[&guided_eps, &cond.narrow(1, g, out_channels - g)?], 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::seeded_var_builder;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    fn tiny(conditioning: Conditioning, learn_sigma: bool) -> DitConfig {
        crate::testing::tiny_config(conditioning, learn_sigma, Some(6))
    }

    fn random_dit(cfg: &DitConfig, seed: u64) -> (DiT, VarMap) {
        crate::testing::random_dit(cfg, seed)
    }

    fn inputs(b: usize, cfg: &DitConfig) -> (Tensor, Tensor, Tensor, Tensor) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (b, cfg.in_channels, 8, 8), &dev).unwrap();
        let t = Tensor::new(&[3f32, 999.0, 250.5, 0.0][..b], &dev).unwrap();
        let y = Tensor::new(&[0u32, 2, 1, 2][..b], &dev).unwrap();
        let s = Tensor::randn(0f32, 1., (b, 5, 6), &dev).unwrap();
        (x, t, y, s)
    }

    /// Max abs difference relative to the larger magnitude of `b` (at least 1).
    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let s: f32 = b.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        abs_diff(a, b) / s.max(1.0)
    }

    fn abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn shapes_for_every_design_condition_and_sigma() {
        for design in Conditioning::ALL {
            for learn_sigma in [false, true] {
                let cfg = tiny(design, learn_sigma);
                let (dit, vm) = random_dit(&cfg, 1);
                let (x, t, y, s) = inputs(3, &cfg);
                let out_c = if learn_sigma { 4 } else { 2 };
                for c in [Condition::Labels(&y), Condition::Sequence(&s)] {
                    let out = dit.forward(&x, &t, c, true).unwrap();
                    // in-context: the two extra tokens are gone, or unpatchify would refuse.
                    assert_eq!(
                        out.dims(),
                        &[3, out_c, 8, 8],
                        "{design} sigma={learn_sigma}"
                    );
                    let g = dit
                        .forward_guided(&x, &t, c, 4.0, GuidedChannels::Eps)
                        .unwrap();
                    assert_eq!(g.dims(), &[3, out_c, 8, 8]);
                }
                assert_eq!(
                    vm.all_vars().iter().map(|v| v.elem_count()).sum::<usize>(),
                    cfg.params()
                );
            }
        }
    }

    #[test]
    fn adaln_zero_blocks_start_as_identity_and_output_zero() {
        let cfg = tiny(Conditioning::AdaLnZero, true);
        let vm = VarMap::new();
        let dit = DiT::new(&cfg, seeded_var_builder(&vm, 3, DType::F32, &Device::Cpu)).unwrap();
        let (x, t, y, _) = inputs(4, &cfg);
        let tokens = Tensor::randn(0f32, 1., (4, 16, 16), &Device::Cpu).unwrap();
        let cond = dit
            .embed_condition(&t, Condition::Labels(&y), 4, None)
            .unwrap();
        assert!(
            cond.vector
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
        for block in &dit.blocks {
            assert_eq!(
                abs_diff(&block.forward(&tokens, &cond).unwrap(), &tokens),
                0.0
            );
        }
        let out = dit.forward(&x, &t, Condition::Labels(&y), false).unwrap();
        assert_eq!(
            out.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        // The non-zero designs are not the identity at init.
        let cfg = tiny(Conditioning::AdaLn, true);
        let dit = DiT::new(
            &cfg,
            seeded_var_builder(&VarMap::new(), 3, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let cond = dit
            .embed_condition(&t, Condition::Labels(&y), 4, None)
            .unwrap();
        assert!(max_diff(&dit.blocks[0].forward(&tokens, &cond).unwrap(), &tokens) > 1e-3);
    }

    #[test]
    fn guidance_scale_one_is_conditional_and_zero_unconditional() {
        for design in Conditioning::ALL {
            let cfg = tiny(design, true);
            let (dit, _) = random_dit(&cfg, 5);
            let (x, t, y, _) = inputs(4, &cfg);
            let cond = dit.forward(&x, &t, Condition::Labels(&y), false).unwrap();
            let uncond = dit
                .forward_with_drop(&x, &t, Condition::Labels(&y), Some(&[true; 4]))
                .unwrap();
            assert!(
                max_diff(&cond, &uncond) > 1e-3,
                "{design}: the label changes nothing"
            );
            let one = dit.forward_with_cfg(&x, &t, &y, 1.0).unwrap();
            assert!(max_diff(&one, &cond) < 1e-5, "{design}");
            let zero = dit
                .forward_guided(&x, &t, Condition::Labels(&y), 0.0, GuidedChannels::Eps)
                .unwrap();
            assert!(
                max_diff(
                    &zero.narrow(1, 0, 2).unwrap(),
                    &uncond.narrow(1, 0, 2).unwrap()
                ) < 1e-5
            );
            assert!(
                max_diff(
                    &zero.narrow(1, 2, 2).unwrap(),
                    &cond.narrow(1, 2, 2).unwrap()
                ) < 1e-5
            );
            // Reference channels: 3 of the 4 outputs guided, the 4th conditional.
            let four = dit.forward_with_cfg(&x, &t, &y, 4.0).unwrap();
            let expect = (&uncond + ((&cond - &uncond).unwrap() * 4.0).unwrap()).unwrap();
            assert!(
                max_diff(
                    &four.narrow(1, 0, 3).unwrap(),
                    &expect.narrow(1, 0, 3).unwrap()
                ) < 1e-4
            );
            assert!(
                max_diff(
                    &four.narrow(1, 3, 1).unwrap(),
                    &cond.narrow(1, 3, 1).unwrap()
                ) < 1e-5
            );
        }
    }

    #[test]
    fn label_dropout_is_seeded_and_sometimes_drops() {
        let cfg = tiny(Conditioning::AdaLnZero, false);
        let (dit, _) = random_dit(&cfg, 2);
        let dit = dit.with_dropout_seed(11);
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (32, 2, 8, 8), &dev).unwrap();
        let t = Tensor::full(10f32, 32, &dev).unwrap();
        let y = Tensor::zeros(32, DType::U32, &dev).unwrap();
        let eval = dit.forward(&x, &t, Condition::Labels(&y), false).unwrap();
        let train = dit.forward(&x, &t, Condition::Labels(&y), true).unwrap();
        let per_sample = (&eval - &train)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_from(1)
            .unwrap()
            .max(1)
            .unwrap();
        let dropped = per_sample
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .filter(|&&d| d > 0.0)
            .count();
        assert!(
            (4..=28).contains(&dropped),
            "{dropped} of 32 dropped at p = 0.5"
        );
    }

    #[test]
    fn gradients_reach_the_weights() {
        let cfg = tiny(Conditioning::AdaLnZero, true);
        let vm = VarMap::new();
        let dit = DiT::new(&cfg, seeded_var_builder(&vm, 0, DType::F32, &Device::Cpu)).unwrap();
        let (x, t, y, _) = inputs(2, &cfg);
        let loss = dit
            .forward(&x, &t, Condition::Labels(&y), true)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap();
        let loss = (loss
            - dit
                .forward(&x, &t, Condition::Labels(&y), false)
                .unwrap()
                .sum_all()
                .unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        let data = vm.data().lock().unwrap();
        let w: &Var = &data["final_layer.linear.weight"];
        let g = grads
            .get(w.as_tensor())
            .expect("no gradient for the final layer");
        assert!(
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        let cfg = tiny(Conditioning::CrossAttention, false);
        let (dit, _) = random_dit(&cfg, 0);
        let (x, t, y, _) = inputs(2, &cfg);
        let dev = Device::Cpu;
        assert!(dit
            .forward(
                &x.narrow(2, 0, 4).unwrap(),
                &t,
                Condition::Labels(&y),
                false
            )
            .is_err());
        assert!(dit
            .forward(
                &x,
                &t.narrow(0, 0, 1).unwrap(),
                Condition::Labels(&y),
                false
            )
            .is_err());
        let bad = Tensor::new(&[0u32, 3], &dev).unwrap();
        assert!(dit.forward(&x, &t, Condition::Labels(&bad), false).is_err());
        let wrong_width = Tensor::zeros((2, 3, 5), DType::F32, &dev).unwrap();
        assert!(dit
            .forward(&x, &t, Condition::Sequence(&wrong_width), false)
            .is_err());
        let mut no_null = cfg.clone();
        no_null.class_dropout_prob = 0.0;
        let (dit, _) = random_dit(&no_null, 0);
        assert!(dit.forward_with_cfg(&x, &t, &y, 2.0).is_err());
    }
}
