//! Training on a tiny synthetic data set: a few steps lower the loss, and a run stopped
//! half-way, checkpointed and resumed in a fresh trainer repeats the uninterrupted run.

use ferrite_diffusion_train::fashion_mnist::{parse_idx, Dataset};
use ferrite_diffusion_train::train::{TrainConfig, Trainer};
use ferrite_dit::{Condition, Conditioning, DitConfig, GuidedChannels};
use indicatif::ProgressBar;

/// `max |a − b|` over two tensors of one shape.
fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// 64 8x8 images of 4 classes: class c is a bright square in quadrant c.
fn toy_data() -> Dataset {
    let (n, side) = (64usize, 8usize);
    let mut img = vec![0, 0, 8, 3];
    for d in [n, side, side] {
        img.extend_from_slice(&(d as u32).to_be_bytes());
    }
    let mut lbl = vec![0, 0, 8, 1];
    lbl.extend_from_slice(&(n as u32).to_be_bytes());
    for i in 0..n {
        let c = i % 4;
        for r in 0..side {
            for col in 0..side {
                let on = r / 4 == c / 2 && col / 4 == c % 2;
                img.push(if on {
                    200 + (i % 50) as u8
                } else {
                    (i % 7) as u8
                });
            }
        }
        lbl.push(c as u8);
    }
    Dataset::from_idx(parse_idx(&img).unwrap(), parse_idx(&lbl).unwrap()).unwrap()
}

fn tiny_config(steps: u64) -> TrainConfig {
    let dit = DitConfig {
        input_size: 8,
        patch_size: 4,
        in_channels: 1,
        hidden_size: 32,
        depth: 2,
        num_heads: 2,
        mlp_ratio: 2.0,
        class_dropout_prob: 0.1,
        num_classes: 4,
        learn_sigma: false,
        conditioning: Conditioning::AdaLnZero,
        cond_dim: None,
    };
    let mut cfg = TrainConfig::cpu_recipe(dit, steps);
    cfg.batch_size = 16;
    cfg.optimizer.lr = 3e-3;
    cfg.warmup_steps = 5;
    cfg.ema_decay = 0.9;
    cfg.num_train_timesteps = 100;
    cfg.seed = 3;
    cfg
}

#[test]
fn a_few_steps_lower_the_loss() {
    let data = toy_data();
    let mut t = Trainer::new(tiny_config(120)).unwrap();
    t.run(&data, None, 0, &ProgressBar::hidden()).unwrap();
    let l = &t.state.losses;
    let first: f32 = l[..20].iter().sum::<f32>() / 20.0;
    let last: f32 = l[l.len() - 20..].iter().sum::<f32>() / 20.0;
    assert!(last < 0.8 * first, "loss {first} -> {last}");
}

#[test]
fn resumed_run_repeats_the_uninterrupted_one() {
    let data = toy_data();
    let dir = std::env::temp_dir().join(format!("ferrite-resume-{}", std::process::id()));
    let ckpt = dir.join("run.safetensors");
    let bar = ProgressBar::hidden();

    let mut straight = Trainer::new(tiny_config(10)).unwrap();
    straight.run(&data, None, 0, &bar).unwrap();

    let mut first_half = Trainer::new(tiny_config(5)).unwrap();
    first_half.run(&data, Some(&ckpt), 2, &bar).unwrap();
    drop(first_half); // the "kill": only the checkpoint survives
    let mut resumed = Trainer::resume(&ckpt, Some(10)).unwrap();
    assert_eq!(resumed.state.step, 5);
    resumed.run(&data, Some(&ckpt), 2, &bar).unwrap();

    assert_eq!(
        resumed.state.losses, straight.state.losses,
        "bit-identical loss curve"
    );
    assert_eq!(resumed.state.step, straight.state.step);
    for (name, a) in straight.model_tensors() {
        let b = &resumed.model_tensors()[&name];
        assert_eq!(max_abs_diff(&a, b), 0.0, "weight {name}");
    }
    for (name, a) in straight.ema_tensors() {
        let b = &resumed.ema_tensors()[&name];
        assert_eq!(max_abs_diff(&a, b), 0.0, "EMA {name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Text conditioning end to end on the real SmolLM2 token embeddings (fails without the asset,
/// `make setup`): a cross-attention DiT trained on class *names* lowers its loss, its checkpoint
/// carries the text configuration, and the loaded model samples from free captions.
#[test]
fn a_text_conditioned_run_trains_saves_and_samples_from_captions() {
    use ferrite_diffusion_train::sampling::{
        load_model, sample_labels, SamplerName, SamplerOptions,
    };
    use ferrite_diffusion_train::train::TextConditioning;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cfg = tiny_config(80);
    cfg.dit.num_classes = 10;
    cfg.dit.conditioning = Conditioning::CrossAttention;
    cfg.text = Some(TextConditioning {
        model: root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        pooling: "mean".into(),
    });
    let mut t = Trainer::new(cfg).unwrap();
    assert_eq!(t.state.config.dit.cond_dim, Some(576));
    t.run(&toy_data(), None, 0, &ProgressBar::hidden()).unwrap();
    let l = &t.state.losses;
    let first: f32 = l[..20].iter().sum::<f32>() / 20.0;
    let last: f32 = l[l.len() - 20..].iter().sum::<f32>() / 20.0;
    assert!(last < 0.8 * first, "loss {first} -> {last}");
    let dir = std::env::temp_dir().join(format!("ferrite-text-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = dir.join("text.safetensors");
    t.save(&ck).unwrap();
    let loaded = load_model(&ck, true).unwrap();
    assert_eq!(loaded.state.config.text, t.state.config.text);
    assert_eq!(loaded.class_table().unwrap().dims()[0], 10);
    let captions = loaded
        .caption_table(&["Trouser", "a pair of red boots"])
        .unwrap();
    let opts = SamplerOptions {
        sampler: SamplerName::Ddim,
        steps: 5,
        eta: 0.0,
        spacing: "linspace".into(),
        guidance_scale: 2.0,
        clip_sample: true,
    };
    let x = sample_labels(
        &loaded.model,
        None,
        None,
        &opts,
        100,
        &[0, 1, 1],
        Some(&captions),
        8,
        0,
        &|| {},
    )
    .unwrap();
    assert_eq!(x.dims(), &[3, 1, 8, 8]);
    // A caption index past the table is refused with a message, not a panic.
    let err = sample_labels(
        &loaded.model,
        None,
        None,
        &opts,
        100,
        &[2],
        Some(&captions),
        8,
        0,
        &|| {},
    );
    assert!(err
        .unwrap_err()
        .to_string()
        .contains("outside the 2 captions"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn hand_written_backward_trains_like_autograd() {
    let data = toy_data();
    let mut hand = Trainer::new(tiny_config(15)).unwrap();
    let mut auto = Trainer::new(tiny_config(15)).unwrap();
    auto.use_autograd().unwrap();
    assert!(hand.uses_hand_written_backward() && !auto.uses_hand_written_backward());
    hand.run(&data, None, 0, &ProgressBar::hidden()).unwrap();
    auto.run(&data, None, 0, &ProgressBar::hidden()).unwrap();
    for (s, (a, b)) in hand.state.losses.iter().zip(&auto.state.losses).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * b,
            "step {s}: loss {a} (hand-written) vs {b} (autograd)"
        );
    }
    let (h, a) = (hand.model_tensors(), auto.model_tensors());
    for (name, want) in &a {
        let diff = max_abs_diff(&h[name], want);
        assert!(diff < 1e-4, "{name} differs by {diff} after 15 steps");
    }
}

/// Sampling through the hand-written forward gives the images candle's forward gives, with and
/// without guidance, DDPM and DDIM (same seeds, so the same noise).
#[test]
fn hand_written_forward_samples_like_candle() {
    use ferrite_diffusion_train::sampling::{
        load_model, sample_labels, SamplerName, SamplerOptions,
    };
    let data = toy_data();
    let mut t = Trainer::new(tiny_config(30)).unwrap();
    t.run(&data, None, 0, &ProgressBar::hidden()).unwrap();
    let dir = std::env::temp_dir().join(format!("ferrite-hand-sample-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = dir.join("labels.safetensors");
    t.save(&ck).unwrap();
    let mut loaded = load_model(&ck, true).unwrap();
    assert!(
        loaded.hand.is_some(),
        "an adaLN-Zero label model has a hand forward"
    );
    let labels = [0, 1, 2, 3, 3, 2, 1];
    // The guided prediction itself against the model's `forward_guided`.
    let dev = candle_core::Device::Cpu;
    let x = candle_core::Tensor::randn(0f32, 1.0, (7, 1, 8, 8), &dev).unwrap();
    let y = candle_core::Tensor::new(&labels[..], &dev).unwrap();
    let tt = candle_core::Tensor::full(40f32, 7, &dev).unwrap();
    let want = loaded
        .model
        .forward_guided(&x, &tt, Condition::Labels(&y), 3.0, GuidedChannels::Eps)
        .unwrap();
    let got = loaded
        .hand
        .as_mut()
        .unwrap()
        .predict(&x, 40, &labels, 3.0)
        .unwrap();
    let diff = max_abs_diff(&got, &want);
    assert!(diff < 1e-5, "guided ε differs by {diff}");
    for (sampler, guidance) in [(SamplerName::Ddpm, 1.0), (SamplerName::Ddim, 3.0)] {
        let opts = SamplerOptions {
            sampler,
            steps: 20,
            eta: 0.0,
            spacing: "linspace".into(),
            guidance_scale: guidance,
            clip_sample: true,
        };
        let run = |hand| {
            sample_labels(
                &loaded.model,
                hand,
                None,
                &opts,
                100,
                &labels,
                None,
                4,
                5,
                &|| {},
            )
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
        };
        let want = run(None);
        let got = run(loaded.hand.as_mut());
        let diff = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let spread = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            spread > 0.1,
            "{sampler:?}: blank samples, the test would be vacuous"
        );
        assert!(
            diff < 1e-4,
            "{sampler:?} s={guidance}: images differ by {diff}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A sampling run that lost a batch (killed before writing it) redraws just that batch and
/// gives bit-identical samples; batches of another run's settings are refused.
#[test]
fn sampling_resumes_from_its_shards() {
    use ferrite_diffusion_train::sample_shards::SampleShards;
    use ferrite_diffusion_train::sampling::{
        load_model, sample_labels, SamplerName, SamplerOptions,
    };
    let mut t = Trainer::new(tiny_config(10)).unwrap();
    t.run(&toy_data(), None, 0, &ProgressBar::hidden()).unwrap();
    let dir = std::env::temp_dir().join(format!("ferrite-shard-run-{}", std::process::id()));
    let ck = dir.join("labels.safetensors");
    t.save(&ck).unwrap();
    let mut loaded = load_model(&ck, true).unwrap();
    let opts = SamplerOptions {
        sampler: SamplerName::Ddpm,
        steps: 10,
        eta: 0.0,
        spacing: "linspace".into(),
        guidance_scale: 2.0,
        clip_sample: true,
    };
    let labels = [0, 1, 2, 3, 0, 1, 2, 3, 0];
    let key = serde_json::json!({"seed": 7, "labels": labels});
    let shard_dir = dir.join("shards");
    let mut run = |shards: &SampleShards| {
        let hand = loaded.hand.as_mut();
        let x = sample_labels(
            &loaded.model,
            hand,
            Some(shards),
            &opts,
            100,
            &labels,
            None,
            4,
            7,
            &|| {},
        )
        .unwrap();
        x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let first = SampleShards::open(&shard_dir, &key).unwrap();
    let want = run(&first);
    assert_eq!(first.loaded(), 0);
    std::fs::remove_file(shard_dir.join("batch-000001.safetensors")).unwrap();
    let again = SampleShards::open(&shard_dir, &key).unwrap();
    assert_eq!(run(&again), want, "resumed samples differ");
    assert_eq!(
        again.loaded(),
        5,
        "batches 0 and 2 (4 + 1 images) come from disk"
    );
    let other = serde_json::json!({"seed": 8, "labels": labels});
    assert!(SampleShards::open(&shard_dir, &other).is_err());
    std::fs::remove_dir_all(&dir).ok();
}
