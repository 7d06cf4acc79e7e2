//! # ferrite-diffusion — Gaussian diffusion schedules, samplers and losses
//!
//! The pieces a diffusion model (e.g. `ferrite-dit`) needs around its denoiser, following
//! Ho et al. 2020 (DDPM), Song et al. 2021 (DDIM), Nichol & Dhariwal 2021 (improved DDPM) and
//! Peebles & Xie 2023 (DiT, which samples with improved-diffusion's code), with diffusers'
//! vocabulary. Timesteps are 0-based training indices `0..T`.
//!
//! | file | technique |
//! |---|---|
//! | [`schedule`] | linear / cosine betas, `q(x_t \| x_0)` (DDPM eq. 4), posterior (eq. 6-7), [`Transition`] |
//! | [`prediction`] | `eps` / `x_0` / `v` targets and conversions |
//! | [`ddpm`] | ancestral step, `fixed_small` / `fixed_large` / `learned_range` (improved DDPM eq. 15) |
//! | [`ddim`] | DDIM step with `eta` (DDIM eq. 12, 16) |
//! | [`respacing`] | `linspace` / `leading` / `trailing` timestep spacing; DDPM on a subset |
//! | [`scheduler`] | the one [`Scheduler`]: `set_timesteps`, `step`, `add_noise` |
//! | [`sampling`] | the one sampling loop, [`sample`] / [`sample_with_noise`] |
//! | [`losses`] | `L_simple`, normal KL, discretized Gaussian NLL, hybrid loss (improved DDPM eq. 16) |
//! | [`guidance`] | classifier-free guidance, DiT's doubled-batch form |
//! | [`noise`] | seeded Gaussian noise |
//!
//! ```
//! use ferrite_diffusion::*;
//! use candle_core::{Device, DType, Tensor};
//! use rand::SeedableRng;
//!
//! let schedule = NoiseSchedule::new(BetaSchedule::DDPM_LINEAR, 1000)?;
//! let mut sched = Scheduler::new(schedule, SamplerKind::Ddim { eta: 0.0 }, PredictionType::Epsilon);
//! sched.set_timesteps(10, TimestepSpacing::Leading)?;
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! let x_t = gaussian_noise(&[2, 1, 4, 4], DType::F32, &Device::Cpu, &mut rng)?;
//! // A "denoiser" that predicts zero noise; a real one is a network called with (x, t).
//! let x0 = sample(&sched, x_t, |x, _t| x.zeros_like(), &mut rng, None)?;
//! assert_eq!(x0.dims(), &[2, 1, 4, 4]);
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! Training: `x_t = schedule.add_noise(x0, noise, t)`, then
//! [`hybrid_loss`]`(schedule, model(x_t, t), x0, x_t, noise, t, prediction, learned_sigma,
//! HYBRID_VLB_WEIGHT)` returns `mse`, `vlb` and `total` (differentiable with candle autograd).

#![warn(missing_docs)]

mod coef;
pub mod ddim;
pub mod ddpm;
pub mod guidance;
pub mod losses;
pub mod noise;
pub mod prediction;
pub mod respacing;
pub mod sampling;
pub mod schedule;
pub mod scheduler;
#[cfg(test)]
mod testing;

pub use ddpm::VarianceType;
pub use guidance::{classifier_free_guidance, guide_doubled_batch, DIT_REFERENCE_GUIDED_CHANNELS};
pub use losses::{hybrid_loss, LossTerms, HYBRID_VLB_WEIGHT};
pub use noise::{gaussian_like, gaussian_noise};
pub use prediction::PredictionType;
pub use respacing::{spaced_timesteps, TimestepSpacing};
pub use sampling::{sample, sample_with_noise, Progress};
pub use schedule::{BetaSchedule, NoiseSchedule, Transition};
pub use scheduler::{SamplerKind, Scheduler, StepOutput};
