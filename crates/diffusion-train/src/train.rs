//! The DiT training loop (Peebles & Xie 2023, §4 "Training"; DDPM Algorithm 1, Ho et al. 2020):
//!
//! ```text
//! x_0 ~ data, y its label (replaced by the null label with p = class_dropout_prob, for
//! classifier-free guidance, Ho & Salimans 2022 Algorithm 1), t ~ U{0..T-1}, ε ~ N(0, I)
//! x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε                 (DDPM eq. 4)
//! loss = ‖ε - ε_θ(x_t, t, y)‖²  (+ λ L_vlb with learned Σ)  (DDPM eq. 14 / Improved DDPM §3.1)
//! θ ← AdamW(θ, ∇loss);  θ_ema ← d θ_ema + (1 - d) θ
//! ```
//!
//! Written out once, as nanoGPT does. Every random draw of step `s` comes from
//! `seeded::rng(seed, TrainStep, s)` and the data order from one seeded permutation per epoch,
//! so the state needed to resume is exactly what a [`Checkpoint`] holds: model, EMA, AdamW
//! moments, and the step (plus the loss log) — a resumed run repeats the uninterrupted run.

use crate::adamw::{AdamW, AdamWParams};
use crate::checkpoint::Checkpoint;
use crate::ema::Ema;
use crate::fashion_mnist::Dataset;
use crate::flat_vars::FlatVars;
use crate::seeded::{permutation, rng, Stream};
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use ferrite_diffusion::{
    gaussian_noise, hybrid_loss, BetaSchedule, NoiseSchedule, PredictionType, HYBRID_VLB_WEIGHT,
};
use ferrite_dit::backprop::{self, DitBackprop, TrainBatch};
use ferrite_dit::init::seeded_var_builder;
use ferrite_dit::text_condition::{conditions_for_labels, Pooling, TextEmbedder};
use ferrite_dit::{Condition, DiT, DitConfig};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything that defines a training run (stored in its checkpoints).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    /// The model.
    pub dit: DitConfig,
    /// Training steps in total.
    pub steps: u64,
    /// Images per step.
    pub batch_size: usize,
    /// AdamW hyper-parameters (peak learning rate in `lr`).
    pub optimizer: AdamWParams,
    /// Linear learning-rate warm-up over this many steps (0 = none, as DiT).
    pub warmup_steps: u64,
    /// EMA decay `d`.
    pub ema_decay: f64,
    /// Diffusion steps `T` of the linear DDPM schedule.
    pub num_train_timesteps: usize,
    /// Seed of the initialisation, data order and noise.
    pub seed: u64,
    /// Use only the first `n` training images (quick runs and tests).
    pub train_images: Option<usize>,
    /// Condition on the class *names*, embedded as text, instead of on class ids.
    #[serde(default)]
    pub text: Option<TextConditioning>,
}

/// Text conditions instead of class ids (DiT §3.2: the cross-attention path, carried from class
/// embeddings to captions): each image is conditioned on its class name embedded by a language
/// model's token embeddings ([`ferrite_dit::text_condition`]) and passed as
/// [`Condition::Sequence`], so the trained model can be sampled from any caption. Classifier-free
/// guidance drops a sample's caption to the learned null token, as it drops a label.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TextConditioning {
    /// GGUF or safetensors llama-family model whose tokenizer and token embeddings embed captions.
    pub model: PathBuf,
    /// `mean` (one vector per caption) or `tokens` (the token sequence, padded).
    pub pooling: String,
}

impl TextConditioning {
    /// The pooling named by [`TextConditioning::pooling`].
    pub fn pooling(&self) -> Result<Pooling> {
        match self.pooling.as_str() {
            "mean" => Ok(Pooling::Mean),
            "tokens" => Ok(Pooling::Tokens),
            other => bail!("unknown text pooling `{other}` (expected mean or tokens)"),
        }
    }

    /// The embedder and the per-class table `[10, L, width]` of the Fashion-MNIST class names.
    pub fn class_table(&self) -> Result<(TextEmbedder, Tensor)> {
        let embedder = TextEmbedder::load(&self.model)?;
        let table = embedder.fashion_mnist_classes(self.pooling()?)?;
        Ok((embedder, table))
    }
}

impl TrainConfig {
    /// Our CPU recipe for a DiT configuration; see docs/diffusion.md for why each value.
    pub fn cpu_recipe(dit: DitConfig, steps: u64) -> Self {
        Self {
            dit,
            steps,
            batch_size: 32,
            optimizer: AdamWParams {
                lr: 1e-3,
                ..AdamWParams::default()
            },
            warmup_steps: 200,
            ema_decay: 0.999,
            num_train_timesteps: 1000,
            seed: 0,
            train_images: None,
            text: None,
        }
    }
}

/// The mutable progress of a run, checkpointed next to the tensors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// The run's configuration.
    pub config: TrainConfig,
    /// Steps completed.
    pub step: u64,
    /// Loss of every completed step.
    pub losses: Vec<f32>,
    /// Seconds spent training, summed over sessions.
    pub train_seconds: f64,
}

/// A DiT with its optimizer, EMA and training state.
pub struct Trainer {
    /// The model (its weights live in `varmap`).
    pub model: DiT,
    varmap: VarMap,
    opt: AdamW,
    ema: Ema,
    schedule: NoiseSchedule,
    /// Progress so far.
    pub state: TrainState,
    order: Option<(u64, Vec<usize>)>,
    /// The class-name table `[classes, L, width]` of a text-conditioned run.
    class_text: Option<Tensor>,
    /// The hand-written backward ([`ferrite_dit::backprop`]) where it covers the model;
    /// `None` trains under candle's autograd.
    backprop: Option<DitBackprop>,
    /// The model's variables as one flat vector (the hand-written step's weights).
    vars: FlatVars,
    /// The variables' values as the hand-written step last wrote them (read on first use).
    weights: Option<Vec<f32>>,
    /// Whether `weights` is newer than the variables (synced by [`Trainer::sync_vars`]).
    vars_behind: bool,
    /// Wall-clock seconds of each step [`Trainer::run`] took in this session (checkpoint
    /// writes excluded).
    pub step_seconds: Vec<f64>,
}

fn named_vars(map: &VarMap) -> Vec<(String, Var)> {
    let data = map.data().lock().expect("var map");
    let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// An error when the loss of `step` is not finite.
fn ensure_finite(loss: f32, step: u64) -> Result<()> {
    if !loss.is_finite() {
        bail!("loss is {loss} at step {step}: training diverged (lower --lr)");
    }
    Ok(())
}

/// The DDPM linear schedule with `t` steps.
pub fn training_schedule(t: usize) -> Result<NoiseSchedule> {
    Ok(NoiseSchedule::new(BetaSchedule::DDPM_LINEAR, t)?)
}

impl Trainer {
    /// A fresh run: seeded initialisation, zero moments, EMA at the initial weights.
    pub fn new(config: TrainConfig) -> Result<Self> {
        ensure!(config.batch_size > 0, "batch size must be positive");
        ensure!(config.steps > 0, "steps must be positive");
        ensure!(
            config.optimizer.lr > 0.0 && config.optimizer.lr.is_finite(),
            "learning rate must be positive"
        );
        ensure!(
            (0.0..1.0).contains(&config.ema_decay),
            "EMA decay {} is outside [0, 1)",
            config.ema_decay
        );
        let mut config = config;
        let class_text = match &config.text {
            Some(text) => {
                let (embedder, table) = text.class_table()?;
                config.dit.cond_dim = Some(embedder.width());
                ensure!(
                    table.dim(0)? == config.dit.num_classes,
                    "{} class names for a model of {} classes",
                    table.dim(0)?,
                    config.dit.num_classes
                );
                Some(table)
            }
            None => None,
        };
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, config.seed, DType::F32, &dev);
        let model = DiT::new(&config.dit, vb)?;
        let opt = AdamW::new(named_vars(&varmap), config.optimizer)?;
        let ema = Ema::new(named_vars(&varmap), config.ema_decay)?;
        let schedule = training_schedule(config.num_train_timesteps)?;
        let vars = FlatVars::new(named_vars(&varmap))?;
        let backprop = if class_text.is_none() && backprop::supports(&config.dit).is_ok() {
            Some(DitBackprop::new(&config.dit, vars.layout())?)
        } else {
            None
        };
        Ok(Self {
            model,
            varmap,
            opt,
            ema,
            schedule,
            state: TrainState {
                config,
                step: 0,
                losses: Vec::new(),
                train_seconds: 0.0,
            },
            order: None,
            class_text,
            backprop,
            vars,
            weights: None,
            vars_behind: false,
            step_seconds: Vec::new(),
        })
    }

    /// Trains under candle's autograd even where the hand-written backward covers the model
    /// (the two give the same gradients to float rounding; this is for comparing them).
    pub fn use_autograd(&mut self) -> Result<()> {
        self.sync_vars()?;
        self.weights = None;
        self.backprop = None;
        Ok(())
    }

    /// Images per second over this session's steps after the first `warmup` (step time only,
    /// as a benchmark loop measures it); `None` when there are no such steps.
    pub fn steady_images_per_sec(&self, warmup: usize) -> Option<f64> {
        let steady = self.step_seconds.get(warmup..).filter(|s| !s.is_empty())?;
        Some((steady.len() * self.state.config.batch_size) as f64 / steady.iter().sum::<f64>())
    }

    /// Whether steps run the hand-written backward.
    pub fn uses_hand_written_backward(&self) -> bool {
        self.backprop.is_some()
    }

    /// Continues the run saved in `path`; `steps` (if given) replaces the total step count.
    pub fn resume(path: &Path, steps: Option<u64>) -> Result<Self> {
        let ck = Checkpoint::load(path)?;
        let mut state: TrainState = serde_json::from_value(ck.state.clone())
            .with_context(|| format!("{} holds no training state", path.display()))?;
        if let Some(s) = steps {
            state.config.steps = s;
        }
        let mut t = Self::new(state.config.clone())?;
        for (name, var) in named_vars(&t.varmap) {
            let src = ck
                .group("model")?
                .get(&name)
                .with_context(|| format!("checkpoint lacks model weight {name}"))?;
            ensure!(
                src.dims() == var.dims(),
                "checkpoint weight {name} has shape {:?}, the model {:?}",
                src.dims(),
                var.dims()
            );
            var.set(src)?;
        }
        t.weights = None;
        t.ema.load(ck.group("ema")?)?;
        t.opt.load_state(ck.group("opt")?, state.step)?;
        t.state = state;
        Ok(t)
    }

    /// The current (raw) weights by name.
    pub fn model_tensors(&self) -> HashMap<String, Tensor> {
        if let (Some(w), true) = (&self.weights, self.vars_behind) {
            return self.vars.tensors(w, "").into_iter().collect();
        }
        named_vars(&self.varmap)
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect()
    }

    /// Writes the hand-written steps' flat weights into the model's variables if they are
    /// behind (done at the end of [`Trainer::run`], so `model` is current after it).
    fn sync_vars(&mut self) -> Result<()> {
        if let (Some(w), true) = (&self.weights, self.vars_behind) {
            self.vars.write(w)?;
        }
        self.vars_behind = false;
        Ok(())
    }

    /// The EMA weights by name.
    pub fn ema_tensors(&self) -> HashMap<String, Tensor> {
        self.ema.tensors()
    }

    /// Writes model, EMA, optimizer moments and state to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        Checkpoint {
            groups: HashMap::from([
                ("model".to_string(), self.model_tensors()),
                ("ema".to_string(), self.ema.tensors()),
                (
                    "opt".to_string(),
                    self.opt.state_tensors().into_iter().collect(),
                ),
            ]),
            state: serde_json::to_value(&self.state)?,
        }
        .save(path)
    }

    /// The image indices of step `step`: epoch `e = step / (N / B)` visits the seeded
    /// permutation `e` in batches (the last partial batch of an epoch is skipped).
    fn batch_indices(&mut self, step: u64, n: usize) -> Result<Vec<usize>> {
        let b = self.state.config.batch_size;
        ensure!(
            n >= b,
            "{n} training images are fewer than one batch of {b}"
        );
        let per_epoch = (n / b) as u64;
        let epoch = step / per_epoch;
        if self.order.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let p = permutation(
                &mut rng(self.state.config.seed, Stream::DataOrder, epoch),
                n,
            );
            self.order = Some((epoch, p));
        }
        let within = (step % per_epoch) as usize;
        Ok(self.order.as_ref().expect("order").1[within * b..(within + 1) * b].to_vec())
    }

    /// One optimisation step on `data`; returns its loss. (The model's variables may lag the
    /// hand-written path's flat weights until [`Trainer::run`] ends.)
    fn step(&mut self, data: &Dataset) -> Result<f32> {
        let cfg = self.state.config.clone();
        let step = self.state.step;
        let n = cfg.train_images.map_or(data.len(), |m| m.min(data.len()));
        let idx = self.batch_indices(step, n)?;
        let dev = Device::Cpu;
        let (x0, y) = data.batch(&idx, cfg.dit.input_size, &dev)?;
        let mut r = rng(cfg.seed, Stream::TrainStep, step);
        let b = idx.len();
        let t: Vec<usize> = (0..b)
            .map(|_| r.gen_range(0..cfg.num_train_timesteps))
            .collect();
        let drop: Vec<bool> = (0..b)
            .map(|_| r.gen_bool(cfg.dit.class_dropout_prob))
            .collect();
        let noise = gaussian_noise(x0.dims(), DType::F32, &dev, &mut r)?;
        let x_t = self.schedule.add_noise(&x0, &noise, &t)?;
        let t_tensor = Tensor::from_vec(t.iter().map(|&v| v as f32).collect(), b, &dev)?;
        let text = self
            .class_text
            .as_ref()
            .map(|table| conditions_for_labels(table, &y))
            .transpose()?;
        let condition = match &text {
            Some(s) => Condition::Sequence(s),
            None => Condition::Labels(&y),
        };
        let warm = if cfg.warmup_steps == 0 {
            1.0
        } else {
            ((step + 1) as f64 / cfg.warmup_steps as f64).min(1.0)
        };
        self.opt.params.lr = cfg.optimizer.lr * warm;
        let loss_value = if self.backprop.is_some() {
            self.hand_written_step(&x_t, &noise, &t, &y, &drop)?
        } else {
            let out = self
                .model
                .forward_with_drop(&x_t, &t_tensor, condition, Some(&drop))?;
            let loss = hybrid_loss(
                &self.schedule,
                &out,
                &x0,
                &x_t,
                &noise,
                &t,
                PredictionType::Epsilon,
                cfg.dit.learn_sigma,
                HYBRID_VLB_WEIGHT,
            )?
            .total;
            let loss_value = loss.to_scalar::<f32>()?;
            ensure_finite(loss_value, step)?;
            self.opt.step(&loss.backward()?)?;
            self.ema.update(step)?;
            loss_value
        };
        self.state.step += 1;
        self.state.losses.push(loss_value);
        Ok(loss_value)
    }

    /// Loss and AdamW update of one step through [`DitBackprop`] (ε-prediction, fixed Σ: the
    /// loss is `L_simple`, as `hybrid_loss` gives without learned Σ), then the EMA update.
    fn hand_written_step(
        &mut self,
        x_t: &Tensor,
        noise: &Tensor,
        t: &[usize],
        y: &Tensor,
        drop: &[bool],
    ) -> Result<f32> {
        let null = self.state.config.dit.num_classes as u32;
        let labels: Vec<u32> = y
            .to_vec1::<u32>()?
            .into_iter()
            .zip(drop)
            .map(|(y, &d)| if d { null } else { y })
            .collect();
        let x_t = x_t.flatten_all()?.to_vec1::<f32>()?;
        let noise = noise.flatten_all()?.to_vec1::<f32>()?;
        let t: Vec<f32> = t.iter().map(|&v| v as f32).collect();
        if self.weights.is_none() {
            self.weights = Some(self.vars.read()?);
        }
        let weights = self.weights.as_mut().expect("weights were just read");
        let bp = self.backprop.as_mut().expect("hand-written backward");
        let batch = TrainBatch {
            x_t: &x_t,
            t: &t,
            labels: &labels,
            target: &noise,
        };
        let (loss, grads) = bp.loss_and_gradients(weights, batch)?;
        ensure_finite(loss, self.state.step)?;
        self.opt.step_flat(weights, grads.values)?;
        self.vars_behind = true;
        self.ema.update_from(self.state.step, weights)?;
        Ok(loss)
    }

    /// Trains until `config.steps`, checkpointing to `checkpoint` every `every` steps and at
    /// the end; the bar shows the loss (mean of the last 50 steps) and images/s. The model's
    /// variables are current when it returns, also after an error.
    pub fn run(
        &mut self,
        data: &Dataset,
        checkpoint: Option<&Path>,
        every: u64,
        bar: &indicatif::ProgressBar,
    ) -> Result<()> {
        let result = self.run_steps(data, checkpoint, every, bar);
        self.sync_vars()?;
        result
    }

    fn run_steps(
        &mut self,
        data: &Dataset,
        checkpoint: Option<&Path>,
        every: u64,
        bar: &indicatif::ProgressBar,
    ) -> Result<()> {
        let total = self.state.config.steps;
        bar.set_length(total);
        bar.set_position(self.state.step);
        let session = Instant::now();
        let start_step = self.state.step;
        let saved_secs = self.state.train_seconds;
        while self.state.step < total {
            let step_start = Instant::now();
            self.step(data)?;
            self.step_seconds.push(step_start.elapsed().as_secs_f64());
            let done = self.state.step;
            let secs = session.elapsed().as_secs_f64();
            self.state.train_seconds = saved_secs + secs;
            let ips = (done - start_step) as f64 * self.state.config.batch_size as f64 / secs;
            let tail = &self.state.losses[self.state.losses.len().saturating_sub(50)..];
            let mean = tail.iter().sum::<f32>() / tail.len() as f32;
            bar.set_position(done);
            bar.set_message(format!("loss {mean:.4} {ips:.0} img/s"));
            let at_checkpoint = (every > 0 && done % every == 0) || done == total;
            if let Some(path) = checkpoint.filter(|_| at_checkpoint) {
                self.save(path)?;
            }
            if at_checkpoint && bar.is_hidden() {
                // No terminal (a log file): one line per checkpoint instead of the bar.
                eprintln!("step {done}/{total} loss {mean:.4} {ips:.0} img/s");
            }
        }
        Ok(())
    }
}
