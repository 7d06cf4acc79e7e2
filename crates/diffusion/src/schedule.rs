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
