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
    /// `beta_tilde_t`, the posterior variance (DDPM's choice for the best samples on CIFAR-10's
    /// fixed-variance runs; diffusers' default).
    #[default]
    FixedSmall,
    /// `beta_t`.
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
