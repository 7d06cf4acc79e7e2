//! `ferrite diffusion train|sample|eval|classifier|info`: a thin layer over
//! `ferrite-diffusion-train` (training, sampling, classifier-feature FID) and `ferrite-dit`.

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use ferrite_diffusion_train::classifier::{load_classifier, train_classifier, TrainedClassifier};
use ferrite_diffusion_train::evaluate::{real_image_baseline, score_samples, Reference};
use ferrite_diffusion_train::fashion_mnist::{
    crop_center, Dataset, Split, DEFAULT_DIR, NUM_CLASSES,
};
use ferrite_diffusion_train::grid::write_grid;
use ferrite_diffusion_train::loss_plot::plot_loss;
use ferrite_diffusion_train::sample_shards::SampleShards;
use ferrite_diffusion_train::sampling::{
    class_major_labels, load_model, sample_labels, SamplerName, SamplerOptions,
};
use ferrite_diffusion_train::train::{TextConditioning, TrainConfig, Trainer};
use ferrite_dit::{Conditioning, DitConfig};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

/// Diffusion transformers on Fashion-MNIST.
#[derive(Args, Debug)]
pub struct DiffusionArgs {
    #[command(subcommand)]
    command: DiffusionCommand,
}

#[derive(Subcommand, Debug)]
enum DiffusionCommand {
    /// Train a class-conditional DiT (resumable: checkpoints every N steps).
    Train(TrainArgs),
    /// Draw a sample grid (one row per class) from a checkpoint.
    Sample(SampleArgs),
    /// Classifier-feature FID and class accuracy of samples from a checkpoint.
    Eval(EvalArgs),
    /// Train (or load) the evaluation classifier and report its test accuracy.
    Classifier(ClassifierArgs),
    /// Parameters and Gflops of a DiT preset for each conditioning design.
    Info(InfoArgs),
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// DiT preset (`cpu-tiny`, `cpu-small`, `S/2` .. `XL/8`).
    #[arg(long, default_value = "cpu-tiny")]
    preset: String,
    /// Override the preset's patch size (the CPU recipe uses 7: 16 tokens of 7x7 pixels).
    #[arg(long, default_value_t = 7)]
    patch_size: usize,
    /// Block design: in-context, cross-attention, adaln or adaln-zero.
    #[arg(long, default_value = "adaln-zero")]
    conditioning: String,
    /// Total optimisation steps (the CPU recipe: 20 000, ~13 min on 2 cores, recognisable
    /// samples of every class).
    #[arg(long, default_value_t = 20000)]
    steps: u64,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Peak AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Linear learning-rate warm-up steps.
    #[arg(long, default_value_t = 200)]
    warmup_steps: u64,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// EMA decay of the weights.
    #[arg(long, default_value_t = 0.999)]
    ema_decay: f64,
    /// Seed of initialisation, data order and noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint file (written atomically).
    #[arg(long, default_value = "out/diffusion/cpu-tiny.safetensors")]
    checkpoint: PathBuf,
    /// Write the checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: u64,
    /// Continue the run in --checkpoint (its configuration; --steps may extend it).
    #[arg(long)]
    resume: bool,
    /// Directory with the Fashion-MNIST IDX files.
    #[arg(long, default_value = DEFAULT_DIR)]
    data: PathBuf,
    /// Train on the first N images only.
    #[arg(long)]
    train_images: Option<usize>,
    /// Condition on the class names as text instead of class ids: captions embedded by this
    /// model's token embeddings (e.g. models/SmolLM2-135M-Instruct.Q4_1.gguf), read by the
    /// conditioning design as a sequence; sample such a model with `--caption`.
    #[arg(long)]
    text_model: Option<PathBuf>,
    /// Text pooling: mean (one vector per caption) or tokens (the token sequence).
    #[arg(long, default_value = "mean")]
    text_pooling: String,
    /// Loss curve PNG (default: next to the checkpoint).
    #[arg(long)]
    loss_plot: Option<PathBuf>,
    /// Train under candle's general autograd instead of the hand-written adaLN-Zero backward
    /// (same gradients to float rounding; the other designs and learned Σ always use autograd).
    #[arg(long)]
    autograd: bool,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SamplerArg {
    Ddpm,
    Ddim,
}

/// Sampler flags in diffusers' vocabulary.
#[derive(Args, Debug, Clone)]
struct SamplerFlags {
    /// Reverse process.
    #[arg(long, value_enum, default_value = "ddim")]
    sampler: SamplerArg,
    /// Number of denoising steps (`num_inference_steps`).
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// DDIM eta (0 = deterministic).
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// Timestep spacing: linspace, leading or trailing.
    #[arg(long, default_value = "linspace")]
    spacing: String,
    /// Classifier-free guidance scale (1 = off).
    #[arg(long, default_value_t = 1.0)]
    guidance_scale: f64,
    /// Sample with the raw weights instead of the EMA.
    #[arg(long)]
    no_ema: bool,
    /// Do not clip the x_0 estimate to [-1, 1] (DiT's own sampling; clipping is diffusers' default).
    #[arg(long)]
    no_clip: bool,
    /// Images per forward batch.
    #[arg(long, default_value_t = 250)]
    batch: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run the network through candle's forward instead of the hand-written one (the same
    /// numbers to float rounding; for comparison).
    #[arg(long)]
    candle_forward: bool,
}

impl SamplerFlags {
    fn options(&self) -> SamplerOptions {
        SamplerOptions {
            sampler: match self.sampler {
                SamplerArg::Ddpm => SamplerName::Ddpm,
                SamplerArg::Ddim => SamplerName::Ddim,
            },
            steps: self.steps,
            eta: self.eta,
            spacing: self.spacing.clone(),
            guidance_scale: self.guidance_scale,
            clip_sample: !self.no_clip,
        }
    }
}

#[derive(Args, Debug)]
struct SampleArgs {
    /// Training checkpoint.
    #[arg(long, default_value = "out/diffusion/cpu-tiny.safetensors")]
    checkpoint: PathBuf,
    /// Output PNG.
    #[arg(long, short, default_value = "out/diffusion/grid.png")]
    out: PathBuf,
    /// Images per class (grid columns).
    #[arg(long, default_value_t = 10)]
    per_class: usize,
    /// Pixel scale of the grid.
    #[arg(long, default_value_t = 2)]
    scale: u32,
    /// A text-conditioned model's caption, one grid row each (repeatable; default: the class
    /// names, or the class ids of a label-conditioned model).
    #[arg(long)]
    caption: Vec<String>,
    #[command(flatten)]
    sampler: SamplerFlags,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug, Clone)]
struct ClassifierFlags {
    /// Evaluation classifier (trained and saved here when missing).
    #[arg(long, default_value = "out/diffusion/classifier.safetensors")]
    classifier: PathBuf,
    /// Epochs when training the classifier.
    #[arg(long, default_value_t = 2)]
    classifier_epochs: usize,
    /// Directory with the Fashion-MNIST IDX files.
    #[arg(long, default_value = DEFAULT_DIR)]
    data: PathBuf,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// Training checkpoint.
    #[arg(long, default_value = "out/diffusion/cpu-tiny.safetensors")]
    checkpoint: PathBuf,
    /// Samples to score (rounded down to a multiple of 10: equal per class).
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    #[command(flatten)]
    sampler: SamplerFlags,
    #[command(flatten)]
    classifier: ClassifierFlags,
    /// Also write the first 10 samples of each class as a grid PNG.
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Also score as many real training images (the FID floor at this sample count).
    #[arg(long)]
    baseline: bool,
    /// Keep every finished batch of samples in this directory and reuse them when the same
    /// evaluation is run again, so a killed run resumes where it stopped.
    #[arg(long)]
    shards: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct ClassifierArgs {
    #[command(flatten)]
    classifier: ClassifierFlags,
    /// Retrain even when the file exists.
    #[arg(long)]
    retrain: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct InfoArgs {
    /// DiT preset.
    #[arg(long, default_value = "cpu-tiny")]
    preset: String,
    /// Override the preset's patch size.
    #[arg(long)]
    patch_size: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a `ferrite diffusion` subcommand.
pub fn run(args: DiffusionArgs) -> Result<()> {
    match args.command {
        DiffusionCommand::Train(a) => train(a),
        DiffusionCommand::Sample(a) => sample(a),
        DiffusionCommand::Eval(a) => eval(a),
        DiffusionCommand::Classifier(a) => classifier(a),
        DiffusionCommand::Info(a) => info(a),
    }
}

fn bar(quiet: bool, unit: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} eta {{eta}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn train(a: TrainArgs) -> Result<()> {
    let data = Dataset::load(&a.data, Split::Train)?;
    let mut trainer = if a.resume && a.checkpoint.exists() {
        Trainer::resume(&a.checkpoint, Some(a.steps))?
    } else {
        if a.resume {
            eprintln!(
                "no checkpoint at {} yet: starting a fresh run",
                a.checkpoint.display()
            );
        }
        let mut dit =
            DitConfig::preset(&a.preset)?.with_conditioning(Conditioning::parse(&a.conditioning)?);
        dit.patch_size = a.patch_size;
        let mut cfg = TrainConfig::cpu_recipe(dit, a.steps);
        cfg.batch_size = a.batch_size;
        cfg.optimizer.lr = a.lr;
        cfg.optimizer.weight_decay = a.weight_decay;
        cfg.warmup_steps = a.warmup_steps;
        cfg.ema_decay = a.ema_decay;
        cfg.seed = a.seed;
        cfg.train_images = a.train_images;
        cfg.text = a.text_model.clone().map(|model| TextConditioning {
            model,
            pooling: a.text_pooling.clone(),
        });
        Trainer::new(cfg)?
    };
    if a.autograd {
        trainer.use_autograd()?;
    }
    let start = trainer.state.step;
    let pb = bar(a.quiet, "steps");
    let t0 = Instant::now();
    trainer.run(&data, Some(&a.checkpoint), a.checkpoint_every, &pb)?;
    pb.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let steps = trainer.state.step - start;
    let images_per_sec = steps as f64 * trainer.state.config.batch_size as f64 / secs.max(1e-9);
    let losses = &trainer.state.losses;
    let tail = &losses[losses.len().saturating_sub(100)..];
    let final_loss = tail.iter().sum::<f32>() / tail.len().max(1) as f32;
    let plot = a
        .loss_plot
        .clone()
        .unwrap_or_else(|| a.checkpoint.with_extension("loss.png"));
    plot_loss(&plot, "DiT training loss (L_simple)", losses, 100)?;
    if a.json {
        print_json(&serde_json::json!({
            "checkpoint": a.checkpoint,
            "step": trainer.state.step,
            "steps_this_session": steps,
            "seconds_this_session": secs,
            "images_per_sec": images_per_sec,
            "steady_images_per_sec": trainer.steady_images_per_sec(3),
            "backward": if trainer.uses_hand_written_backward() { "hand-written" } else { "autograd" },
            "loss_last_100_mean": final_loss,
            "loss_plot": plot,
            "config": trainer.state.config,
        }))
    } else {
        println!(
            "step {} loss(mean of last 100) {final_loss:.4} | {steps} steps in {secs:.1}s, {images_per_sec:.0} images/s | {} | loss curve {}",
            trainer.state.step,
            a.checkpoint.display(),
            plot.display()
        );
        Ok(())
    }
}

fn sampling_bar(quiet: bool, n: usize, opts: &SamplerOptions, batch: usize) -> ProgressBar {
    let pb = bar(quiet, "steps");
    pb.set_length((n.div_ceil(batch.max(1)) * opts.steps) as u64);
    pb.set_message(opts.label());
    pb
}

/// Class-conditional samples, `per_class` of every class in class-major order.
struct ClassSamples {
    x: candle_core::Tensor,
    labels: Vec<u32>,
    opts: SamplerOptions,
    secs: f64,
    training_step: u64,
    /// Samples taken from `--shards` rather than drawn in this run.
    resumed: usize,
}

/// Loads a checkpoint (EMA weights unless `--no-ema`) and samples every class — or, for a
/// text-conditioned model given `captions`, every caption — with a progress bar.
fn sample_classes(
    checkpoint: &std::path::Path,
    sampler: &SamplerFlags,
    per_class: usize,
    captions: &[String],
    shards: Option<&std::path::Path>,
    quiet: bool,
) -> Result<ClassSamples> {
    let mut loaded = load_model(checkpoint, !sampler.no_ema)?;
    let opts = sampler.options();
    let caption_table = if captions.is_empty() {
        None
    } else {
        let c: Vec<&str> = captions.iter().map(String::as_str).collect();
        Some(loaded.caption_table(&c)?)
    };
    let class_table = loaded.text.as_ref().map(|(_, t)| t);
    let table = caption_table.as_ref().or(class_table);
    let rows = caption_table.as_ref().map_or(NUM_CLASSES, |t| t.dims()[0]);
    let labels = class_major_labels(rows, per_class);
    let pb = sampling_bar(quiet, labels.len(), &opts, sampler.batch);
    let t0 = Instant::now();
    let hand = loaded.hand.as_mut().filter(|_| !sampler.candle_forward);
    let shards = shards
        .map(|dir| {
            let key = serde_json::json!({
                "checkpoint": checkpoint, "training_step": loaded.state.step,
                "ema": !sampler.no_ema, "sampler": opts, "batch": sampler.batch,
                "seed": sampler.seed, "hand_forward": hand.is_some(), "labels": labels,
            });
            SampleShards::open(dir, &key)
        })
        .transpose()?;
    let x = sample_labels(
        &loaded.model,
        hand,
        shards.as_ref(),
        &opts,
        loaded.state.config.num_train_timesteps,
        &labels,
        table,
        sampler.batch,
        sampler.seed,
        &|| pb.inc(1),
    )?;
    pb.finish_and_clear();
    Ok(ClassSamples {
        x,
        labels,
        opts,
        secs: t0.elapsed().as_secs_f64(),
        training_step: loaded.state.step,
        resumed: shards.map_or(0, |s| s.loaded()),
    })
}

fn sample(a: SampleArgs) -> Result<()> {
    if a.per_class == 0 {
        bail!("--per-class must be at least 1");
    }
    let ClassSamples {
        x,
        labels,
        opts,
        secs,
        training_step,
        ..
    } = sample_classes(
        &a.checkpoint,
        &a.sampler,
        a.per_class,
        &a.caption,
        None,
        a.quiet,
    )?;
    let x = crop_center(&x, 28, 28)?;
    write_grid(&a.out, &x, a.per_class, a.scale)?;
    let ips = labels.len() as f64 / secs.max(1e-9);
    if a.json {
        print_json(&serde_json::json!({
            "grid": a.out, "images": labels.len(), "seconds": secs, "images_per_sec": ips,
            "sampler": opts, "training_step": training_step,
        }))
    } else {
        println!(
            "{}: {} images in {secs:.1}s ({ips:.1} images/s) -> {}",
            opts.label(),
            labels.len(),
            a.out.display()
        );
        Ok(())
    }
}

fn obtain_classifier(
    f: &ClassifierFlags,
    retrain: bool,
    quiet: bool,
) -> Result<(TrainedClassifier, Dataset)> {
    let test = Dataset::load(&f.data, Split::Test)?;
    if f.classifier.exists() && !retrain {
        let c = load_classifier(&f.classifier, test.rows)?;
        return Ok((c, test));
    }
    if f.classifier_epochs == 0 {
        bail!("--classifier-epochs must be at least 1");
    }
    let train = Dataset::load(&f.data, Split::Train)?;
    let pb = bar(quiet, "batches");
    let c = train_classifier(&train, &test, f.classifier_epochs, 0, &pb)?;
    pb.finish_and_clear();
    c.save(&f.classifier)?;
    eprintln!(
        "trained the evaluation classifier: test accuracy {:.4} -> {}",
        c.test_accuracy,
        f.classifier.display()
    );
    Ok((c, test))
}

fn classifier(a: ClassifierArgs) -> Result<()> {
    let t0 = Instant::now();
    let (c, _) = obtain_classifier(&a.classifier, a.retrain, a.quiet)?;
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        print_json(&serde_json::json!({
            "classifier": a.classifier.classifier, "test_accuracy": c.test_accuracy,
            "epochs": c.epochs, "seconds": secs,
        }))
    } else {
        println!(
            "classifier {}: test accuracy {:.4} ({} epochs)",
            a.classifier.classifier.display(),
            c.test_accuracy,
            c.epochs
        );
        Ok(())
    }
}

fn eval(a: EvalArgs) -> Result<()> {
    let per_class = a.samples / NUM_CLASSES;
    if per_class < 1 {
        bail!("--samples must be at least {NUM_CLASSES} (one per class)");
    }
    let (clf, test) = obtain_classifier(&a.classifier, false, a.quiet)?;
    let reference = Reference::new(&clf.model, &test)?;
    let ClassSamples {
        x,
        labels,
        opts,
        secs,
        training_step,
        resumed,
    } = sample_classes(
        &a.checkpoint,
        &a.sampler,
        per_class,
        &[],
        a.shards.as_deref(),
        a.quiet,
    )?;
    let x = crop_center(&x, test.rows, test.cols)?;
    if let Some(grid) = &a.grid {
        let cols = per_class.min(10);
        let idx: Vec<u32> = (0..NUM_CLASSES)
            .flat_map(|c| (0..cols).map(move |j| (c * per_class + j) as u32))
            .collect();
        let sel = x.index_select(&candle_core::Tensor::new(idx.as_slice(), x.device())?, 0)?;
        write_grid(grid, &sel, cols, 2)?;
    }
    let scores = score_samples(&clf.model, &reference, &x, &labels)?;
    let baseline = if a.baseline {
        let train = Dataset::load(&a.classifier.data, Split::Train)?;
        Some(real_image_baseline(
            &clf.model, &reference, &train, per_class,
        )?)
    } else {
        None
    };
    let report = serde_json::json!({
        "real_images_at_same_n": baseline,
        "checkpoint": a.checkpoint,
        "training_step": training_step,
        "sampler": opts,
        "label": opts.label(),
        "samples": scores.samples,
        "reference_images": reference.count,
        "classifier_fid": scores.classifier_fid,
        "fid_kind": "classifier-feature FID (our Fashion-MNIST CNN, 128-d penultimate features), not Inception FID",
        "class_accuracy": scores.class_accuracy,
        "classifier_test_accuracy": clf.test_accuracy,
        "sampling_seconds": secs,
        "resumed_samples": resumed,
        "sampling_images_per_sec": (scores.samples - resumed) as f64 / secs.max(1e-9),
    });
    if a.json {
        print_json(&report)
    } else {
        println!(
            "{} | {} samples | classifier-feature FID (not Inception FID) {:.3} | class accuracy {:.3} | {:.1} images/s",
            opts.label(),
            scores.samples,
            scores.classifier_fid,
            scores.class_accuracy,
            (scores.samples - resumed) as f64 / secs.max(1e-9)
        );
        if let Some(b) = baseline {
            println!(
                "real training images, same count: FID {:.3} | class accuracy {:.3}",
                b.classifier_fid, b.class_accuracy
            );
        }
        Ok(())
    }
}

fn info(a: InfoArgs) -> Result<()> {
    let mut base = DitConfig::preset(&a.preset)?;
    if let Some(p) = a.patch_size {
        base.patch_size = p;
    }
    base.validate()?;
    let rows: Vec<serde_json::Value> = Conditioning::ALL
        .iter()
        .map(|&c| {
            let cfg = base.clone().with_conditioning(c);
            serde_json::json!({"conditioning": c.name(), "params": cfg.params(), "gflops": cfg.gflops()})
        })
        .collect();
    if a.json {
        return print_json(
            &serde_json::json!({"preset": a.preset, "config": base, "designs": rows}),
        );
    }
    println!(
        "DiT {}: input {}x{}x{}, patch {}, d={}, depth {}, heads {}, {} tokens",
        a.preset,
        base.input_size,
        base.input_size,
        base.in_channels,
        base.patch_size,
        base.hidden_size,
        base.depth,
        base.num_heads,
        base.num_patches()
    );
    println!("{:<16} {:>12} {:>10}", "conditioning", "params", "Gflops");
    for r in rows {
        println!(
            "{:<16} {:>12} {:>10.4}",
            r["conditioning"].as_str().unwrap_or(""),
            r["params"],
            r["gflops"].as_f64().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
