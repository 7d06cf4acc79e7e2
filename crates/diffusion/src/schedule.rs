//! Beta schedules and the forward (noising) process of Gaussian diffusion.
//!
//! * Linear betas: Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (DDPM), §4:
//!   `beta_1 = 1e-4 ... beta_T = 0.02`, `T = 1000` (diffusers `beta_schedule="linear"`).
//! * Cosine: Nichol & Dhariwal 2021, "Improved DDPM", eq. 17:
//!   `alpha_bar(t) = f(t)/f(0)`, `f(t) = cos^2(((t/T + s)/(1 + s)) * pi/2)`, `s = 0.008`,
//!   `beta_t = min(1 - alpha_bar(t)/alpha_bar(t-1), 0.999)` (diffusers `squaredcos_cap_v2`).
//! * `q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)`: DDPM eq. 4, sampled as
//!   `x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps` ([`NoiseSchedule::add_noise`]).
//! * The posterior `q(x_{t-1} | x_t, x_0) = N(mu_tilde, beta_tilde I)`, DDPM eq. 6-7:
//!   `mu_tilde = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
//!             + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t`,
//!   `beta_tilde = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t` ([`Transition`]).
//!
//! A [`Transition`] is the step between any two timesteps `t > s` of the training schedule, with
//! `beta = 1 - alpha_bar_t / alpha_bar_s`: for `s = t - 1` it is DDPM's step, for a respaced subset
//! it is improved-diffusion's `SpacedDiffusion` beta (Nichol & Dhariwal 2021, §4). Everything is
//! kept in `f64` (as improved-diffusion does); tensors only see the final coefficients.

use candle_core::{bail, Result, Tensor};

use crate::coef::{batch_size, lincomb, per_sample};
use crate::prediction::PredictionType;

/// How the betas `beta_1..beta_T` are laid out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BetaSchedule {
    /// `beta_t` linearly spaced from `beta_start` to `beta_end` inclusive (DDPM §4; diffusers
    /// `"linear"`). Unlike improved-diffusion, the endpoints are not rescaled by `1000 / T`.
    Linear {
        /// `beta_1`.
        beta_start: f64,
        /// `beta_T`.
        beta_end: f64,
    },
    /// Improved DDPM eq. 17 with `s = 0.008` and betas capped at 0.999 (diffusers
    /// `"squaredcos_cap_v2"`).
    Cosine,
}

impl BetaSchedule {
    /// DDPM's linear schedule, `1e-4 ..= 0.02`.
    pub const DDPM_LINEAR: BetaSchedule = BetaSchedule::Linear {
        beta_start: 1e-4,
        beta_end: 0.02,
    };

    /// The `num_train_timesteps` betas of this schedule.
    pub fn betas(&self, num_train_timesteps: usize) -> Result<Vec<f64>> {
        let n = num_train_timesteps;
        if n == 0 {
            bail!("diffusion: num_train_timesteps must be at least 1")
        }
        Ok(match *self {
            BetaSchedule::Linear {
                beta_start,
                beta_end,
            } => {
                if n == 1 {
                    vec![beta_start]
                } else {
                    let step = (beta_end - beta_start) / (n - 1) as f64;
                    (0..n)
                        .map(|i| {
                            if i == n - 1 {
                                beta_end
                            } else {
                                beta_start + step * i as f64
                            }
                        })
                        .collect()
                }
            }
            BetaSchedule::Cosine => (0..n)
                .map(|i| {
                    let t1 = i as f64 / n as f64;
                    let t2 = (i + 1) as f64 / n as f64;
                    (1.0 - cosine_alpha_bar(t2) / cosine_alpha_bar(t1)).min(COSINE_MAX_BETA)
                })
                .collect(),
        })
    }
}

/// Improved DDPM's cap on cosine betas ("to prevent singularities at the end of the diffusion
/// process near t = T", §3.2).
pub const COSINE_MAX_BETA: f64 = 0.999;

/// Improved DDPM eq. 17's `f(t)` for `t` in `[0, 1]` (unnormalised: betas use the ratio).
pub fn cosine_alpha_bar(t: f64) -> f64 {
    const S: f64 = 0.008;
    ((t + S) / (1.0 + S) * std::f64::consts::FRAC_PI_2)
        .cos()
        .powi(2)
}

/// The training noise schedule: `T` betas and their cumulative products `alpha_bar_t`.
/// Timestep `t` is a 0-based index (`0..T`), as in diffusers and improved-diffusion.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    /// The schedule `s` with `num_train_timesteps` steps.
    pub fn new(s: BetaSchedule, num_train_timesteps: usize) -> Result<Self> {
        Self::from_betas(s.betas(num_train_timesteps)?)
    }

    /// A schedule from explicit betas (diffusers `trained_betas`); each must be in `(0, 1]`.
    pub fn from_betas(betas: Vec<f64>) -> Result<Self> {
        if betas.is_empty() {
            bail!("diffusion: a noise schedule needs at least one beta")
        }
        if let Some((i, b)) = betas
            .iter()
            .enumerate()
            .find(|(_, b)| !(b.is_finite() && **b > 0.0 && **b <= 1.0))
        {
            bail!("diffusion: beta[{i}] = {b} is outside (0, 1]")
        }
        let mut acc = 1.0;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        Ok(Self {
            betas,
            alphas_cumprod,
        })
    }

    /// `T`.
    pub fn num_train_timesteps(&self) -> usize {
        self.betas.len()
    }

    /// `beta_t` for `t = 0..T`.
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    /// `alpha_bar_t = prod_{s <= t} (1 - beta_s)` for `t = 0..T`.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// `alpha_bar_t`, with an error for `t >= T`.
    pub fn alpha_bar(&self, t: usize) -> Result<f64> {
        match self.alphas_cumprod.get(t) {
            Some(&a) => Ok(a),
            None => bail!(
                "diffusion: timestep {t} out of range for a schedule of {} steps",
                self.num_train_timesteps()
            ),
        }
    }

    /// The reverse step from `t` to `prev` (`None` = past the start, `alpha_bar = 1`).
    /// `prev` must be earlier than `t`.
    pub fn transition(&self, t: usize, prev: Option<usize>) -> Result<Transition> {
        let alpha_bar_t = self.alpha_bar(t)?;
        let alpha_bar_prev = match prev {
            Some(p) if p >= t => bail!("diffusion: previous timestep {p} is not before {t}"),
            Some(p) => self.alpha_bar(p)?,
            None => 1.0,
        };
        Ok(Transition {
            alpha_bar_t,
            alpha_bar_prev,
        })
    }

    /// The one-step transition `t -> t - 1` of the training chain.
    pub fn training_transition(&self, t: usize) -> Result<Transition> {
        self.transition(t, t.checked_sub(1))
    }

    /// `log beta_tilde_t`, clipped at `t = 0` (where `beta_tilde_0 = 0`) to `log beta_tilde_1`,
    /// as improved-diffusion's `posterior_log_variance_clipped`.
    pub fn posterior_log_variance_clipped(&self, t: usize) -> Result<f64> {
        let t = if t == 0 && self.num_train_timesteps() > 1 {
            1
        } else {
            t
        };
        Ok(self
            .training_transition(t)?
            .posterior_variance()
            .max(MIN_VARIANCE)
            .ln())
    }

    /// DDPM eq. 4: `x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise`, with one
    /// timestep per batch element (diffusers `add_noise`, improved-diffusion `q_sample`).
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: &[usize]) -> Result<Tensor> {
        let (signal, sigma) = self.signal_and_noise_scales(t, x0)?;
        lincomb(&signal, x0, &sigma, noise)
    }

    /// What a model of prediction type `p` is trained to output for `x_t = add_noise(x0, noise, t)`:
    /// `noise` (DDPM eq. 14's `eps`), `x0`, or `v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0`
    /// (Salimans & Ho 2022, §4; diffusers `get_velocity`).
    pub fn training_target(
        &self,
        x0: &Tensor,
        noise: &Tensor,
        t: &[usize],
        p: PredictionType,
    ) -> Result<Tensor> {
        let alpha_bars = self.alpha_bars(t)?;
        p.target(x0, noise, &alpha_bars)
    }

    /// `alpha_bar_t` for each batch element's timestep.
    pub fn alpha_bars(&self, t: &[usize]) -> Result<Vec<f64>> {
        t.iter().map(|&t| self.alpha_bar(t)).collect()
    }

    /// The posterior `q(x_{t-1} | x_t, x_0)` of DDPM eq. 6-7, per batch element: the mean tensor
    /// and `log beta_tilde_t` (clipped at `t = 0`) as a `[B, 1, ...]` tensor.
    pub fn q_posterior_mean_log_variance(
        &self,
        x0: &Tensor,
        x_t: &Tensor,
        t: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        check_batch(x0, t)?;
        let mut c0 = Vec::with_capacity(t.len());
        let mut ct = Vec::with_capacity(t.len());
        let mut log_var = Vec::with_capacity(t.len());
        for &ti in t {
            let (a, b) = self.training_transition(ti)?.posterior_mean_coefs();
            c0.push(a);
            ct.push(b);
            log_var.push(self.posterior_log_variance_clipped(ti)?);
        }
        let mean = lincomb(&per_sample(&c0, x0)?, x0, &per_sample(&ct, x0)?, x_t)?;
        Ok((mean, per_sample(&log_var, x0)?))
    }

    fn signal_and_noise_scales(&self, t: &[usize], like: &Tensor) -> Result<(Tensor, Tensor)> {
        check_batch(like, t)?;
        let ab = self.alpha_bars(t)?;
        let signal: Vec<f64> = ab.iter().map(|a| a.sqrt()).collect();
        let sigma: Vec<f64> = ab.iter().map(|a| (1.0 - a).sqrt()).collect();
        Ok((per_sample(&signal, like)?, per_sample(&sigma, like)?))
    }
}

/// Floor for variances before a logarithm (diffusers clamps `beta_tilde` at `1e-20`).
pub const MIN_VARIANCE: f64 = 1e-20;

/// A reverse step `x_t -> x_prev` between two timesteps of the training schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    /// `alpha_bar` at the current timestep.
    pub alpha_bar_t: f64,
    /// `alpha_bar` at the previous timestep (1 before the first one).
    pub alpha_bar_prev: f64,
}

impl Transition {
    /// `alpha = alpha_bar_t / alpha_bar_prev` (DDPM's `alpha_t` when `prev = t - 1`).
    pub fn alpha(&self) -> f64 {
        self.alpha_bar_t / self.alpha_bar_prev
    }

    /// `beta = 1 - alpha`: the (respaced) forward variance of this step.
    pub fn beta(&self) -> f64 {
        1.0 - self.alpha()
    }

    /// `beta_tilde = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta` (DDPM eq. 7).
    pub fn posterior_variance(&self) -> f64 {
        (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar_t) * self.beta()
    }

    /// The coefficients `(c_x0, c_xt)` of `mu_tilde = c_x0 x_0 + c_xt x_t` (DDPM eq. 7).
    pub fn posterior_mean_coefs(&self) -> (f64, f64) {
        let one_minus = 1.0 - self.alpha_bar_t;
        (
            self.alpha_bar_prev.sqrt() * self.beta() / one_minus,
            self.alpha().sqrt() * (1.0 - self.alpha_bar_prev) / one_minus,
        )
    }
}

pub(crate) fn check_batch(x: &Tensor, t: &[usize]) -> Result<()> {
    let b = batch_size(x)?;
    if b != t.len() {
        bail!("diffusion: {} timesteps for a batch of {b}", t.len())
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn linear() -> NoiseSchedule {
        NoiseSchedule::new(BetaSchedule::DDPM_LINEAR, 1000).unwrap()
    }

    #[test]
    fn linear_endpoints_and_alpha_bar() {
        let s = linear();
        assert_eq!(s.betas()[0], 1e-4);
        assert_eq!(s.betas()[999], 0.02);
        assert!((s.betas()[500] - (1e-4 + 500.0 * (0.02 - 1e-4) / 999.0)).abs() < 1e-15);
        assert!((s.alpha_bar(0).unwrap() - (1.0 - 1e-4)).abs() < 1e-15);
        let log_sum: f64 = s.betas().iter().map(|b| (1.0 - b).ln()).sum();
        let end = s.alpha_bar(999).unwrap();
        assert!((end - log_sum.exp()).abs() < 1e-12);
        // The well-known terminal alpha_bar of DDPM's schedule, ~4.04e-5 (SNR close to 0).
        assert!((end - 4.04e-5).abs() < 0.01e-5, "{end}");
        assert!(s.alpha_bar(1000).is_err());
    }

    #[test]
    fn cosine_follows_eq_17_until_the_cap() {
        let s = NoiseSchedule::new(BetaSchedule::Cosine, 1000).unwrap();
        let f0 = cosine_alpha_bar(0.0);
        for t in [0usize, 1, 10, 250, 500, 900, 980] {
            let expected = cosine_alpha_bar((t + 1) as f64 / 1000.0) / f0;
            let got = s.alpha_bar(t).unwrap();
            assert!((got - expected).abs() < 1e-12, "t={t}: {got} vs {expected}");
        }
        assert_eq!(s.betas()[999], COSINE_MAX_BETA);
        assert!(s.betas().windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn bad_betas_are_rejected() {
        assert!(NoiseSchedule::from_betas(vec![]).is_err());
        assert!(NoiseSchedule::from_betas(vec![0.1, 0.0]).is_err());
        assert!(NoiseSchedule::from_betas(vec![0.1, 1.5]).is_err());
        assert!(NoiseSchedule::from_betas(vec![f64::NAN]).is_err());
        assert!(BetaSchedule::Cosine.betas(0).is_err());
    }

    #[test]
    fn q_sample_has_the_marginal_mean_and_variance() {
        // Eq. 4: x_t ~ N(sqrt(alpha_bar) x_0, (1 - alpha_bar)); check over 2 x 20000 draws.
        use rand::SeedableRng;
        let s = linear();
        let n = 20_000;
        let x0 = Tensor::full(0.5f64, (2, n), &Device::Cpu).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let noise =
            crate::noise::gaussian_noise(&[2, n], DType::F64, &Device::Cpu, &mut rng).unwrap();
        let t = [100usize, 700];
        let x_t = s.add_noise(&x0, &noise, &t).unwrap();
        for (row, &ti) in t.iter().enumerate() {
            let v: Vec<f64> = x_t.get(row).unwrap().to_vec1().unwrap();
            let mean = v.iter().sum::<f64>() / n as f64;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            let ab = s.alpha_bar(ti).unwrap();
            let se_mean = ((1.0 - ab) / n as f64).sqrt();
            let se_var = (1.0 - ab) * (2.0 / n as f64).sqrt();
            assert!(
                (mean - 0.5 * ab.sqrt()).abs() < 5.0 * se_mean,
                "t={ti} mean {mean}"
            );
            assert!((var - (1.0 - ab)).abs() < 5.0 * se_var, "t={ti} var {var}");
        }
    }

    #[test]
    fn posterior_matches_ddpm_eq_7() {
        let s = linear();
        for t in [1usize, 10, 500, 999] {
            let tr = s.training_transition(t).unwrap();
            let (ab, ab_prev, beta) = (
                s.alpha_bar(t).unwrap(),
                s.alpha_bar(t - 1).unwrap(),
                s.betas()[t],
            );
            assert!((tr.beta() - beta).abs() < 1e-12);
            assert!((tr.posterior_variance() - (1.0 - ab_prev) / (1.0 - ab) * beta).abs() < 1e-15);
            // With no noise x_t = sqrt(ab) x_0, and the posterior mean must be sqrt(ab_prev) x_0.
            let (c0, ct) = tr.posterior_mean_coefs();
            assert!((c0 + ct * ab.sqrt() - ab_prev.sqrt()).abs() < 1e-12);
        }
        // t = 0 goes to x_0 itself; its log variance is clipped to t = 1's.
        let tr0 = s.training_transition(0).unwrap();
        assert_eq!(tr0.posterior_mean_coefs().1, 0.0);
        assert!((tr0.posterior_mean_coefs().0 - 1.0).abs() < 1e-12);
        assert_eq!(
            s.posterior_log_variance_clipped(0).unwrap(),
            s.posterior_log_variance_clipped(1).unwrap()
        );
        assert!(s.transition(10, Some(10)).is_err());
    }

    #[test]
    fn posterior_mean_tensor_agrees_with_coefficients() {
        let s = linear();
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[[1.0f64, -1.0], [0.5, 0.25]], &dev).unwrap();
        let x_t = Tensor::new(&[[0.3f64, 0.2], [-0.7, 2.0]], &dev).unwrap();
        let (mean, log_var) = s
            .q_posterior_mean_log_variance(&x0, &x_t, &[3, 800])
            .unwrap();
        let mean: Vec<Vec<f64>> = mean.to_vec2().unwrap();
        let (c0, ct) = s.training_transition(800).unwrap().posterior_mean_coefs();
        assert!((mean[1][1] - (c0 * 0.25 + ct * 2.0)).abs() < 1e-12);
        let lv: Vec<Vec<f64>> = log_var.to_vec2().unwrap();
        assert_eq!(lv[0][0], s.posterior_log_variance_clipped(3).unwrap());
        assert!(s.add_noise(&x0, &x_t, &[1]).is_err());
    }
}
