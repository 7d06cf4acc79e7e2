//! Training losses for Gaussian diffusion.
//!
//! * `L_simple` (Ho et al. 2020, eq. 14): `|| target - model_output ||^2`, here for any
//!   [`PredictionType`] target, averaged over all elements.
//! * The variational bound term `L_t` (Ho et al. 2020, eq. 5; Nichol & Dhariwal 2021, eq. 4-6):
//!   `L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))` for `t > 0` ([`normal_kl`]), and
//!   `L_0 = -log p(x_0 | x_1)` with the discretized Gaussian decoder of DDPM eq. 13
//!   ([`discretized_gaussian_log_likelihood`], using the tanh approximation of the normal CDF as
//!   the DDPM/improved-diffusion code does), in bits per dimension.
//! * The hybrid objective (Nichol & Dhariwal 2021, eq. 16): `L_hybrid = L_simple + lambda L_vlb`,
//!   `lambda = 0.001`, with `L_vlb = sum_t L_t` estimated by `T * L_t` at the sampled `t`, and a
//!   stop-gradient on the mean so that `L_vlb` trains only the variance (§3.1; improved-diffusion's
//!   `frozen_out`). For `T = 1000` and `lambda = 0.001` this is improved-diffusion / DiT's
//!   `loss = mse + vb` (`RESCALED_MSE`).

use candle_core::{bail, Result, Tensor};

use crate::coef::per_sample;
use crate::ddpm::{learned_range_log_variance, VarianceType};
use crate::prediction::PredictionType;
use crate::schedule::{check_batch, NoiseSchedule};
use crate::scheduler::split_variance_channels;

/// Improved DDPM's `lambda` for the hybrid loss (§3.1).
pub const HYBRID_VLB_WEIGHT: f64 = 0.001;

/// The terms of the (hybrid) training loss, each a scalar tensor (batch mean).
#[derive(Debug, Clone)]
pub struct LossTerms {
    /// `L_simple`: mean squared error between the prediction channels and the target.
    pub mse: Tensor,
    /// `L_t` in bits/dim (mean over the batch) when the variance is learned; gradients reach
    /// only the variance channels.
    pub vlb: Option<Tensor>,
    /// `mse + vlb_weight * T * vlb` (or `mse` without a learned variance).
    pub total: Tensor,
}

/// Mean of `(prediction - target)^2` over every element.
pub fn mse_loss(prediction: &Tensor, target: &Tensor) -> Result<Tensor> {
    prediction.sub(target)?.sqr()?.mean_all()
}

/// `KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2)))`, elementwise with broadcasting, in nats:
/// `0.5 (-1 + logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2))`.
pub fn normal_kl(
    mean1: &Tensor,
    logvar1: &Tensor,
    mean2: &Tensor,
    logvar2: &Tensor,
) -> Result<Tensor> {
    let log_ratio = logvar2.broadcast_sub(logvar1)?;
    let var_ratio = logvar1.broadcast_sub(logvar2)?.exp()?;
    let mahalanobis = mean1
        .broadcast_sub(mean2)?
        .sqr()?
        .broadcast_mul(&logvar2.neg()?.exp()?)?;
    log_ratio
        .broadcast_add(&var_ratio)?
        .broadcast_add(&mahalanobis)?
        .affine(0.5, -0.5)
}

/// `Phi(x) ~ 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
pub fn approx_standard_normal_cdf(x: &Tensor) -> Result<Tensor> {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    x.add(&x.powf(3.0)?.affine(0.044715, 0.0)?)?
        .affine(k, 0.0)?
        .tanh()?
        .affine(0.5, 0.5)
}

/// DDPM eq. 13: the log-likelihood (nats, elementwise) of data `x` in `[-1, 1]` quantised to 256
/// levels under `N(means, exp(log_scales)^2)`, with the edge bins extended to `-inf` / `+inf`.
/// `means` and `log_scales` broadcast to `x`'s shape.
pub fn discretized_gaussian_log_likelihood(
    x: &Tensor,
    means: &Tensor,
    log_scales: &Tensor,
) -> Result<Tensor> {
    const HALF_BIN: f64 = 1.0 / 255.0;
    const FLOOR: f64 = 1e-12;
    let shape = x.shape();
    let centered = x.broadcast_sub(means)?;
    let inv_std = log_scales.neg()?.exp()?.broadcast_as(shape)?;
    let cdf_plus = approx_standard_normal_cdf(&centered.affine(1.0, HALF_BIN)?.mul(&inv_std)?)?;
    let cdf_min = approx_standard_normal_cdf(&centered.affine(1.0, -HALF_BIN)?.mul(&inv_std)?)?;
    let log_cdf_plus = cdf_plus.maximum(FLOOR)?.log()?;
    let log_one_minus_cdf_min = cdf_min.affine(-1.0, 1.0)?.maximum(FLOOR)?.log()?;
    let log_cdf_delta = cdf_plus.sub(&cdf_min)?.maximum(FLOOR)?.log()?;
    let upper = x
        .gt(0.999)?
        .where_cond(&log_one_minus_cdf_min, &log_cdf_delta)?;
    x.lt(-0.999)?.where_cond(&log_cdf_plus, &upper)
}

/// Per-sample `L_t` in bits/dim (`[B]`) for the model's prediction channels `prediction` and,
/// for a learned variance, its variance channels. The model mean is the posterior mean at the
/// model's `x_0` estimate (DDPM eq. 7 with eq. 15); at `t = 0` the decoder NLL is returned, else
/// the KL to the true posterior.
#[allow(clippy::too_many_arguments)]
pub fn vlb_terms_bpd(
    sched: &NoiseSchedule,
    prediction: &Tensor,
    variance_values: Option<&Tensor>,
    variance: VarianceType,
    x0: &Tensor,
    x_t: &Tensor,
    t: &[usize],
    p: PredictionType,
) -> Result<Tensor> {
    check_batch(x0, t)?;
    let alpha_bars = sched.alpha_bars(t)?;
    let x0_pred = p.to_x0(prediction, x_t, &alpha_bars)?;
    let (true_mean, true_log_var) = sched.q_posterior_mean_log_variance(x0, x_t, t)?;
    let (model_mean, _) = sched.q_posterior_mean_log_variance(&x0_pred, x_t, t)?;
    let model_log_var = model_log_variance(sched, variance, variance_values, t, x_t)?;

    let ln2 = std::f64::consts::LN_2;
    let kl = mean_flat(&normal_kl(
        &true_mean,
        &true_log_var,
        &model_mean,
        &model_log_var,
    )?)?;
    let log_scales = model_log_var.affine(0.5, 0.0)?;
    let nll =
        mean_flat(&discretized_gaussian_log_likelihood(x0, &model_mean, &log_scales)?.neg()?)?;
    let is_first: Vec<u8> = t.iter().map(|&ti| u8::from(ti == 0)).collect();
    let is_first = Tensor::new(is_first.as_slice(), x0.device())?;
    is_first.where_cond(&nll, &kl)?.affine(1.0 / ln2, 0.0)
}

/// `log Sigma_theta` per element (learned) or per sample (fixed), improved-diffusion's
/// `p_mean_variance`: `LearnedRange` between `log beta_tilde` (clipped) and `log beta`;
/// `FixedLarge` uses `beta_tilde_1` at `t = 0` "to get a better decoder log likelihood".
fn model_log_variance(
    sched: &NoiseSchedule,
    variance: VarianceType,
    variance_values: Option<&Tensor>,
    t: &[usize],
    like: &Tensor,
) -> Result<Tensor> {
    let min_log: Vec<f64> = t
        .iter()
        .map(|&ti| sched.posterior_log_variance_clipped(ti))
        .collect::<Result<_>>()?;
    let log_beta: Vec<f64> = t.iter().map(|&ti| sched.betas()[ti].ln()).collect();
    match variance {
        VarianceType::FixedSmall => per_sample(&min_log, like),
        VarianceType::FixedLarge => {
            let v: Vec<f64> = t
                .iter()
                .zip(min_log.iter().zip(&log_beta))
                .map(|(&ti, (&small, &large))| if ti == 0 { small } else { large })
                .collect();
            per_sample(&v, like)
        }
        VarianceType::LearnedRange => {
            let Some(values) = variance_values else {
                bail!("diffusion: learned_range VLB needs the model's variance channels")
            };
            learned_range_log_variance(
                values,
                &per_sample(&min_log, like)?,
                &per_sample(&log_beta, like)?,
            )
        }
    }
}

/// The training loss for one batch: `L_simple` on the prediction channels, plus (when
/// `learned_sigma`, `model_output` = `[B, 2C, ...]`) the VLB term on the variance channels with
/// the mean detached, `total = mse + vlb_weight * T * vlb` (use [`HYBRID_VLB_WEIGHT`]).
/// `x_t` must be `add_noise(x0, noise, t)`.
#[allow(clippy::too_many_arguments)]
pub fn hybrid_loss(
    sched: &NoiseSchedule,
    model_output: &Tensor,
    x0: &Tensor,
    x_t: &Tensor,
    noise: &Tensor,
    t: &[usize],
    p: PredictionType,
    learned_sigma: bool,
    vlb_weight: f64,
) -> Result<LossTerms> {
    let (prediction, variance_values) = split_variance_channels(model_output, x0)?;
    if learned_sigma != variance_values.is_some() {
        bail!(
            "diffusion: model output {:?} for data {:?} with learned_sigma = {learned_sigma}",
            model_output.dims(),
            x0.dims()
        )
    }
    let target = sched.training_target(x0, noise, t, p)?;
    let mse = mse_loss(&prediction, &target)?;
    let Some(values) = variance_values else {
        return Ok(LossTerms {
            total: mse.clone(),
            mse,
            vlb: None,
        });
    };
    let frozen = prediction.detach();
    let vlb = vlb_terms_bpd(
        sched,
        &frozen,
        Some(&values),
        VarianceType::LearnedRange,
        x0,
        x_t,
        t,
        p,
    )?
    .mean_all()?;
    let scale = vlb_weight * sched.num_train_timesteps() as f64;
    let total = mse.add(&vlb.affine(scale, 0.0)?)?;
    Ok(LossTerms {
        mse,
        vlb: Some(vlb),
        total,
    })
}

/// Mean over every dimension but the first: `[B, ...] -> [B]`.
fn mean_flat(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(1)?.mean(1)
}
