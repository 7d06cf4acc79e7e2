//! Helpers for this crate's unit tests: seeded random variables and the largest difference of
//! two tensors.

use crate::init::seeded_var_builder;
use crate::{Conditioning, DiT, DitConfig};
use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A DiT small enough for exact tests: 8x8x2 inputs, patch 2 (16 tokens), width 16, depth 2,
/// 2 heads, 3 classes with label dropout 0.5.
pub fn tiny_config(
    conditioning: Conditioning,
    learn_sigma: bool,
    cond_dim: Option<usize>,
) -> DitConfig {
    DitConfig {
        input_size: 8,
        patch_size: 2,
        in_channels: 2,
        hidden_size: 16,
        depth: 2,
        num_heads: 2,
        mlp_ratio: 2.0,
        class_dropout_prob: 0.5,
        num_classes: 3,
        learn_sigma,
        conditioning,
        cond_dim,
    }
}

/// `cfg`'s model with every variable (in name order) redrawn uniform in ±0.5 from `seed`, so
/// that no branch is zero-initialised away.
pub fn random_dit(cfg: &DitConfig, seed: u64) -> (DiT, VarMap) {
    let vm = VarMap::new();
    let dit = DiT::new(cfg, seeded_var_builder(&vm, seed, DType::F32, &Device::Cpu)).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    for (_, var) in sorted_vars(&vm) {
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| rng.gen_range(-0.5f32..0.5))
            .collect();
        var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    (dit, vm)
}

/// The variables of `vm`, sorted by name.
pub fn sorted_vars(vm: &VarMap) -> Vec<(String, Var)> {
    let mut vars: Vec<(String, Var)> = vm.data().lock().unwrap().clone().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// A variable of `shape` with values uniform in [-2, 2) from a seeded LCG, cast to `dtype`.
pub fn random(shape: &[usize], seed: u64, dtype: DType) -> Result<Var> {
    let n: usize = shape.iter().product();
    let mut s = seed;
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0
        })
        .collect();
    Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)?)
}

/// `max |a − b|` over all elements, as f64.
pub fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    (a - b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
}

/// Asserts that `fused` and `composed` (the same expression in candle's ops) agree within `tol`,
/// and so do the gradients of `Σ w ⊙ ·` with respect to each of `vars`.
pub fn assert_same_values_and_gradients(
    fused: Tensor,
    composed: Tensor,
    vars: &[&Var],
    w: &Tensor,
    tol: f64,
    what: &str,
) -> Result<()> {
    let diff = max_diff(&fused, &composed)?;
    assert!(diff < tol, "{what}: forward differs by {diff}");
    let g_fused = (fused * w)?.sum_all()?.backward()?;
    let g_composed = (composed * w)?.sum_all()?.backward()?;
    for (i, v) in vars.iter().enumerate() {
        let (a, c) = (g_fused.get(v).unwrap(), g_composed.get(v).unwrap());
        let diff = max_diff(a, c)?;
        assert!(
            diff < tol,
            "{what}: gradient of input {i} differs by {diff}"
        );
    }
    Ok(())
}
