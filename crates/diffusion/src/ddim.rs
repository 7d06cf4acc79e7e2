//! DDIM step (Song et al. 2021, "Denoising Diffusion Implicit Models"), eq. 12:
//!
//! `x_prev = sqrt(alpha_bar_prev) x_0_pred + sqrt(1 - alpha_bar_prev - sigma^2) eps_pred + sigma z`
//!
//! with eq. 16's `sigma = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev)`:
//! `eta = 0` is the deterministic DDIM, `eta = 1` recovers DDPM's `beta_tilde` variance.
//! `eps_pred` is the model's noise estimate, as in the paper and diffusers' default
//! (`use_clipped_model_output=False`), or, with
//! [`crate::Scheduler::with_clipped_model_output`], the `eps` re-derived from the clipped `x_0`
//! (improved-diffusion's `ddim_sample`), which differs only when `clip_sample` is on. With
//! clipping, the re-derived `eps` is the one to use: the unclipped one loses
//! `sqrt(alpha_bar_prev) (x_0 - clip(x_0))` per step, so the error grows with the step count.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_abs_diff, small};
    use crate::{
        BetaSchedule, NoiseSchedule, PredictionType, SamplerKind, Scheduler, TimestepSpacing,
    };

    const X0: [f64; 8] = [0.3, -0.2, 0.9, 0.0, -0.7, 0.1, 0.5, -1.0];
    const EPS: [f64; 8] = [0.5, 0.1, -0.9, 1.3, -0.2, 0.8, 0.0, -1.0];
    const Z: [f64; 8] = [-0.4, 1.0, 0.2, -1.5, 0.9, 0.3, -0.6, 0.1];

    fn ddim(eta: f64) -> Scheduler {
        let s = NoiseSchedule::new(BetaSchedule::Cosine, 1000).unwrap();
        let mut s = Scheduler::new(s, SamplerKind::Ddim { eta }, PredictionType::Epsilon);
        s.set_timesteps(20, TimestepSpacing::Leading).unwrap();
        s
    }

    #[test]
    fn eta_zero_is_eq_12_without_noise_and_lands_on_the_marginal() {
        let s = ddim(0.0);
        let i = 3;
        let (t, prev) = (s.timesteps()[i], s.timesteps()[i + 1]);
        assert!(!s.step_needs_noise(i));
        // x_t built from known x_0 and eps; a model that predicts that eps exactly must land on
        // the forward-process point at `prev` with the same eps (DDIM eq. 12 with sigma = 0).
        let x_t = s.add_noise(&small(X0), &small(EPS), &[t, t]).unwrap();
        let got = s.step(&small(EPS), i, &x_t, None).unwrap();
        let expected = s.add_noise(&small(X0), &small(EPS), &[prev, prev]).unwrap();
        assert!(max_abs_diff(&got, &expected) < 1e-12);
    }

    #[test]
    fn eta_one_has_the_ddpm_posterior_variance() {
        let s = ddim(1.0);
        let i = 5;
        let (t, prev) = (s.timesteps()[i], s.timesteps()[i + 1]);
        let tr = s.schedule().transition(t, Some(prev)).unwrap();
        let sigma = ddim_sigma(&tr, 1.0);
        assert!((sigma * sigma - tr.posterior_variance()).abs() < 1e-15);
        // Eq. 12 by hand: sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z.
        let x_t = s.add_noise(&small(X0), &small(EPS), &[t, t]).unwrap();
        let got = s.step(&small(EPS), i, &x_t, Some(&small(Z))).unwrap();
        let ab_prev = tr.alpha_bar_prev;
        let c = (1.0 - ab_prev - sigma * sigma).sqrt();
        let v: Vec<f64> = (0..8)
            .map(|k| ab_prev.sqrt() * X0[k] + c * EPS[k] + sigma * Z[k])
            .collect();
        assert!(max_abs_diff(&got, &small(v.try_into().unwrap())) < 1e-12);
        assert!(s.step(&small(EPS), i, &x_t, None).is_err());
        // The last step goes to alpha_bar = 1, where sigma = 0: no noise.
        assert!(!s.step_needs_noise(s.timesteps().len() - 1));
    }

    #[test]
    fn learned_variance_channels_are_ignored() {
        let s = ddim(0.0);
        let x_t = small(X0);
        let plain = s.step(&small(EPS), 2, &x_t, None).unwrap();
        let doubled = Tensor::cat(&[small(EPS), small(Z)], 1).unwrap();
        let with_var = s.step(&doubled, 2, &x_t, None).unwrap();
        assert_eq!(max_abs_diff(&plain, &with_var), 0.0);
    }
}
