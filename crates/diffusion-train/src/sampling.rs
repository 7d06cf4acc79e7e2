//! Class-conditional sampling from a trained checkpoint: the DiT (EMA weights by default, as
//! DiT samples) as the denoiser of `ferrite-diffusion`'s one sampling loop, with DDPM or DDIM
//! steps over any respacing and optional classifier-free guidance (Ho & Salimans 2022, eq. 6;
//! DiT `forward_with_cfg`, here on the ε channels).

use crate::checkpoint::Checkpoint;
use crate::hand_forward::HandForward;
use crate::sample_shards::SampleShards;
use crate::seeded::{rng, Stream};
use crate::train::{training_schedule, TrainState};
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use ferrite_diffusion::{
    gaussian_noise, sample, PredictionType, SamplerKind, Scheduler, TimestepSpacing, VarianceType,
};
use ferrite_dit::text_condition::{conditions_for_labels, TextEmbedder};
use ferrite_dit::{Condition, DiT, DitConfig, GuidedChannels};
use std::path::Path;

/// Which reverse process (diffusers scheduler names).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplerName {
    /// Ancestral DDPM (Ho et al. 2020, Algorithm 2), variance `beta_tilde` (`fixed_small`).
    Ddpm,
    /// DDIM (Song et al. 2021, eq. 12).
    Ddim,
}

/// How to sample (the flags of `ferrite diffusion sample` / `eval`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SamplerOptions {
    /// DDPM or DDIM.
    pub sampler: SamplerName,
    /// Visited timesteps (`num_inference_steps`).
    pub steps: usize,
    /// DDIM `eta` (0 = deterministic; ignored by DDPM).
    pub eta: f64,
    /// `timestep_spacing`: linspace, leading or trailing.
    pub spacing: String,
    /// Classifier-free guidance scale `s` (1 = no guidance).
    pub guidance_scale: f64,
    /// Clip the `x_0` estimate to [-1, 1] at every step (diffusers' and improved-diffusion's
    /// image default); off, the sampler follows the model's estimate as DiT's own sampling does
    /// (`clip_denoised=False`).
    pub clip_sample: bool,
}

impl SamplerOptions {
    /// The scheduler over a `T`-step linear training schedule, clipping `x_0` to [-1, 1] when
    /// [`SamplerOptions::clip_sample`] (diffusers' and improved-diffusion's default for images);
    /// DDIM then takes its `eps` from the clipped `x_0`, as improved-diffusion's `ddim_sample`
    /// does.
    pub fn scheduler(&self, num_train_timesteps: usize) -> Result<Scheduler> {
        ensure!(self.steps >= 1, "--steps must be at least 1");
        ensure!(
            self.steps <= num_train_timesteps,
            "--steps {} exceeds the {num_train_timesteps} training timesteps",
            self.steps
        );
        ensure!(
            self.eta.is_finite() && self.eta >= 0.0,
            "--eta must be a non-negative number"
        );
        ensure!(
            self.guidance_scale.is_finite(),
            "--guidance-scale must be a finite number"
        );
        let Some(spacing) = TimestepSpacing::parse(&self.spacing) else {
            bail!(
                "unknown --spacing `{}` (expected linspace, leading or trailing)",
                self.spacing
            )
        };
        let kind = match self.sampler {
            SamplerName::Ddpm => SamplerKind::Ddpm {
                variance: VarianceType::FixedSmall,
            },
            SamplerName::Ddim => SamplerKind::Ddim { eta: self.eta },
        };
        let schedule = training_schedule(num_train_timesteps)?;
        // DDIM re-derives eps from the clipped x_0 (improved-diffusion `ddim_sample`): pairing
        // the clipped x_0 with the model's raw eps loses sqrt(alpha_bar_prev) (x_0 - clip(x_0))
        // at every step, which made DDIM-250 the worst sampler (FID 146 vs 43 re-derived).
        let mut s = Scheduler::new(schedule, kind, PredictionType::Epsilon)
            .with_clip_sample(self.clip_sample.then_some(1.0))
            .with_clipped_model_output(true);
        s.set_timesteps(self.steps, spacing)?;
        Ok(s)
    }

    /// A short label such as `ddim-50 s=4`.
    pub fn label(&self) -> String {
        let name = match self.sampler {
            SamplerName::Ddpm => "DDPM",
            SamplerName::Ddim => "DDIM",
        };
        let mut label = format!("{name} {}", self.steps);
        if self.guidance_scale != 1.0 {
            label += &format!(" s={}", self.guidance_scale);
        }
        if !self.clip_sample {
            label += " no-clip";
        }
        label
    }
}

/// A DiT loaded from a training checkpoint.
pub struct LoadedModel {
    /// The network.
    pub model: DiT,
    /// Its training state (configuration, step, losses).
    pub state: TrainState,
    /// A text-conditioned model's caption embedder and class-name table.
    pub text: Option<(TextEmbedder, Tensor)>,
    /// The same weights for the hand-written forward, where it covers the design.
    pub hand: Option<HandForward>,
}

impl LoadedModel {
    /// The per-class condition table of a text-conditioned model (`None`: class ids).
    pub fn class_table(&self) -> Option<&Tensor> {
        self.text.as_ref().map(|(_, table)| table)
    }

    /// The conditions `[K, L, width]` of `captions` for a text-conditioned model.
    pub fn caption_table(&self, captions: &[&str]) -> Result<Tensor> {
        let (Some((embedder, _)), Some(text)) = (&self.text, &self.state.config.text) else {
            bail!("this checkpoint conditions on class ids: --caption needs a model trained with --text-model")
        };
        embedder.embed_batch(captions, text.pooling()?)
    }
}

/// Loads the EMA (`ema = true`) or raw weights of a checkpoint.
pub fn load_model(path: &Path, ema: bool) -> Result<LoadedModel> {
    let ck = Checkpoint::load(path)?;
    let state: TrainState = serde_json::from_value(ck.state.clone())
        .with_context(|| format!("{} holds no training state", path.display()))?;
    let group = ck.group(if ema { "ema" } else { "model" })?.clone();
    // Where the hand-written forward does not cover the design, candle's alone serves.
    let hand = HandForward::new(&state.config.dit, &group).ok();
    let vb = VarBuilder::from_tensors(group, DType::F32, &Device::Cpu);
    let model = DiT::new(&state.config.dit, vb)
        .with_context(|| format!("building the DiT of {}", path.display()))?;
    let text = state
        .config
        .text
        .as_ref()
        .map(|t| t.class_table())
        .transpose()?;
    Ok(LoadedModel {
        model,
        state,
        text,
        hand,
    })
}

/// `per_class` labels of each of `classes` classes, class-major (grid rows).
pub fn class_major_labels(classes: usize, per_class: usize) -> Vec<u32> {
    (0..classes as u32)
        .flat_map(|c| std::iter::repeat(c).take(per_class))
        .collect()
}

/// Samples one image per label, in batches of `batch`; batch `k` draws its noise from
/// `seeded::rng(seed, Sampling, k)`. Returns `[N, C, H, W]` in [-1, 1]. `on_step` is called
/// after every denoising step of every batch. With a `table` `[K, L, width]` (a text-conditioned
/// model: class names or captions) label `i` stands for row `i` of it, fed as a sequence
/// condition; otherwise labels are class ids, and with `hand` the network runs through the
/// hand-written forward (same numbers to float rounding, faster) instead of candle's. With
/// `shards`, batches finished by an earlier run are loaded from it and new ones saved to it.
#[allow(clippy::too_many_arguments)]
pub fn sample_labels(
    model: &DiT,
    mut hand: Option<&mut HandForward>,
    shards: Option<&SampleShards>,
    opts: &SamplerOptions,
    num_train_timesteps: usize,
    labels: &[u32],
    table: Option<&Tensor>,
    batch: usize,
    seed: u64,
    on_step: &dyn Fn(),
) -> Result<Tensor> {
    let cfg: &DitConfig = model.config();
    let scheduler = opts.scheduler(num_train_timesteps)?;
    if opts.guidance_scale != 1.0 && !cfg.has_null_class() {
        bail!("--guidance-scale needs a model trained with label dropout (class_dropout_prob > 0)");
    }
    let (n, what) = match table {
        Some(t) => (t.dim(0)?, "captions"),
        None => (cfg.num_classes, "classes"),
    };
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= n) {
        bail!("condition {bad} is outside the {n} {what}");
    }
    let dev = Device::Cpu;
    let shape = [0, cfg.in_channels, cfg.input_size, cfg.input_size];
    let mut out = Vec::new();
    for (k, chunk) in labels.chunks(batch.max(1)).enumerate() {
        let b = chunk.len();
        if let Some(x) = shards.map(|s| s.load(k, b)).transpose()?.flatten() {
            (0..scheduler.timesteps().len()).for_each(|_| on_step());
            out.push(x);
            continue;
        }
        let y = Tensor::new(chunk, &dev)?;
        let text = table.map(|t| conditions_for_labels(t, &y)).transpose()?;
        let condition = match &text {
            Some(s) => Condition::Sequence(s),
            None => Condition::Labels(&y),
        };
        let mut r = rng(seed, Stream::Sampling, k as u64);
        let x_t = gaussian_noise(&[b, shape[1], shape[2], shape[3]], DType::F32, &dev, &mut r)?;
        let mut hand = hand.as_deref_mut().filter(|_| table.is_none());
        let denoise = |x: &Tensor, t: usize| -> candle_core::Result<Tensor> {
            if let Some(h) = hand.as_deref_mut() {
                return h
                    .predict(x, t, chunk, opts.guidance_scale)
                    .map_err(candle_core::Error::wrap);
            }
            let tt = Tensor::full(t as f32, b, &dev)?;
            if opts.guidance_scale == 1.0 {
                model.forward_with_drop(x, &tt, condition, None)
            } else {
                model.forward_guided(x, &tt, condition, opts.guidance_scale, GuidedChannels::Eps)
            }
        };
        let step = |_: usize, _: usize| on_step();
        let x = sample(&scheduler, x_t, denoise, &mut r, Some(&step))?;
        if let Some(s) = shards {
            s.save(k, &x)?;
        }
        out.push(x);
    }
    let x = Tensor::cat(&out, 0)?;
    let v = x.flatten_all()?.to_vec1::<f32>()?;
    ensure!(
        v.iter().all(|p| p.is_finite()),
        "sampling produced NaN or infinity"
    );
    Ok(x.clamp(-1f32, 1f32)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_clip_turns_the_x0_clipping_off() -> Result<()> {
        let mut opts = SamplerOptions {
            sampler: SamplerName::Ddim,
            steps: 10,
            eta: 0.0,
            spacing: "linspace".into(),
            guidance_scale: 1.0,
            clip_sample: true,
        };
        assert_eq!(opts.scheduler(1000)?.clip_sample(), Some(1.0));
        assert_eq!(opts.label(), "DDIM 10");
        opts.clip_sample = false;
        assert_eq!(opts.scheduler(1000)?.clip_sample(), None);
        assert_eq!(opts.label(), "DDIM 10 no-clip");
        Ok(())
    }
}
