//! Exponential moving average of the weights (Polyak averaging), as DiT (Peebles & Xie 2023,
//! §4: "EMA of DiT weights with a decay of 0.9999") samples from:
//! `θ_ema ← d θ_ema + (1 - d) θ`, with the warm-up `d_t = min(d, (1 + t) / (10 + t))` of
//! TensorFlow's `ExponentialMovingAverage(num_updates=t)`, so short runs are not dominated by
//! the initial weights.

use anyhow::{Context, Result};
use candle_core::{Tensor, Var};
use std::collections::HashMap;

/// The averaged copy of a set of named variables.
pub struct Ema {
    /// The target decay `d`.
    pub decay: f64,
    averages: Vec<(String, Var, Tensor)>,
}

impl Ema {
    /// Starts the average at the current weights.
    pub fn new(named_vars: Vec<(String, Var)>, decay: f64) -> Result<Self> {
        let mut named_vars = named_vars;
        named_vars.sort_by(|a, b| a.0.cmp(&b.0));
        let averages = named_vars
            .into_iter()
            .map(|(n, v)| {
                let copy = v.as_tensor().copy()?;
                Ok((n, v, copy))
            })
            .collect::<Result<_>>()?;
        Ok(Self { decay, averages })
    }

    /// The decay used at update number `t` (0-based).
    pub fn decay_at(&self, t: u64) -> f64 {
        self.decay.min((1.0 + t as f64) / (10.0 + t as f64))
    }

    /// Folds the current weights in, as update number `t`.
    pub fn update(&mut self, t: u64) -> Result<()> {
        let d = self.decay_at(t);
        for (_, var, avg) in &mut self.averages {
            // detach: the weights are a variable, so the result would otherwise record the
            // op and chain every past average (one copy of the weights per step).
            *avg = ((&*avg * d)? + (var.as_tensor().detach() * (1.0 - d))?)?.detach();
        }
        Ok(())
    }

    /// The averaged weights by name (what a `VarBuilder::from_tensors` for sampling takes).
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.averages
            .iter()
            .map(|(n, _, a)| (n.clone(), a.clone()))
            .collect()
    }

    /// Restores the averages from a checkpoint.
    pub fn load(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (name, _, avg) in &mut self.averages {
            let src = tensors
                .get(name.as_str())
                .with_context(|| format!("EMA state lacks {name}"))?;
            anyhow::ensure!(
                src.dims() == avg.dims(),
                "EMA {name} has shape {:?}, the model {:?}",
                src.dims(),
                avg.dims()
            );
            *avg = src.clone();
        }
        Ok(())
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
