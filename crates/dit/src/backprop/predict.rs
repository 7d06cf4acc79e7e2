//! The DiT's forward pass alone, for sampling: the training step's forward (no backward, no
//! gradient buffers) over pieces of the batch shared out across the pool, so a sampler's large
//! batch runs at the training step's row count, where the products are fastest.

use super::model::{Inputs, Worker};
use super::{timestep_features, DitBackprop};
use crate::config::FREQUENCY_EMBEDDING_SIZE;
use anyhow::Result;
use std::sync::Mutex;

/// Samples per piece of a forward-only batch: the row count of a training step's worker, where
/// the products run at full speed and the activations stay in cache.
const PREDICT_PIECE: usize = 32;

impl DitBackprop {
    /// `ε_θ(x_t, t, y)` of a batch (`[B, C, H, W]` flattened) through the forward pass alone,
    /// for sampling: the batch is cut into pieces of about 32 samples, shared out over `pool`.
    /// Labels are class ids, the null class for the unconditional half of guidance.
    pub fn predict_noise_on(
        &mut self,
        weights: &[f32],
        x_t: &[f32],
        t: &[f32],
        labels: &[u32],
        pool: &ferrite_kernels::pool::Pool,
    ) -> Result<Vec<f32>> {
        let g = self.geometry;
        let b = self.check_inputs(weights, x_t, t, labels)?;
        let freq = timestep_features(t)?;
        let (px, f) = (g.pixels(), FREQUENCY_EMBEDDING_SIZE);
        let pieces = b.div_ceil(PREDICT_PIECE);
        let bounds = |k: usize| (k * b / pieces, (k + 1) * b / pieces);
        let threads = pool.threads().clamp(1, pieces);
        if self.predictors.len() < threads {
            self.predictors
                .resize_with(threads, || Mutex::new(Vec::new()));
        }
        let mut eps = vec![0f32; b * px];
        let mut rest = eps.as_mut_slice();
        let mut outputs = Vec::with_capacity(pieces);
        for k in 0..pieces {
            let (lo, hi) = bounds(k);
            let (piece, tail) = rest.split_at_mut((hi - lo) * px);
            outputs.push(Mutex::new(piece));
            rest = tail;
        }
        let (params, pos, depth) = (&self.params, &self.pos, self.depth);
        let predictors = &self.predictors;
        pool.run(threads, &|i| {
            let mut cache = predictors[i].lock().expect("DiT forward worker");
            for k in (i..pieces).step_by(threads) {
                let (lo, hi) = bounds(k);
                let n = hi - lo;
                let at = match cache.iter().position(|w| w.samples == n) {
                    Some(at) => at,
                    None => {
                        cache.push(Worker::new(&g, depth, n, 0));
                        cache.len() - 1
                    }
                };
                let inputs = Inputs {
                    x_t: &x_t[lo * px..hi * px],
                    freq: &freq[lo * f..hi * f],
                    labels: &labels[lo..hi],
                    pos,
                };
                let mut out = outputs[k].lock().expect("DiT forward output");
                cache[at].predict(params, &g, weights, &inputs, &mut out);
            }
        });
        drop(outputs);
        Ok(eps)
    }
}
