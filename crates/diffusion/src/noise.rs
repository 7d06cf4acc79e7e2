//! Seeded standard-normal noise from a `rand::Rng` (Box–Muller), so samplers and trainers are
//! reproducible from a seed (candle's own `randn` cannot be seeded on the CPU).

use candle_core::{DType, Device, Result, Tensor};
use rand::Rng;

/// A tensor of i.i.d. `N(0, 1)` values drawn from `rng`.
pub fn gaussian_noise(
    shape: &[usize],
    dtype: DType,
    device: &Device,
    rng: &mut impl Rng,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut values = Vec::with_capacity(n + 1);
    while values.len() < n {
        // Box–Muller: two uniforms in (0, 1] give two independent standard normals.
        let u1: f64 = 1.0 - rng.gen::<f64>();
        let u2: f64 = rng.gen::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        values.push(r * theta.cos());
        values.push(r * theta.sin());
    }
    values.truncate(n);
    Tensor::from_vec(values, shape, device)?.to_dtype(dtype)
}

/// [`gaussian_noise`] with the shape, dtype and device of `like`.
pub fn gaussian_like(like: &Tensor, rng: &mut impl Rng) -> Result<Tensor> {
    gaussian_noise(like.dims(), like.dtype(), like.device(), rng)
}
