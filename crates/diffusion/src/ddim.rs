//! DDIM step (Song et al. 2021, "Denoising Diffusion Implicit Models"), eq. 12:
//!
//! `x_prev = sqrt(alpha_bar_prev) x_0_pred + sqrt(1 - alpha_bar_prev - sigma^2) eps_pred + sigma z`
//!
//! with eq. 16's `sigma = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev)`:
//! `eta = 0` is the deterministic DDIM, `eta = 1` recovers DDPM's `beta_tilde` variance.
//! `eps_pred` is the model's (unclipped) noise estimate, as in the paper and diffusers' default
//! (`use_clipped_model_output=False`); improved-diffusion re-derives it from the clipped `x_0`,
//! which differs only when `clip_sample` is on.

use candle_core::{Result, Tensor};

use crate::coef::{lincomb, uniform};
use crate::schedule::Transition;

/// DDIM eq. 16: the standard deviation of the step's noise.
pub fn ddim_sigma(tr: &Transition, eta: f64) -> f64 {
    eta * ((1.0 - tr.alpha_bar_prev) / (1.0 - tr.alpha_bar_t)).sqrt() * (1.0 - tr.alpha()).sqrt()
}

/// One DDIM step (eq. 12) from the model's `x_0` and `eps` estimates; `noise` is needed iff
/// `sigma > 0`.
pub(crate) fn ddim_step(
    tr: &Transition,
    x0_pred: &Tensor,
    eps_pred: &Tensor,
    eta: f64,
    noise: Option<&Tensor>,
) -> Result<Tensor> {
    let sigma = ddim_sigma(tr, eta);
    let direction = (1.0 - tr.alpha_bar_prev - sigma * sigma).max(0.0).sqrt();
    let mean = lincomb(
        &uniform(tr.alpha_bar_prev.sqrt(), x0_pred)?,
        x0_pred,
        &uniform(direction, x0_pred)?,
        eps_pred,
    )?;
    if sigma == 0.0 {
        return Ok(mean);
    }
    let Some(z) = noise else {
        candle_core::bail!("diffusion: a DDIM step with eta > 0 needs noise")
    };
    mean.add(&z.affine(sigma, 0.0)?)
}
