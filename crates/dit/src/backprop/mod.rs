//! A hand-derived backward pass for training the adaLN-Zero DiT (Peebles & Xie 2023, §3.2 and
//! §4) on ε-prediction (DDPM eq. 14): the same model and loss as [`crate::DiT`] under candle's
//! autograd, written as a forward pass that saves what its backward reads, over buffers that are
//! allocated once and reused every step, with the batch split across threads (each worker runs
//! forward and backward on its samples; the gradients are summed). Every operation's backward
//! is stated in the file that implements it ([`ops`], [`attention`], [`block`], [`model`]).
//! The same forward serves sampling on its own ([`DitBackprop::predict_noise_on`]).
//!
//! Scope: the default design (adaLN-Zero, class labels, fixed Σ); the other designs of §3.2,
//! sequence conditions and learned Σ train under the general autograd ([`supports`] says
//! which). The gradients equal autograd's to float rounding (tests below).

mod attention;
mod block;
mod layout;
mod model;
mod ops;
mod predict;

pub use layout::ParamLayout;

use crate::config::{Conditioning, DitConfig, FREQUENCY_EMBEDDING_SIZE};
use crate::pos_embed::sincos_2d;
use crate::timestep_embedder::timestep_frequencies;
use anyhow::{bail, ensure, Result};
use candle_core::{Device, Tensor};
use model::{Geometry, Inputs, ModelParams, Target, Worker};
use std::sync::Mutex;

/// Whether [`DitBackprop`] trains `cfg`; the error names what it does not cover.
pub fn supports(cfg: &DitConfig) -> Result<()> {
    if cfg.conditioning != Conditioning::AdaLnZero {
        bail!(
            "the hand-written backward covers adaLN-Zero only, not {:?}",
            cfg.conditioning
        );
    }
    if cfg.learn_sigma {
        bail!("the hand-written backward covers fixed Σ only (no learned-range output)");
    }
    if cfg.cond_dim.is_some() {
        bail!("the hand-written backward covers class labels only, not sequence conditions");
    }
    ensure!(
        cfg.hidden_size % cfg.num_heads == 0 && cfg.input_size % cfg.patch_size == 0,
        "heads must divide the width and the patch the image"
    );
    Ok(())
}

/// One training step's inputs for the whole batch (`B` samples).
#[derive(Debug, Clone, Copy)]
pub struct TrainBatch<'a> {
    /// Noised images `x_t`, `[B, C, H, W]` flattened.
    pub x_t: &'a [f32],
    /// Timesteps, `[B]`.
    pub t: &'a [f32],
    /// Class labels `[B]`; the null class (`num_classes`) where the condition was dropped.
    pub labels: &'a [u32],
    /// The noise ε the model regresses, `[B, C, H, W]` flattened.
    pub target: &'a [f32],
}

/// The gradient of a step, with the layout that names its ranges.
#[derive(Debug, Clone, Copy)]
pub struct Gradients<'a> {
    /// Which range belongs to which weight.
    pub layout: &'a ParamLayout,
    /// `∂loss/∂weights`, flat.
    pub values: &'a [f32],
}

/// The training step of an adaLN-Zero DiT with its backward written out, and its forward alone.
pub struct DitBackprop {
    layout: ParamLayout,
    params: ModelParams,
    geometry: Geometry,
    depth: usize,
    pos: Vec<f32>,
    workers: Vec<Mutex<Worker>>,
    grads: Vec<f32>,
    /// Forward-only workers of [`DitBackprop::predict_noise_on`], one list per thread (one
    /// worker per piece size it has met).
    predictors: Vec<Mutex<Vec<Worker>>>,
}

impl DitBackprop {
    /// The step for `cfg` with its weights laid out as `layout` (the model's variables).
    pub fn new(cfg: &DitConfig, layout: ParamLayout) -> Result<Self> {
        supports(cfg)?;
        let geometry = Geometry::of(cfg);
        let params = ModelParams::find(&layout, &geometry, cfg.depth)?;
        let pos = sincos_2d(cfg.hidden_size, cfg.grid_size(), &Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self {
            grads: vec![0.0; layout.len()],
            layout,
            params,
            geometry,
            depth: cfg.depth,
            pos,
            workers: Vec::new(),
            predictors: Vec::new(),
        })
    }

    /// The flat layout weights and gradients use.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// Sizes the workers for a batch of `b` over `threads` (kept while the shape stays).
    fn ensure_workers(&mut self, b: usize, threads: usize) {
        let n = threads.clamp(1, b);
        let share = |i: usize| (i + 1) * b / n - i * b / n;
        let fits = self.workers.len() == n
            && self
                .workers
                .iter()
                .enumerate()
                .all(|(i, w)| w.lock().map(|w| w.samples == share(i)).unwrap_or(false));
        if !fits {
            self.workers = (0..n)
                .map(|i| {
                    Mutex::new(Worker::new(
                        &self.geometry,
                        self.depth,
                        share(i),
                        self.layout.len(),
                    ))
                })
                .collect();
        }
    }

    /// The batch's mean loss `mean (ε_θ − ε)²` and its gradient with respect to `weights`
    /// (both in [`DitBackprop::layout`]), on the kernels' global thread pool.
    pub fn loss_and_gradients(
        &mut self,
        weights: &[f32],
        batch: TrainBatch,
    ) -> Result<(f32, Gradients<'_>)> {
        self.loss_and_gradients_on(weights, batch, ferrite_kernels::pool::global())
    }

    /// [`DitBackprop::loss_and_gradients`] with the batch split over `pool`'s threads.
    pub fn loss_and_gradients_on(
        &mut self,
        weights: &[f32],
        batch: TrainBatch,
        pool: &ferrite_kernels::pool::Pool,
    ) -> Result<(f32, Gradients<'_>)> {
        let g = self.geometry;
        let b = self.check_inputs(weights, batch.x_t, batch.t, batch.labels)?;
        ensure!(
            batch.target.len() == b * g.pixels(),
            "a batch of {b} needs {b} targets of {} values",
            g.pixels()
        );
        let freq = timestep_features(batch.t)?;
        self.ensure_workers(b, pool.threads());
        let n = self.workers.len();
        let (px, f) = (g.pixels(), FREQUENCY_EMBEDDING_SIZE);
        let (params, pos, workers) = (&self.params, &self.pos, &self.workers);
        pool.run(n, &|i| {
            let (lo, hi) = (i * b / n, (i + 1) * b / n);
            let inputs = Inputs {
                x_t: &batch.x_t[lo * px..hi * px],
                freq: &freq[lo * f..hi * f],
                labels: &batch.labels[lo..hi],
                pos,
            };
            let target = Target {
                eps: &batch.target[lo * px..hi * px],
                loss_elements: b * px,
            };
            let mut w = workers[i].lock().expect("DiT backprop worker");
            w.run(params, &g, weights, &inputs, &target);
        });
        let mut locked: Vec<_> = self
            .workers
            .iter()
            .map(|w| w.lock().expect("DiT backprop worker"))
            .collect();
        let sse: f64 = locked.iter().map(|w| w.sse).sum();
        // Σ over workers into the first one's buffer, split over the pool by element ranges,
        // then that buffer is swapped out (the workers overwrite every gradient each step).
        let (first, rest) = locked.split_first_mut().expect("at least one worker");
        if !rest.is_empty() {
            let k = first.grads.len().div_ceil(pool.threads()).max(1);
            let pieces: Vec<Mutex<(usize, &mut [f32])>> = first
                .grads
                .chunks_mut(k)
                .enumerate()
                .map(|(i, c)| Mutex::new((i * k, c)))
                .collect();
            pool.run(pieces.len(), &|i| {
                let mut piece = pieces[i].lock().expect("gradient piece");
                let (at, out) = &mut *piece;
                for w in rest.iter() {
                    for (acc, v) in out.iter_mut().zip(&w.grads[*at..]) {
                        *acc += v;
                    }
                }
            });
        }
        std::mem::swap(&mut self.grads, &mut first.grads);
        drop(locked);
        let grads = Gradients {
            layout: &self.layout,
            values: &self.grads,
        };
        Ok(((sse / (b * px) as f64) as f32, grads))
    }

    /// The batch size of `x_t`, `t`, `labels`, checked against each other, the weights and the
    /// label table.
    fn check_inputs(
        &self,
        weights: &[f32],
        x_t: &[f32],
        t: &[f32],
        labels: &[u32],
    ) -> Result<usize> {
        let g = self.geometry;
        let b = t.len();
        ensure!(b > 0, "empty batch");
        ensure!(
            weights.len() == self.layout.len(),
            "{} weights for a layout of {}",
            weights.len(),
            self.layout.len()
        );
        ensure!(
            x_t.len() == b * g.pixels() && labels.len() == b,
            "a batch of {b} needs {b} labels and {b} images of {} values",
            g.pixels()
        );
        if let Some(&y) = labels.iter().find(|&&y| y as usize >= g.classes_with_null) {
            bail!(
                "label {y} is outside the {} rows of the label table",
                g.classes_with_null
            );
        }
        Ok(b)
    }
}

/// The sinusoidal features of the timesteps (`[B, 256]` flattened).
fn timestep_features(t: &[f32]) -> Result<Vec<f32>> {
    let t = Tensor::from_slice(t, t.len(), &Device::Cpu)?;
    Ok(timestep_frequencies(&t, FREQUENCY_EMBEDDING_SIZE, 10000.0)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests;
