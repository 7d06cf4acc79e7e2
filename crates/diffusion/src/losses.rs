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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::BetaSchedule;
    use crate::testing::max_abs_diff;
    use candle_core::{DType, Device, Var};
    use rand::SeedableRng;

    fn scalar(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64).unwrap().to_scalar().unwrap()
    }

    #[test]
    fn kl_of_identical_gaussians_is_zero_and_known_values_hold() {
        let dev = Device::Cpu;
        let m = Tensor::new(&[0.3f64, -1.0, 2.0], &dev).unwrap();
        let lv = Tensor::new(&[0.0f64, -3.0, 1.5], &dev).unwrap();
        let kl: Vec<f64> = normal_kl(&m, &lv, &m, &lv).unwrap().to_vec1().unwrap();
        assert!(kl.iter().all(|k| k.abs() < 1e-15));
        // KL(N(0,1) || N(1,1)) = 1/2; KL(N(0,1) || N(0,e^2)) = 0.5 (e^-2 + 2 - 1).
        let z = Tensor::new(&[0.0f64], &dev).unwrap();
        let one = Tensor::new(&[1.0f64], &dev).unwrap();
        assert!(
            (scalar(&normal_kl(&z, &z, &one, &z).unwrap().sum_all().unwrap()) - 0.5).abs() < 1e-15
        );
        let two = Tensor::new(&[2.0f64], &dev).unwrap();
        let expected = 0.5 * ((-2.0f64).exp() + 2.0 - 1.0);
        assert!(
            (scalar(&normal_kl(&z, &z, &z, &two).unwrap().sum_all().unwrap()) - expected).abs()
                < 1e-15
        );
    }

    #[test]
    fn discretized_likelihood_is_a_distribution_over_the_256_bins() {
        let dev = Device::Cpu;
        let bins: Vec<f64> = (0..256).map(|k| k as f64 / 127.5 - 1.0).collect();
        let x = Tensor::new(bins.as_slice(), &dev).unwrap();
        for (mean, log_scale) in [(0.1, -2.0), (-0.95, -4.0), (0.0, 0.5)] {
            let m = Tensor::new(&[mean], &dev).unwrap();
            let ls = Tensor::new(&[log_scale], &dev).unwrap();
            let lp = discretized_gaussian_log_likelihood(&x, &m, &ls).unwrap();
            let total = scalar(&lp.exp().unwrap().sum_all().unwrap());
            assert!(
                (total - 1.0).abs() < 1e-9,
                "mean {mean}: sum of bin probabilities {total}"
            );
        }
        // A very narrow Gaussian on a bin puts (almost) all mass there: log p ~ 0.
        let m = Tensor::new(&[bins[100]], &dev).unwrap();
        let ls = Tensor::new(&[-10.0f64], &dev).unwrap();
        let lp: Vec<f64> = discretized_gaussian_log_likelihood(&x, &m, &ls)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(lp[100].abs() < 1e-9);
        assert!(lp[101] < -20.0);
    }

    #[test]
    fn vlb_is_zero_for_the_true_posterior() {
        // A model whose eps is the true noise and whose variance is beta_tilde (v = -1) is the
        // true posterior: KL = 0 for t > 0.
        let sched = NoiseSchedule::new(BetaSchedule::DDPM_LINEAR, 1000).unwrap();
        let dev = Device::Cpu;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let x0 = crate::gaussian_noise(&[3, 1, 4, 4], DType::F64, &dev, &mut rng)
            .unwrap()
            .tanh()
            .unwrap();
        let noise = crate::gaussian_noise(&[3, 1, 4, 4], DType::F64, &dev, &mut rng).unwrap();
        let t = [1usize, 400, 999];
        let x_t = sched.add_noise(&x0, &noise, &t).unwrap();
        let minus_one = noise.ones_like().unwrap().neg().unwrap();
        let vlb = vlb_terms_bpd(
            &sched,
            &noise,
            Some(&minus_one),
            VarianceType::LearnedRange,
            &x0,
            &x_t,
            &t,
            PredictionType::Epsilon,
        )
        .unwrap();
        let v: Vec<f64> = vlb.to_vec1().unwrap();
        assert!(v.iter().all(|k| k.abs() < 1e-9), "{v:?}");
        let fixed = vlb_terms_bpd(
            &sched,
            &noise,
            None,
            VarianceType::FixedSmall,
            &x0,
            &x_t,
            &t,
            PredictionType::Epsilon,
        )
        .unwrap();
        assert!(max_abs_diff(&fixed, &vlb) < 1e-9);
    }

    #[test]
    fn hybrid_loss_is_finite_and_the_vlb_trains_only_the_variance() {
        let sched = NoiseSchedule::new(BetaSchedule::Cosine, 1000).unwrap();
        let dev = Device::Cpu;
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let shape = [4usize, 2, 3, 3];
        let x0 = crate::gaussian_noise(&shape, DType::F32, &dev, &mut rng)
            .unwrap()
            .tanh()
            .unwrap();
        let noise = crate::gaussian_noise(&shape, DType::F32, &dev, &mut rng).unwrap();
        let t = [0usize, 1, 500, 999]; // includes the decoder term at t = 0
        let x_t = sched.add_noise(&x0, &noise, &t).unwrap();
        let out = Var::from_tensor(
            &crate::gaussian_noise(&[4, 4, 3, 3], DType::F32, &dev, &mut rng)
                .unwrap()
                .affine(0.5, 0.0)
                .unwrap(),
        )
        .unwrap();
        let terms = hybrid_loss(
            &sched,
            out.as_tensor(),
            &x0,
            &x_t,
            &noise,
            &t,
            PredictionType::Epsilon,
            true,
            HYBRID_VLB_WEIGHT,
        )
        .unwrap();
        let (mse, vlb, total) = (
            scalar(&terms.mse),
            scalar(terms.vlb.as_ref().unwrap()),
            scalar(&terms.total),
        );
        assert!(mse.is_finite() && vlb.is_finite() && vlb > 0.0);
        assert!(
            (total - (mse + vlb)).abs() < 1e-4 * total.abs().max(1.0),
            "0.001 * T = 1"
        );
        // Mean channels (0..2) get gradient from the MSE only; variance channels (2..4) from the VLB only.
        let grads = terms.vlb.unwrap().backward().unwrap();
        let g = grads.get(out.as_tensor()).expect("vlb has a gradient");
        let mean_grad = scalar(&g.narrow(1, 0, 2).unwrap().abs().unwrap().sum_all().unwrap());
        let var_grad = scalar(&g.narrow(1, 2, 2).unwrap().abs().unwrap().sum_all().unwrap());
        assert_eq!(mean_grad, 0.0);
        assert!(var_grad > 0.0 && var_grad.is_finite());
        let grads = terms.total.backward().unwrap();
        let g = grads.get(out.as_tensor()).unwrap();
        assert!(scalar(&g.narrow(1, 0, 2).unwrap().abs().unwrap().sum_all().unwrap()) > 0.0);
        // Shape mismatches are errors.
        assert!(hybrid_loss(
            &sched,
            out.as_tensor(),
            &x0,
            &x_t,
            &noise,
            &t,
            PredictionType::Epsilon,
            false,
            0.001
        )
        .is_err());
    }

    #[test]
    fn without_learned_sigma_the_loss_is_l_simple() {
        let sched = NoiseSchedule::new(BetaSchedule::DDPM_LINEAR, 1000).unwrap();
        let dev = Device::Cpu;
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let x0 = crate::gaussian_noise(&[2, 1, 2, 2], DType::F64, &dev, &mut rng).unwrap();
        let noise = crate::gaussian_noise(&[2, 1, 2, 2], DType::F64, &dev, &mut rng).unwrap();
        let t = [10usize, 900];
        let x_t = sched.add_noise(&x0, &noise, &t).unwrap();
        for p in [
            PredictionType::Epsilon,
            PredictionType::Sample,
            PredictionType::VPrediction,
        ] {
            let target = sched.training_target(&x0, &noise, &t, p).unwrap();
            let exact =
                hybrid_loss(&sched, &target, &x0, &x_t, &noise, &t, p, false, 0.001).unwrap();
            assert_eq!(scalar(&exact.total), 0.0);
            assert!(exact.vlb.is_none());
            let off = hybrid_loss(
                &sched,
                &target.affine(1.0, 0.5).unwrap(),
                &x0,
                &x_t,
                &noise,
                &t,
                p,
                false,
                0.001,
            )
            .unwrap();
            assert!((scalar(&off.mse) - 0.25).abs() < 1e-12);
        }
    }
}
