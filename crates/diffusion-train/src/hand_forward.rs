//! The sampler's denoiser through `ferrite-dit`'s hand-written forward pass
//! ([`DitBackprop::predict_noise_on`]) instead of candle's: the same network and weights, the
//! batch cut into training-sized pieces over the kernel pool, and classifier-free guidance
//! (Ho & Salimans 2022, eq. 6) as DiT's `forward_with_cfg` does it on the ε channels:
//! `ε̃ = ε(∅) + s (ε(y) − ε(∅))`, both halves in one doubled batch.

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use ferrite_dit::backprop::{supports, DitBackprop, ParamLayout};
use ferrite_dit::DitConfig;
use std::collections::HashMap;

/// A DiT's weights laid out flat for the hand-written forward.
pub struct HandForward {
    step: DitBackprop,
    weights: Vec<f32>,
    null_class: u32,
}

impl HandForward {
    /// The forward of `cfg` over the named weights `tensors` (a checkpoint's group); an error
    /// when the hand-written pass does not cover the design ([`supports`]).
    pub fn new(cfg: &DitConfig, tensors: &HashMap<String, Tensor>) -> Result<Self> {
        supports(cfg)?;
        let layout = ParamLayout::new(
            tensors
                .iter()
                .map(|(name, t)| (name.clone(), t.dims().to_vec()))
                .collect(),
        );
        let mut weights = Vec::with_capacity(layout.len());
        for (name, _, _) in layout.entries() {
            let t = tensors
                .get(name)
                .context("a layout name without its tensor")?;
            weights.extend(t.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(Self {
            step: DitBackprop::new(cfg, layout)?,
            weights,
            null_class: cfg.num_classes as u32,
        })
    }

    /// `ε_θ(x, t, y)` for the batch `x` (`[B, C, H, W]`) at timestep `t`, guided with scale `s`
    /// unless `s = 1`.
    pub fn predict(&mut self, x: &Tensor, t: usize, labels: &[u32], s: f64) -> Result<Tensor> {
        let b = x.dim(0)?;
        ensure!(labels.len() == b, "{b} images but {} labels", labels.len());
        let pool = ferrite_kernels::pool::global();
        let mut pixels = x.flatten_all()?.to_vec1::<f32>()?;
        let eps = if s == 1.0 {
            let times = vec![t as f32; b];
            self.step
                .predict_noise_on(&self.weights, &pixels, &times, labels, pool)?
        } else {
            pixels.extend_from_within(..);
            let times = vec![t as f32; 2 * b];
            let mut both = labels.to_vec();
            both.extend(std::iter::repeat(self.null_class).take(b));
            let out = self
                .step
                .predict_noise_on(&self.weights, &pixels, &times, &both, pool)?;
            let (cond, uncond) = out.split_at(out.len() / 2);
            let s = s as f32;
            cond.iter()
                .zip(uncond)
                .map(|(&c, &u)| u + (c - u) * s)
                .collect()
        };
        Ok(Tensor::from_vec(eps, x.dims(), &Device::Cpu)?)
    }
}
