//! Exponential moving average of the weights (Polyak averaging), as DiT (Peebles & Xie 2023,
//! §4: "EMA of DiT weights with a decay of 0.9999") samples from:
//! `θ_ema ← d θ_ema + (1 - d) θ`, with the warm-up `d_t = min(d, (1 + t) / (10 + t))` of
//! TensorFlow's `ExponentialMovingAverage(num_updates=t)`, so short runs are not dominated by
//! the initial weights.

use crate::flat_vars::{piece_len, run_pieces, FlatVars};
use anyhow::Result;
use candle_core::{Tensor, Var};
use std::collections::HashMap;

/// The averaged copy of a set of named f32 variables, one flat vector in name order.
pub struct Ema {
    /// Target decay `d`.
    pub decay: f64,
    vars: FlatVars,
    average: Vec<f32>,
}

impl Ema {
    /// Starts the average at the variables' current values.
    pub fn new(named_vars: Vec<(String, Var)>, decay: f64) -> Result<Self> {
        let vars = FlatVars::new(named_vars)?;
        let average = vars.read()?;
        Ok(Self {
            decay,
            vars,
            average,
        })
    }

    /// The decay used at update `t` (0-based).
    pub fn decay_at(&self, t: u64) -> f64 {
        self.decay.min((1.0 + t as f64) / (10.0 + t as f64))
    }

    /// One update from the variables (update number `t`).
    pub fn update(&mut self, t: u64) -> Result<()> {
        let weights = self.vars.read()?;
        self.update_from(t, &weights)
    }

    /// One update from `weights`, the variables' values end to end in name order:
    /// `θ_ema ← d θ_ema + (1 − d) θ` in f32 (the tensor expression's operations).
    pub fn update_from(&mut self, t: u64, weights: &[f32]) -> Result<()> {
        anyhow::ensure!(
            weights.len() == self.average.len(),
            "{} weights for an average of {}",
            weights.len(),
            self.average.len()
        );
        let d = self.decay_at(t);
        let (keep, take) = (d as f32, (1.0 - d) as f32);
        let k = piece_len(weights.len());
        let pieces = self.average.chunks_mut(k).zip(weights.chunks(k)).collect();
        run_pieces(pieces, &|(avg, w)| {
            for (a, &w) in avg.iter_mut().zip(w) {
                *a = *a * keep + w * take;
            }
        });
        Ok(())
    }

    /// The averaged tensors by name.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.vars.tensors(&self.average, "").into_iter().collect()
    }

    /// Restores the average from tensors named like the variables.
    pub fn load(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.vars.load(tensors, "", "EMA state", &mut self.average)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn average_follows_the_closed_form() {
        let v = Var::new(&[0f32], &Device::Cpu).unwrap();
        let mut ema = Ema::new(vec![("w".into(), v.clone())], 0.5).unwrap();
        assert!((ema.decay_at(0) - 0.1).abs() < 1e-12);
        assert_eq!(ema.decay_at(1000), 0.5);
        v.set(&Tensor::new(&[1f32], &Device::Cpu).unwrap()).unwrap();
        ema.update(1000).unwrap();
        ema.update(1000).unwrap();
        let a = ema.tensors()["w"].to_vec1::<f32>().unwrap()[0];
        assert!((a - 0.75).abs() < 1e-6, "{a}");
    }
}
