//! One scheduler type for every sampler (diffusers vocabulary: `set_timesteps`, `step`,
//! `add_noise`, `timestep_spacing`, `prediction_type`, `variance_type`, `clip_sample`).
//!
//! A [`Scheduler`] holds the training [`NoiseSchedule`], what the model predicts, which reverse
//! step to take ([`SamplerKind`]: DDPM ancestral, [`crate::ddpm`], or DDIM, [`crate::ddim`]) and
//! the visited timesteps ([`crate::respacing`]). [`Scheduler::step`] turns the model output at
//! `timesteps()[i]` into the sample at `timesteps()[i + 1]` (or the final `x_0` after the last).

use candle_core::{bail, Result, Tensor};

use crate::coef::batch_size;
use crate::ddim::{ddim_sigma, ddim_step};
use crate::ddpm::{ddpm_step, VarianceType};
use crate::prediction::PredictionType;
use crate::respacing::{spaced_timesteps, TimestepSpacing};
use crate::schedule::NoiseSchedule;

/// Which reverse step the scheduler takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerKind {
    /// DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) with the given reverse variance.
    Ddpm {
        /// `variance_type`.
        variance: VarianceType,
    },
    /// DDIM (Song et al. 2021, eq. 12) with noise scale `eta` (0 = deterministic).
    Ddim {
        /// `eta` of DDIM eq. 16.
        eta: f64,
    },
}

/// The output of one step, with the `x_0` estimate it used (diffusers `pred_original_sample`).
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// The sample at the previous timestep (diffusers `prev_sample`).
    pub prev_sample: Tensor,
    /// The model's `x_0` estimate after clipping.
    pub pred_original_sample: Tensor,
}

/// A sampler over a noise schedule: see the module docs.
#[derive(Debug, Clone)]
pub struct Scheduler {
    schedule: NoiseSchedule,
    prediction_type: PredictionType,
    sampler: SamplerKind,
    clip_sample: Option<f64>,
    use_clipped_model_output: bool,
    timesteps: Vec<usize>,
}

impl Scheduler {
    /// A scheduler visiting every training timestep `T - 1, ..., 0`, without clipping.
    pub fn new(
        schedule: NoiseSchedule,
        sampler: SamplerKind,
        prediction_type: PredictionType,
    ) -> Self {
        let timesteps = (0..schedule.num_train_timesteps()).rev().collect();
        Self {
            schedule,
            prediction_type,
            sampler,
            clip_sample: None,
            use_clipped_model_output: false,
            timesteps,
        }
    }

    /// Clamp the `x_0` estimate to `[-range, range]` before each step (diffusers `clip_sample` /
    /// `clip_sample_range`, improved-diffusion `clip_denoised` with range 1). `None` disables it.
    pub fn with_clip_sample(mut self, range: Option<f64>) -> Self {
        self.clip_sample = range;
        self
    }

    /// DDIM only: re-derive `eps` from the clipped `x_0` (diffusers `use_clipped_model_output`,
    /// improved-diffusion / DiT `ddim_sample`, which always does). Without it, a clipped `x_0`
    /// paired with the model's unclipped `eps` is no longer a decomposition of `x_t`: each step
    /// drops `sqrt(alpha_bar_prev) (x_0 - clip(x_0))` whatever its size, so the error grows with
    /// the number of steps. Off by default (diffusers' default); a no-op without `clip_sample`.
    pub fn with_clipped_model_output(mut self, on: bool) -> Self {
        self.use_clipped_model_output = on;
        self
    }

    /// Visit `n` timesteps spread by `spacing` (diffusers `set_timesteps`).
    pub fn set_timesteps(&mut self, n: usize, spacing: TimestepSpacing) -> Result<()> {
        self.timesteps = spaced_timesteps(self.schedule.num_train_timesteps(), n, spacing)?;
        Ok(())
    }

    /// Visit exactly these training timesteps (must be strictly descending and in range).
    pub fn set_custom_timesteps(&mut self, timesteps: Vec<usize>) -> Result<()> {
        if timesteps.is_empty() || timesteps.windows(2).any(|w| w[0] <= w[1]) {
            bail!("diffusion: custom timesteps must be non-empty and strictly descending")
        }
        self.schedule.alpha_bar(timesteps[0])?;
        self.timesteps = timesteps;
        Ok(())
    }

    /// The training timesteps visited, descending.
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// The training noise schedule.
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// What the model predicts.
    pub fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }

    /// Which reverse step is taken.
    pub fn sampler(&self) -> SamplerKind {
        self.sampler
    }

    /// The `x_0` clip range, if any.
    pub fn clip_sample(&self) -> Option<f64> {
        self.clip_sample
    }

    /// `NoiseSchedule::add_noise` (diffusers exposes it on the scheduler).
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: &[usize]) -> Result<Tensor> {
        self.schedule.add_noise(x0, noise, t)
    }

    /// The timestep visited after `timesteps()[i]` (`None` after the last).
    pub fn previous_timestep(&self, i: usize) -> Option<usize> {
        self.timesteps.get(i + 1).copied()
    }

    /// Whether step `i` draws noise (so callers know whether to pass it).
    pub fn step_needs_noise(&self, i: usize) -> bool {
        self.needs_noise_between(self.timesteps.get(i).copied(), self.previous_timestep(i))
    }

    fn needs_noise_between(&self, t: Option<usize>, prev: Option<usize>) -> bool {
        let (Some(t), Some(_)) = (t, prev) else {
            return false;
        };
        match self.sampler {
            SamplerKind::Ddpm { .. } => true,
            SamplerKind::Ddim { eta } => match self.schedule.transition(t, prev) {
                Ok(tr) => ddim_sigma(&tr, eta) > 0.0,
                Err(_) => false,
            },
        }
    }

    /// One reverse step from `timesteps()[i]` (diffusers `step(...).prev_sample`). `model_output`
    /// is `[B, C, ...]`, or `[B, 2C, ...]` with the variance channels second (used by
    /// `LearnedRange`, ignored otherwise). `noise` (like `sample`) is required when
    /// [`Self::step_needs_noise`] and ignored otherwise.
    pub fn step(
        &self,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        Ok(self
            .step_output(model_output, i, sample, noise)?
            .prev_sample)
    }

    /// [`Self::step`] returning the clipped `x_0` estimate too.
    pub fn step_output(
        &self,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let Some(&t) = self.timesteps.get(i) else {
            bail!(
                "diffusion: step index {i} out of range ({} timesteps)",
                self.timesteps.len()
            )
        };
        self.step_between(model_output, t, self.previous_timestep(i), sample, noise)
    }

    /// The reverse step between two arbitrary training timesteps `t > prev` (`None` = to `x_0`).
    pub fn step_between(
        &self,
        model_output: &Tensor,
        t: usize,
        prev: Option<usize>,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let tr = self.schedule.transition(t, prev)?;
        let (prediction, variance_values) = split_variance_channels(model_output, sample)?;
        let b = batch_size(sample)?;
        let alpha_bars = vec![tr.alpha_bar_t; b];
        let (x0, eps) = self
            .prediction_type
            .to_x0_and_eps(&prediction, sample, &alpha_bars)?;
        let (x0, eps) = match self.clip_sample {
            Some(r) if self.use_clipped_model_output => {
                let x0 = x0.clamp(-r, r)?;
                let eps = PredictionType::eps_from_x0(&x0, sample, &alpha_bars)?;
                (x0, eps)
            }
            Some(r) => (x0.clamp(-r, r)?, eps),
            None => (x0, eps),
        };
        let noise = if self.needs_noise_between(Some(t), prev) {
            match noise {
                Some(z) if z.dims() == sample.dims() => Some(z),
                Some(z) => bail!(
                    "diffusion: noise of shape {:?} for a sample of shape {:?}",
                    z.dims(),
                    sample.dims()
                ),
                None => bail!("diffusion: step at timestep {t} needs noise"),
            }
        } else {
            None
        };
        let prev_sample = match self.sampler {
            SamplerKind::Ddpm { variance } => ddpm_step(
                &tr,
                &x0,
                sample,
                variance,
                variance_values.as_ref(),
                noise,
                prev.is_none(),
            )?,
            SamplerKind::Ddim { eta } => ddim_step(&tr, &x0, &eps, eta, noise)?,
        };
        Ok(StepOutput {
            prev_sample,
            pred_original_sample: x0,
        })
    }
}

/// Splits a `[B, 2C, ...]` output into `(prediction, variance values)`; a `[B, C, ...]` output
/// is returned whole.
pub fn split_variance_channels(
    model_output: &Tensor,
    sample: &Tensor,
) -> Result<(Tensor, Option<Tensor>)> {
    let (out, s) = (model_output.dims(), sample.dims());
    if out.len() < 2 || out.len() != s.len() || out[0] != s[0] || out[2..] != s[2..] {
        bail!("diffusion: model output {out:?} does not match sample {s:?}")
    }
    let c = s[1];
    if out[1] == c {
        Ok((model_output.clone(), None))
    } else if out[1] == 2 * c {
        Ok((
            model_output.narrow(1, 0, c)?,
            Some(model_output.narrow(1, c, c)?),
        ))
    } else {
        bail!(
            "diffusion: model output has {} channels for a {c}-channel sample (need {c} or {})",
            out[1],
            2 * c
        )
    }
}
