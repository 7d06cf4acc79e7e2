//! The reference initialisation, reproducibly seeded.
//!
//! DiT's `initialize_weights` (reference models.py): Xavier-uniform weights and zero biases for every
//! linear layer (the patch embedding initialised as a linear layer of its flattened kernel), N(0,
//! 0.02) for the label table and the timestep MLP weights, zeros for the adaLN-Zero modulation and
//! the final linear layer. Each layer asks for its tensor with one of these [`Init`] hints through
//! the `VarBuilder`; [`seeded_var_builder`] answers the hints from a seeded generator so that two
//! runs with the same seed start from the same weights (candle's CPU generator cannot be seeded),
//! and records each new tensor as a trainable [`Var`] in the given [`VarMap`].

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Mutex;

/// Xavier (Glorot) uniform for a `fan_out x fan_in` weight: U(-a, a), `a = sqrt(6 / (fan_in +
/// fan_out))`, as `torch.nn.init.xavier_uniform_`.
pub fn xavier_uniform(fan_in: usize, fan_out: usize) -> Init {
    let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
    Init::Uniform { lo: -a, up: a }
}

/// N(0, 0.02), the reference's embedding initialisation.
pub const EMBEDDING_INIT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

/// A `VarBuilder` whose new variables are drawn from `StdRng::seed_from_u64(seed)` and stored in
/// `varmap` (variables already in `varmap` are returned as they are, so loading a checkpoint into
/// the map first and then building the model keeps the loaded values).
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    let backend = SeededVarMap {
        varmap: varmap.clone(),
        rng: Mutex::new(StdRng::seed_from_u64(seed)),
    };
    VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
}

struct SeededVarMap {
    varmap: VarMap,
    rng: Mutex<StdRng>,
}

impl SeededVarMap {
    fn draw(&self, shape: &Shape, init: Init) -> Result<Vec<f32>> {
        let n = shape.elem_count();
        let mut rng = self.rng.lock().expect("init rng poisoned");
        Ok(match init {
            Init::Const(v) => vec![v as f32; n],
            Init::Uniform { lo, up } => (0..n).map(|_| rng.gen_range(lo..up) as f32).collect(),
            Init::Randn { mean, stdev } => (0..n)
                .map(|_| (mean + stdev * standard_normal(&mut rng)) as f32)
                .collect(),
            Init::Kaiming { .. } => {
                candle_core::bail!("the seeded DiT initialiser does not draw Kaiming hints")
            }
        })
    }
}

/// One N(0, 1) draw by Box-Muller.
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

impl candle_nn::var_builder::SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.varmap.data().lock().expect("varmap poisoned");
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", var.shape())
            }
            return Ok(var.as_tensor().clone());
        }
        let values = self.draw(&s, h)?;
        let tensor = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&tensor)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!(
            "`get_unchecked` is not supported by the seeded DiT initialiser ({name})"
        )
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .expect("varmap poisoned")
            .contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights_and_hints_respected() {
        let draw = |seed| {
            let vm = VarMap::new();
            let vb = seeded_var_builder(&vm, seed, DType::F32, &Device::Cpu);
            let w = vb
                .get_with_hints((64, 32), "w", xavier_uniform(32, 64))
                .unwrap();
            let e = vb.get_with_hints(4096, "e", EMBEDDING_INIT).unwrap();
            (
                w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                e.to_vec1::<f32>().unwrap(),
                vm,
            )
        };
        let (w1, e1, vm) = draw(7);
        let (w2, _, _) = draw(7);
        let (w3, _, _) = draw(8);
        assert_eq!(w1, w2);
        assert_ne!(w1, w3);
        let a = (6.0f32 / 96.0).sqrt();
        assert!(w1.iter().all(|v| v.abs() <= a));
        assert!(w1.iter().any(|v| v.abs() > 0.9 * a));
        let std = (e1.iter().map(|v| v * v).sum::<f32>() / e1.len() as f32).sqrt();
        assert!((std - 0.02).abs() < 0.002, "std {std}");
        assert_eq!(vm.all_vars().len(), 2);
    }
}
