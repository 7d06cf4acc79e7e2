//! The one sampling loop (DDPM Algorithm 2 / DDIM §4.1, for any [`Scheduler`]): start from
//! `x_T`, and for each visited timestep ask the denoiser for its output and take the scheduler's
//! step. Every sampler (DDPM with any variance, DDIM with any eta, any respacing) runs through
//! [`sample_with_noise`]; [`sample`] draws the noise from an RNG.

use candle_core::{Result, Tensor};
use rand::Rng;

use crate::noise::gaussian_like;
use crate::scheduler::Scheduler;

/// Called after each step with `(steps done, total steps)`.
pub type Progress<'a> = &'a dyn Fn(usize, usize);

/// Runs the reverse process from `x_t` (noise at `timesteps()[0]`). `denoise(x, t)` gets the
/// current sample and the *training* timestep `t` (as improved-diffusion's `_WrappedModel` maps
/// respaced indices back) and returns the model output (`C` or `2C` channels). `noise(i, like)`
/// supplies `z` for step `i` when that step draws noise.
pub fn sample_with_noise(
    s: &Scheduler,
    x_t: Tensor,
    mut denoise: impl FnMut(&Tensor, usize) -> Result<Tensor>,
    mut noise: impl FnMut(usize, &Tensor) -> Result<Tensor>,
    progress: Option<Progress<'_>>,
) -> Result<Tensor> {
    let total = s.timesteps().len();
    let mut x = x_t;
    for (i, &t) in s.timesteps().iter().enumerate() {
        let model_output = denoise(&x, t)?;
        let z = if s.step_needs_noise(i) {
            Some(noise(i, &x)?)
        } else {
            None
        };
        x = s.step(&model_output, i, &x, z.as_ref())?;
        if let Some(report) = progress {
            report(i + 1, total);
        }
    }
    Ok(x)
}

/// [`sample_with_noise`] with standard-normal noise drawn from `rng`.
pub fn sample(
    s: &Scheduler,
    x_t: Tensor,
    denoise: impl FnMut(&Tensor, usize) -> Result<Tensor>,
    rng: &mut impl Rng,
    progress: Option<Progress<'_>>,
) -> Result<Tensor> {
    sample_with_noise(
        s,
        x_t,
        denoise,
        |_, like| gaussian_like(like, rng),
        progress,
    )
}
