//! Parity with the original DiT code's diffusion (facebookresearch/DiT `diffusion/`, i.e.
//! improved-diffusion's gaussian_diffusion.py) on the fixed inputs recorded by
//! `scripts/dit_reference_fixtures.py`: training losses and their gradient, respaced DDPM
//! (learned_range) and DDIM loops, and `forward_with_cfg`. Runs without Python.

use candle_core::{Device, Result, Tensor, Var};
use ferrite_diffusion::losses::vlb_terms_bpd;
use ferrite_diffusion::{
    guide_doubled_batch, hybrid_loss, sample_with_noise, BetaSchedule, NoiseSchedule,
    PredictionType, SamplerKind, Scheduler, TimestepSpacing, VarianceType,
    DIT_REFERENCE_GUIDED_CHANNELS, HYBRID_VLB_WEIGHT,
};
use serde_json::Value;

mod common;
use common::{fixture, floats, max_abs_diff, usizes, TOL};

fn tensor(v: &Value, shape: &[usize]) -> Tensor {
    Tensor::from_vec(floats(v), shape, &Device::Cpu).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar().unwrap()
}

/// Same closed-form model as the script: `[eps, variance values]`.
fn model(x: &Tensor, t: usize) -> Result<Tensor> {
    let eps = x.affine(1.3, t as f64 / 500.0)?.sin()?.affine(0.8, 0.0)?;
    let v = x.affine(0.7, -0.2 + t as f64 / 1000.0)?.tanh()?;
    Tensor::cat(&[&eps, &v], 1)
}

#[test]
fn hybrid_loss_and_its_gradient_match_the_reference() {
    let f = fixture("dit_reference.json");
    for case in f["losses"].as_array().unwrap() {
        let schedule = match case["schedule"].as_str().unwrap() {
            "linear" => BetaSchedule::DDPM_LINEAR,
            _ => BetaSchedule::Cosine,
        };
        let sched = NoiseSchedule::new(schedule, 1000).unwrap();
        let p = PredictionType::parse(case["prediction_type"].as_str().unwrap()).unwrap();
        let x0 = tensor(&case["x0"], &[4, 2, 3, 3]);
        let noise = tensor(&case["noise"], &[4, 2, 3, 3]);
        let t = usizes(&case["t"]);
        let out = Var::from_tensor(&tensor(&case["model_output"], &[4, 4, 3, 3])).unwrap();
        let x_t = sched.add_noise(&x0, &noise, &t).unwrap();
        let terms = hybrid_loss(
            &sched,
            out.as_tensor(),
            &x0,
            &x_t,
            &noise,
            &t,
            p,
            true,
            HYBRID_VLB_WEIGHT,
        )
        .unwrap();
        let mean = |v: &Value| floats(v).iter().sum::<f64>() / 4.0;
        let d_mse = (scalar(&terms.mse) - mean(&case["mse"])).abs();
        let d_vb = (scalar(terms.vlb.as_ref().unwrap()) - mean(&case["vb"])).abs();
        let d_loss = (scalar(&terms.total) - mean(&case["loss"])).abs();
        // Per-sample VLB terms, t = 0 (decoder NLL) included.
        let pred = out.as_tensor().narrow(1, 0, 2).unwrap();
        let values = out.as_tensor().narrow(1, 2, 2).unwrap();
        let vb = vlb_terms_bpd(
            &sched,
            &pred,
            Some(&values),
            VarianceType::LearnedRange,
            &x0,
            &x_t,
            &t,
            p,
        )
        .unwrap();
        let d_vb_each = max_abs_diff(
            &vb,
            &Tensor::new(floats(&case["vb"]), &Device::Cpu).unwrap(),
        );
        let grads = terms.total.backward().unwrap();
        let grad = grads.get(out.as_tensor()).unwrap();
        let d_grad = max_abs_diff(grad, &tensor(&case["grad"], &[4, 4, 3, 3]));
        println!(
            "{} {}: |d mse| {d_mse:.1e}, |d vb| {d_vb:.1e} (per sample {d_vb_each:.1e}), |d loss| {d_loss:.1e}, max |d grad| {d_grad:.1e}",
            case["schedule"], case["prediction_type"]
        );
        for d in [d_mse, d_vb, d_vb_each, d_loss, d_grad] {
            assert!(d <= TOL, "{d}");
        }
    }
}

#[test]
fn respaced_sampling_loops_match_the_reference() {
    let f = fixture("dit_reference.json");
    let sched = NoiseSchedule::new(BetaSchedule::DDPM_LINEAR, 1000).unwrap();
    for case in f["sampling"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let shape = usizes(&case["shape"]);
        let (kind, spacing) = match case["sampler"].as_str().unwrap() {
            "ddpm" => (
                SamplerKind::Ddpm {
                    variance: VarianceType::LearnedRange,
                },
                TimestepSpacing::Linspace,
            ),
            // "ddimN" respacing is DDIM's stride, i.e. leading spacing; "N" is linspace.
            _ if case["respacing"].as_str().unwrap().starts_with("ddim") => (
                SamplerKind::Ddim {
                    eta: case["eta"].as_f64().unwrap(),
                },
                TimestepSpacing::Leading,
            ),
            _ => (
                SamplerKind::Ddim {
                    eta: case["eta"].as_f64().unwrap(),
                },
                TimestepSpacing::Linspace,
            ),
        };
        let clip = case["clip"].as_bool().unwrap().then_some(1.0);
        let mut s =
            Scheduler::new(sched.clone(), kind, PredictionType::Epsilon).with_clip_sample(clip);
        let timesteps = usizes(&case["timesteps"]);
        s.set_timesteps(timesteps.len(), spacing).unwrap();
        assert_eq!(s.timesteps(), timesteps.as_slice(), "{name}");
        let noise = case["noise"].as_array().unwrap();
        let out = sample_with_noise(
            &s,
            tensor(&case["x_t"], &shape),
            model,
            |i, _| Ok(tensor(&noise[i], &shape)),
            None,
        )
        .unwrap();
        let d = max_abs_diff(&out, &tensor(&case["out"], &shape));
        println!("{name:<40} max |ours - reference| = {d:.2e}");
        if matches!(kind, SamplerKind::Ddim { .. }) && clip.is_some() {
            // improved-diffusion re-derives eps from the clipped x_0 in DDIM; we (like the DDIM
            // paper and diffusers) use the model's eps. DiT samples with clip_denoised=False.
            assert!(
                d > 1e-3,
                "{name}: the documented deviation disappeared ({d})"
            );
        } else {
            assert!(d <= TOL, "{name}: {d}");
        }
    }
}

#[test]
fn guidance_matches_dit_forward_with_cfg() {
    let f = fixture("dit_reference.json");
    let cfg = &f["cfg"];
    let shape = usizes(&cfg["shape"]);
    let raw = tensor(&cfg["model_output"], &shape);
    let ours = guide_doubled_batch(
        &raw,
        DIT_REFERENCE_GUIDED_CHANNELS,
        cfg["scale"].as_f64().unwrap(),
    )
    .unwrap();
    let d = max_abs_diff(&ours, &tensor(&cfg["guided"], &shape));
    println!("forward_with_cfg (3 guided channels of 8, scale 4): max diff {d:.2e}");
    assert!(d <= TOL, "{d}");
}
