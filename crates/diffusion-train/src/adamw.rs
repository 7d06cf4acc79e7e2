//! AdamW: Adam (Kingma & Ba 2015, Algorithm 1) with decoupled weight decay (Loshchilov & Hutter
//! 2019, "Decoupled Weight Decay Regularization", Algorithm 2, line 12):
//!
//! ```text
//! m_t = β1 m_{t-1} + (1 - β1) g_t          v_t = β2 v_{t-1} + (1 - β2) g_t²
//! θ_t = θ_{t-1} (1 - η λ) - η m̂_t / (sqrt(v̂_t) + ε),   m̂ = m / (1 - β1^t),  v̂ = v / (1 - β2^t)
//! ```
//!
//! The same update as `candle_nn::AdamW` (whose moments are private), written out so the
//! moments and step count can be checkpointed and a resumed run continues exactly. The moments
//! of all variables are two flat vectors ([`FlatVars`]), updated in one pass split over the
//! kernels' pool.

use crate::flat_vars::{piece_len, run_pieces, FlatVars};
use anyhow::{ensure, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use std::collections::HashMap;

/// AdamW hyper-parameters (the names of `candle_nn::ParamsAdamW`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWParams {
    /// Learning rate η.
    pub lr: f64,
    /// First-moment decay β1.
    pub beta1: f64,
    /// Second-moment decay β2.
    pub beta2: f64,
    /// ε added to sqrt(v̂).
    pub eps: f64,
    /// Decoupled weight decay λ.
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    /// DiT's choice (Peebles & Xie 2023, §4): lr 1e-4, β = (0.9, 0.999), no weight decay.
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// The update of one stretch of weights `w` with gradient `g` and moments `m`, `v`: the f32
/// operations of the tensor expression in the same order (so the same bits as before).
fn update(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: &Coefficients) {
    for (((w, m), v), &g) in w.iter_mut().zip(m).zip(v).zip(g) {
        *m = *m * c.b1 + g * c.c1;
        *v = *v * c.b2 + g * g * c.c2;
        let update = *m * c.bias1 / ((*v * c.bias2).sqrt() + c.eps);
        *w = *w * c.decay - update * c.lr;
    }
}

/// The f32 constants of one step.
struct Coefficients {
    b1: f32,
    c1: f32,
    b2: f32,
    c2: f32,
    bias1: f32,
    bias2: f32,
    eps: f32,
    lr: f32,
    decay: f32,
}

/// AdamW over named f32 variables (sorted by name, so the state is laid out the same every run).
pub struct AdamW {
    vars: FlatVars,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Steps taken, `t` in the bias corrections.
    pub t: u64,
    /// Hyper-parameters; `lr` may be changed between steps (warm-up).
    pub params: AdamWParams,
}

impl AdamW {
    /// Zero moments for every variable.
    pub fn new(named_vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        let vars = FlatVars::new(named_vars)?;
        let n = vars.len();
        Ok(Self {
            vars,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
            params,
        })
    }

    /// `t ← t + 1` and this step's constants (bias corrections `1/(1 − β^t)`).
    fn next_step(&mut self) -> Coefficients {
        self.t += 1;
        let p = self.params;
        let bias1 = 1.0 / (1.0 - p.beta1.powi(self.t as i32));
        let bias2 = 1.0 / (1.0 - p.beta2.powi(self.t as i32));
        Coefficients {
            b1: p.beta1 as f32,
            c1: (1.0 - p.beta1) as f32,
            b2: p.beta2 as f32,
            c2: (1.0 - p.beta2) as f32,
            bias1: bias1 as f32,
            bias2: bias2 as f32,
            eps: p.eps as f32,
            lr: p.lr as f32,
            decay: (1.0 - p.lr * p.weight_decay) as f32,
        }
    }

    /// One update of `weights` (all variables end to end, in name order) from `grads` in the
    /// same layout, in place; the variables themselves are not touched (the caller writes them).
    pub fn step_flat(&mut self, weights: &mut [f32], grads: &[f32]) -> Result<()> {
        let n = self.vars.len();
        ensure!(
            weights.len() == n && grads.len() == n,
            "{} weights and {} gradients for {n} optimizer slots",
            weights.len(),
            grads.len()
        );
        let c = self.next_step();
        let k = piece_len(n);
        let pieces = weights
            .chunks_mut(k)
            .zip(grads.chunks(k))
            .zip(self.m.chunks_mut(k))
            .zip(self.v.chunks_mut(k))
            .collect();
        run_pieces(pieces, &|(((w, g), m), v)| update(w, g, m, v, &c));
        Ok(())
    }

    /// One update from `grads`; variables without a gradient are left as they are.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = self.next_step();
        for (_, var, range) in self.vars.slots() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            let mut w = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            update(
                &mut w,
                &g,
                &mut self.m[range.clone()],
                &mut self.v[range],
                &c,
            );
            var.set(&Tensor::from_vec(w, var.shape(), var.device())?)?;
        }
        Ok(())
    }

    /// The moments as `m.<name>` / `v.<name>` tensors, for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = self.vars.tensors(&self.m, "m.");
        out.extend(self.vars.tensors(&self.v, "v."));
        out
    }

    /// Restores the moments written by [`AdamW::state_tensors`] and the step count.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, t: u64) -> Result<()> {
        self.vars
            .load(tensors, "m.", "optimizer state", &mut self.m)?;
        self.vars
            .load(tensors, "v.", "optimizer state", &mut self.v)?;
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::Optimizer;

    #[test]
    fn matches_candle_adamw() {
        let dev = Device::Cpu;
        let init = Tensor::new(&[1.0f32, -2.0, 0.5], &dev).unwrap();
        let params = AdamWParams {
            lr: 0.1,
            weight_decay: 0.01,
            ..Default::default()
        };
        let ours_var = Var::from_tensor(&init).unwrap();
        let theirs_var = Var::from_tensor(&init).unwrap();
        let mut ours = AdamW::new(vec![("w".into(), ours_var.clone())], params).unwrap();
        let mut theirs = candle_nn::AdamW::new(
            vec![theirs_var.clone()],
            candle_nn::ParamsAdamW {
                lr: params.lr,
                beta1: params.beta1,
                beta2: params.beta2,
                eps: params.eps,
                weight_decay: params.weight_decay,
            },
        )
        .unwrap();
        for _ in 0..5 {
            let l1 = ours_var.as_tensor().sqr().unwrap().sum_all().unwrap();
            ours.step(&l1.backward().unwrap()).unwrap();
            let l2 = theirs_var.as_tensor().sqr().unwrap().sum_all().unwrap();
            theirs.backward_step(&l2).unwrap();
        }
        let a = ours_var.as_tensor().to_vec1::<f32>().unwrap();
        let b = theirs_var.as_tensor().to_vec1::<f32>().unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
        assert!(a[0].abs() < 1.0, "moved toward the minimum: {a:?}");
    }
}
