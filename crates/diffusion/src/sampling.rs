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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_abs_diff, small};
    use crate::{
        BetaSchedule, NoiseSchedule, PredictionType, SamplerKind, TimestepSpacing, VarianceType,
    };
    use rand::SeedableRng;
    use std::cell::RefCell;

    const X0: [f64; 8] = [0.3, -0.2, 0.9, 0.0, -0.7, 0.1, 0.5, -1.0];

    /// The exact denoiser for data that is the single point X0: eps(x, t) = (x - sqrt(ab) x0) / sqrt(1 - ab).
    fn oracle(s: &Scheduler) -> impl FnMut(&Tensor, usize) -> Result<Tensor> + '_ {
        move |x, t| {
            let ab = s.schedule().alpha_bar(t)?;
            x.sub(&small(X0).affine(ab.sqrt(), 0.0)?)?
                .affine(1.0 / (1.0 - ab).sqrt(), 0.0)
        }
    }

    #[test]
    fn every_sampler_recovers_a_point_mass_through_the_one_loop() {
        let sched = NoiseSchedule::new(BetaSchedule::DDPM_LINEAR, 1000).unwrap();
        let samplers = [
            SamplerKind::Ddpm {
                variance: VarianceType::FixedSmall,
            },
            SamplerKind::Ddpm {
                variance: VarianceType::FixedLarge,
            },
            SamplerKind::Ddim { eta: 0.0 },
            SamplerKind::Ddim { eta: 1.0 },
        ];
        for kind in samplers {
            let mut s = Scheduler::new(sched.clone(), kind, PredictionType::Epsilon);
            s.set_timesteps(50, TimestepSpacing::Trailing).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let x_t = crate::gaussian_like(&small(X0), &mut rng).unwrap();
            let seen = RefCell::new(Vec::new());
            let report = |done: usize, total: usize| seen.borrow_mut().push((done, total));
            let out = sample(&s, x_t, oracle(&s), &mut rng, Some(&report)).unwrap();
            assert!(max_abs_diff(&out, &small(X0)) < 1e-9, "{kind:?}");
            let seen = seen.into_inner();
            assert_eq!(seen.len(), 50);
            assert_eq!(seen[49], (50, 50));
        }
    }

    #[test]
    fn the_loop_visits_timesteps_in_order_and_draws_noise_only_when_needed() {
        let sched = NoiseSchedule::new(BetaSchedule::Cosine, 1000).unwrap();
        for (kind, draws) in [
            (
                SamplerKind::Ddpm {
                    variance: VarianceType::FixedSmall,
                },
                9,
            ),
            (SamplerKind::Ddim { eta: 0.0 }, 0),
            (SamplerKind::Ddim { eta: 0.5 }, 9),
        ] {
            let mut s = Scheduler::new(sched.clone(), kind, PredictionType::Epsilon);
            s.set_timesteps(10, TimestepSpacing::Linspace).unwrap();
            let mut visited = Vec::new();
            let mut noise_steps = Vec::new();
            sample_with_noise(
                &s,
                small(X0),
                |x, t| {
                    visited.push(t);
                    x.zeros_like()
                },
                |i, like| {
                    noise_steps.push(i);
                    like.zeros_like()
                },
                None,
            )
            .unwrap();
            assert_eq!(visited, s.timesteps());
            assert_eq!(noise_steps, (0..draws).collect::<Vec<_>>(), "{kind:?}");
        }
    }

    /// The exact denoiser for data uniform on {-0.9, 0.9} (posterior-weighted `x_0`), with its
    /// `eps` overestimated by 5%, so its `x_0` estimate overshoots [-1, 1] at high noise (as an
    /// under-trained network's does) and `clip_sample` fires.
    fn overconfident_two_point_denoiser(
        s: &Scheduler,
    ) -> impl FnMut(&Tensor, usize) -> Result<Tensor> + '_ {
        move |x, t| {
            let ab = s.schedule().alpha_bar(t)?;
            let xs = x.flatten_all()?.to_vec1::<f64>()?;
            let eps: Vec<f64> = xs
                .iter()
                .map(|&x| {
                    let logit = |p: f64| -(x - ab.sqrt() * p).powi(2) / (2.0 * (1.0 - ab));
                    let (a, b) = (logit(0.9), logit(-0.9));
                    let w = 1.0 / (1.0 + (b - a).exp());
                    let x0 = 0.9 * w - 0.9 * (1.0 - w);
                    1.05 * (x - ab.sqrt() * x0) / (1.0 - ab).sqrt()
                })
                .collect();
            Tensor::from_vec(eps, x.dims(), x.device())
        }
    }

    #[test]
    fn clipped_ddim_with_many_steps_stays_on_the_data() {
        // Regression: DDIM with `clip_sample` kept the model's unclipped eps, so every step
        // dropped sqrt(ab_prev) (x0 - clip(x0)) and 250 steps pushed samples onto the clip
        // boundary +-1 (the DiT checkpoint's DDIM-250 FID was 146 against DDPM's 46). Re-deriving
        // eps from the clipped x0 (improved-diffusion's ddim_sample) keeps them at +-0.9.
        let sched = NoiseSchedule::new(BetaSchedule::DDPM_LINEAR, 1000).unwrap();
        let worst_error = |steps: usize, rederive: bool| {
            let mut s = Scheduler::new(
                sched.clone(),
                SamplerKind::Ddim { eta: 0.0 },
                PredictionType::Epsilon,
            )
            .with_clip_sample(Some(1.0))
            .with_clipped_model_output(rederive);
            s.set_timesteps(steps, TimestepSpacing::Linspace).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(3);
            let x_t = crate::gaussian_noise(
                &[256, 1],
                candle_core::DType::F64,
                &candle_core::Device::Cpu,
                &mut rng,
            )
            .unwrap();
            let out = sample(
                &s,
                x_t,
                overconfident_two_point_denoiser(&s),
                &mut rng,
                None,
            )
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
            out.iter()
                .map(|x| (x.abs() - 0.9).abs())
                .fold(0.0, f64::max)
        };
        for steps in [50, 250, 1000] {
            let e = worst_error(steps, true);
            assert!(e < 0.02, "DDIM {steps} with re-derived eps: {e}");
        }
        // The old pairing fails at many steps (this would have caught the bug).
        assert!(worst_error(250, false) > 0.05);
    }

    #[test]
    fn a_denoiser_error_stops_the_loop() {
        let sched = NoiseSchedule::new(BetaSchedule::Cosine, 10).unwrap();
        let s = Scheduler::new(
            sched,
            SamplerKind::Ddim { eta: 0.0 },
            PredictionType::Epsilon,
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let r = sample(
            &s,
            small(X0),
            |_, _| candle_core::bail!("model failed"),
            &mut rng,
            None,
        );
        assert!(r.unwrap_err().to_string().contains("model failed"));
    }
}
