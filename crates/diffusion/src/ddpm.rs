//! DDPM ancestral sampling step (Ho et al. 2020, Algorithm 2 / eq. 6-7) with the reverse variance
//! chosen by [`VarianceType`]:
//!
//! `x_prev = mu_tilde(x_0_pred, x_t) + sigma z`, `mu_tilde = c_x0 x_0 + c_xt x_t` (DDPM eq. 7),
//! with `sigma^2` one of
//! * `FixedSmall`: `beta_tilde_t` (DDPM §3.2, the lower bound; improved-diffusion `FIXED_SMALL`),
//! * `FixedLarge`: `beta_t` (DDPM §3.2, the upper bound),
//! * `LearnedRange`: `exp(v log beta_t + (1 - v) log beta_tilde_t)` with `v = (out + 1) / 2` from
//!   the model's second `C` channels (Nichol & Dhariwal 2021, eq. 15).
//!
//! Over a respaced subset the step is the same with the subset's `beta = 1 - alpha_bar_t /
//! alpha_bar_prev` (improved-diffusion respacing); no noise is added on the last step (the one
//! whose previous timestep lies before the chain), as improved-diffusion's `nonzero_mask` does.

use candle_core::{Result, Tensor};

use crate::coef::{lincomb, uniform};
use crate::schedule::{Transition, MIN_VARIANCE};

/// The variance of the reverse process `p(x_{t-1} | x_t)` (diffusers `variance_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VarianceType {
    /// `beta_tilde_t`, the posterior variance: optimal when `x_0` is a single point (DDPM §3.2);
    /// diffusers' default.
    #[default]
    FixedSmall,
    /// `beta_t`: optimal for `x_0 ~ N(0, I)` (DDPM §3.2).
    FixedLarge,
    /// Interpolated in log space between the two by the model's extra channels (improved DDPM
    /// eq. 15; DiT).
    LearnedRange,
}

impl VarianceType {
    /// True when the model outputs `2 C` channels, the second half interpolating the variance.
    pub fn is_learned(&self) -> bool {
        matches!(self, VarianceType::LearnedRange)
    }

    /// The diffusers spelling: `fixed_small`, `fixed_large`, `learned_range`.
    pub fn as_str(&self) -> &'static str {
        match self {
            VarianceType::FixedSmall => "fixed_small",
            VarianceType::FixedLarge => "fixed_large",
            VarianceType::LearnedRange => "learned_range",
        }
    }

    /// Parses the diffusers spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fixed_small" => Some(VarianceType::FixedSmall),
            "fixed_large" => Some(VarianceType::FixedLarge),
            "learned_range" => Some(VarianceType::LearnedRange),
            _ => None,
        }
    }
}

/// Improved DDPM eq. 15: `log Sigma = v max_log + (1 - v) min_log` with `v = (values + 1) / 2`.
/// `min_log` (`log beta_tilde`) and `max_log` (`log beta`) broadcast against `values`;
/// differentiable in `values`.
pub fn learned_range_log_variance(
    values: &Tensor,
    min_log: &Tensor,
    max_log: &Tensor,
) -> Result<Tensor> {
    let frac = values.affine(0.5, 0.5)?;
    frac.broadcast_mul(&max_log.sub(min_log)?)?
        .broadcast_add(min_log)
}

/// `(log beta_tilde, log beta)` of a step: the two ends of the learned range (`beta_tilde` is
/// floored at [`MIN_VARIANCE`], as diffusers does).
pub fn variance_log_bounds(tr: &Transition) -> (f64, f64) {
    (
        tr.posterior_variance().max(MIN_VARIANCE).ln(),
        tr.beta().max(MIN_VARIANCE).ln(),
    )
}

/// One DDPM step `x_t -> x_prev` given the model's `x_0` estimate. `variance_values` are the
/// model's variance channels (required for `LearnedRange`); `noise` is `z`, added unless this is
/// the last step (`last`).
pub(crate) fn ddpm_step(
    tr: &Transition,
    x0_pred: &Tensor,
    x_t: &Tensor,
    variance: VarianceType,
    variance_values: Option<&Tensor>,
    noise: Option<&Tensor>,
    last: bool,
) -> Result<Tensor> {
    let (c_x0, c_xt) = tr.posterior_mean_coefs();
    let mean = lincomb(&uniform(c_x0, x_t)?, x0_pred, &uniform(c_xt, x_t)?, x_t)?;
    if last {
        return Ok(mean);
    }
    let Some(z) = noise else {
        candle_core::bail!("diffusion: a DDPM step before the last needs noise")
    };
    let std = match variance {
        VarianceType::FixedSmall => uniform(tr.posterior_variance().max(MIN_VARIANCE).sqrt(), x_t)?,
        VarianceType::FixedLarge => uniform(tr.beta().sqrt(), x_t)?,
        VarianceType::LearnedRange => {
            let Some(v) = variance_values else {
                candle_core::bail!(
                    "diffusion: variance_type learned_range needs a model output with 2C channels"
                )
            };
            let (min_log, max_log) = variance_log_bounds(tr);
            learned_range_log_variance(v, &uniform(min_log, x_t)?, &uniform(max_log, x_t)?)?
                .affine(0.5, 0.0)?
                .exp()?
        }
    };
    mean.add(&z.broadcast_mul(&std)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_abs_diff, small};
    use crate::{BetaSchedule, NoiseSchedule, PredictionType, SamplerKind, Scheduler};

    const X: [f64; 8] = [0.3, -1.2, 2.0, 0.0, 0.7, -0.1, 1.1, -2.5];
    const EPS: [f64; 8] = [0.5, 0.1, -0.9, 1.3, -0.2, 0.8, 0.0, -1.0];
    const Z: [f64; 8] = [-0.4, 1.0, 0.2, -1.5, 0.9, 0.3, -0.6, 0.1];

    fn ddpm(variance: VarianceType) -> Scheduler {
        let s = NoiseSchedule::new(BetaSchedule::DDPM_LINEAR, 1000).unwrap();
        Scheduler::new(s, SamplerKind::Ddpm { variance }, PredictionType::Epsilon)
    }

    /// DDPM eq. 11 + Algorithm 2 written out independently of eq. 7:
    /// `x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) + sigma z`.
    fn eq_11(s: &Scheduler, t: usize, sigma: f64) -> Tensor {
        let beta = s.schedule().betas()[t];
        let ab = s.schedule().alpha_bar(t).unwrap();
        let v: Vec<f64> = (0..8)
            .map(|k| {
                (X[k] - beta / (1.0 - ab).sqrt() * EPS[k]) / (1.0 - beta).sqrt() + sigma * Z[k]
            })
            .collect();
        small(v.try_into().unwrap())
    }

    #[test]
    fn fixed_variances_match_eq_11() {
        let t = 600;
        for variance in [VarianceType::FixedSmall, VarianceType::FixedLarge] {
            let s = ddpm(variance);
            let i = s.timesteps().iter().position(|&x| x == t).unwrap();
            let tr = s.schedule().training_transition(t).unwrap();
            let sigma = match variance {
                VarianceType::FixedSmall => tr.posterior_variance().sqrt(),
                _ => s.schedule().betas()[t].sqrt(),
            };
            let got = s.step(&small(EPS), i, &small(X), Some(&small(Z))).unwrap();
            assert!(
                max_abs_diff(&got, &eq_11(&s, t, sigma)) < 1e-12,
                "{variance:?}"
            );
        }
    }

    #[test]
    fn learned_range_interpolates_in_log_space() {
        let s = ddpm(VarianceType::LearnedRange);
        let t = 300;
        let i = s.timesteps().iter().position(|&x| x == t).unwrap();
        let tr = s.schedule().training_transition(t).unwrap();
        let (small_var, large_var) = (tr.posterior_variance(), tr.beta());
        // v = -1 -> beta_tilde, v = +1 -> beta, v = 0 -> their geometric mean (eq. 15).
        for (v, var) in [
            (-1.0, small_var),
            (1.0, large_var),
            (0.0, (small_var * large_var).sqrt()),
        ] {
            let out = Tensor::cat(&[small(EPS), small([v; 8])], 1).unwrap();
            let got = s.step(&out, i, &small(X), Some(&small(Z))).unwrap();
            assert!(
                max_abs_diff(&got, &eq_11(&s, t, var.sqrt())) < 1e-12,
                "v = {v}"
            );
        }
        // Without the variance channels a noisy step is an error, not a silent fixed variance.
        assert!(s.step(&small(EPS), i, &small(X), Some(&small(Z))).is_err());
    }

    #[test]
    fn last_step_returns_the_mean_without_noise() {
        let s = ddpm(VarianceType::FixedLarge);
        let last = s.timesteps().len() - 1;
        assert!(!s.step_needs_noise(last));
        let with = s
            .step(&small(EPS), last, &small(X), Some(&small(Z)))
            .unwrap();
        let without = s.step(&small(EPS), last, &small(X), None).unwrap();
        assert_eq!(max_abs_diff(&with, &without), 0.0);
        // At t = 0 the posterior mean is the x_0 estimate itself.
        let x0 = PredictionType::Epsilon.to_x0(
            &small(EPS),
            &small(X),
            &[s.schedule().alpha_bar(0).unwrap(); 2],
        );
        assert!(max_abs_diff(&with, &x0.unwrap()) < 1e-12);
        // A step that needs noise refuses to run without it.
        assert!(s.step(&small(EPS), 0, &small(X), None).is_err());
    }

    #[test]
    fn clip_sample_clamps_the_x0_estimate() {
        let s = ddpm(VarianceType::FixedSmall).with_clip_sample(Some(1.0));
        let out = s
            .step_output(&small(EPS), 10, &small(X), Some(&small(Z)))
            .unwrap();
        let x0: Vec<f64> = out
            .pred_original_sample
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(x0.iter().all(|v| v.abs() <= 1.0));
        assert!(
            x0.iter().any(|v| v.abs() == 1.0),
            "the test input must actually clip"
        );
    }
}
