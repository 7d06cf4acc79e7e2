//! AdamW: Adam (Kingma & Ba 2015, Algorithm 1) with decoupled weight decay (Loshchilov & Hutter
//! 2019, "Decoupled Weight Decay Regularization", Algorithm 2, line 12):
//!
//! ```text
//! m_t = β1 m_{t-1} + (1 - β1) g_t          v_t = β2 v_{t-1} + (1 - β2) g_t²
//! θ_t = θ_{t-1} (1 - η λ) - η m̂_t / (sqrt(v̂_t) + ε),   m̂ = m / (1 - β1^t),  v̂ = v / (1 - β2^t)
//! ```
//!
//! The same update as `candle_nn::AdamW` (whose moments are private), written out so the
//! moments and step count can be checkpointed and a resumed run continues exactly.

use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use ferrite_dit::backprop::ParamLayout;
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

/// One named parameter with its two moments.
struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

impl Slot {
    /// The update of [`AdamW::step`] for an f32 variable in one pass over its elements, with the
    /// same f32 operations in the same order as the tensor expression (so the same bits), but
    /// three tensors allocated instead of about a dozen.
    fn step_f32(&mut self, g: &[f32], p: &AdamWParams, bias1: f64, bias2: f64) -> Result<()> {
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let (mut m, mut v) = (flat(&self.m)?, flat(&self.v)?);
        let mut w = flat(self.var.as_tensor())?;
        anyhow::ensure!(
            g.len() == w.len() && m.len() == w.len() && v.len() == w.len(),
            "gradient or moments of {} do not match its {} elements",
            self.name,
            w.len()
        );
        let (b1, c1) = (p.beta1 as f32, (1.0 - p.beta1) as f32);
        let (b2, c2) = (p.beta2 as f32, (1.0 - p.beta2) as f32);
        let (bias1, bias2, eps, lr) = (bias1 as f32, bias2 as f32, p.eps as f32, p.lr as f32);
        let decay = (1.0 - p.lr * p.weight_decay) as f32;
        for (((w, m), v), &g) in w.iter_mut().zip(&mut m).zip(&mut v).zip(g) {
            *m = *m * b1 + g * c1;
            *v = *v * b2 + g * g * c2;
            let update = *m * bias1 / ((*v * bias2).sqrt() + eps);
            *w = *w * decay - update * lr;
        }
        let shape = self.var.shape().clone();
        let dev = self.var.device().clone();
        self.m = Tensor::from_vec(m, shape.clone(), &dev)?;
        self.v = Tensor::from_vec(v, shape.clone(), &dev)?;
        self.var.set(&Tensor::from_vec(w, shape, &dev)?)?;
        Ok(())
    }
}

/// AdamW over named variables (sorted by name, so the state is laid out the same every run).
pub struct AdamW {
    slots: Vec<Slot>,
    /// Steps taken, `t` in the bias corrections.
    pub t: u64,
    /// Hyper-parameters; `lr` may be changed between steps (warm-up).
    pub params: AdamWParams,
}

impl AdamW {
    /// Zero moments for every variable.
    pub fn new(named_vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        let mut named_vars = named_vars;
        named_vars.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = named_vars
            .into_iter()
            .map(|(name, var)| {
                let z = var.zeros_like()?;
                Ok(Slot {
                    name,
                    m: z.clone(),
                    v: z,
                    var,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            slots,
            t: 0,
            params,
        })
    }

    /// `t ← t + 1` and the bias corrections `1/(1 − β1^t)`, `1/(1 − β2^t)`.
    fn next_bias_corrections(&mut self) -> (f64, f64) {
        self.t += 1;
        let p = self.params;
        let bias1 = 1.0 / (1.0 - p.beta1.powi(self.t as i32));
        let bias2 = 1.0 / (1.0 - p.beta2.powi(self.t as i32));
        (bias1, bias2)
    }

    /// One update from flat f32 gradients laid out as `layout` (every variable must be f32
    /// and named there).
    pub fn step_flat(&mut self, layout: &ParamLayout, grads: &[f32]) -> Result<()> {
        anyhow::ensure!(
            grads.len() == layout.len(),
            "{} gradients for a layout of {}",
            grads.len(),
            layout.len()
        );
        let ranges: HashMap<&str, std::ops::Range<usize>> = layout
            .entries()
            .map(|(name, _, range)| (name, range))
            .collect();
        let (bias1, bias2) = self.next_bias_corrections();
        let p = self.params;
        for s in &mut self.slots {
            let range = ranges
                .get(s.name.as_str())
                .with_context(|| format!("no gradient for {}", s.name))?;
            anyhow::ensure!(s.var.dtype() == DType::F32, "{} is not f32", s.name);
            s.step_f32(&grads[range.clone()], &p, bias1, bias2)?;
        }
        Ok(())
    }

    /// One update from `grads`; variables without a gradient are left as they are.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let (bias1, bias2) = self.next_bias_corrections();
        let p = self.params;
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            if s.var.dtype() == DType::F32 {
                s.step_f32(&g.flatten_all()?.to_vec1::<f32>()?, &p, bias1, bias2)?;
                continue;
            }
            // detached: moments must not record ops (that would chain every past step)
            let g = g.detach();
            s.m = ((&s.m * p.beta1)? + (&g * (1.0 - p.beta1))?)?.detach();
            s.v = ((&s.v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?.detach();
            let m_hat = (&s.m * bias1)?;
            let v_hat = (&s.v * bias2)?;
            let update = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
            let decayed = (s.var.as_tensor().detach() * (1.0 - p.lr * p.weight_decay))?;
            s.var.set(&(decayed - (update * p.lr)?)?)?;
        }
        Ok(())
    }

    /// The moments as `m.<name>` / `v.<name>` tensors, for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.slots
            .iter()
            .flat_map(|s| {
                [
                    (format!("m.{}", s.name), s.m.clone()),
                    (format!("v.{}", s.name), s.v.clone()),
                ]
            })
            .collect()
    }

    /// Restores the moments written by [`AdamW::state_tensors`] and the step count.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, t: u64) -> Result<()> {
        for s in &mut self.slots {
            for (key, dst) in [("m", &mut s.m), ("v", &mut s.v)] {
                let name = format!("{key}.{}", s.name);
                let src = tensors
                    .get(&name)
                    .with_context(|| format!("optimizer state lacks {name}"))?;
                anyhow::ensure!(
                    src.dims() == dst.dims(),
                    "optimizer state {name} has shape {:?}, the model {:?}",
                    src.dims(),
                    dst.dims()
                );
                *dst = src.clone();
            }
        }
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
