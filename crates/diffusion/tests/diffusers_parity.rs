//! Parity with HF diffusers' DDPMScheduler / DDIMScheduler on the fixed inputs recorded by
//! `scripts/diffusers_fixtures.py` (see docs/diffusion-schedulers.md). Runs without Python.

use candle_core::{Device, Result, Tensor};
use ferrite_diffusion::{
    sample_with_noise, spaced_timesteps, BetaSchedule, NoiseSchedule, PredictionType, SamplerKind,
    Scheduler, TimestepSpacing, VarianceType,
};
use serde_json::Value;

mod common;
use common::{fixture, floats, max_abs_diff, usizes, TOL};
use std::cell::RefCell;

fn f32_floats(v: &Value) -> Vec<f64> {
    floats(v).into_iter().map(|x| x as f32 as f64).collect()
}

fn tensor(values: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// The script's closed-form "model": eps = 0.8 sin(1.3 x + t/500), variance = tanh(0.7 x - 0.2 + t/1000).
fn model(x: &Tensor, t: usize, learned: bool) -> Result<Tensor> {
    let eps = x.affine(1.3, t as f64 / 500.0)?.sin()?.affine(0.8, 0.0)?;
    if !learned {
        return Ok(eps);
    }
    let v = x.affine(0.7, -0.2 + t as f64 / 1000.0)?.tanh()?;
    Tensor::cat(&[&eps, &v], 1)
}

/// The schedule a case ran on, from diffusers' own (float32) betas.
fn diffusers_schedule(f: &Value, key: &str) -> NoiseSchedule {
    NoiseSchedule::from_betas(f32_floats(&f["schedules"][key]["betas_f32"])).unwrap()
}

struct Case<'a> {
    v: &'a Value,
    shape: Vec<usize>,
}

impl Case<'_> {
    fn name(&self) -> &str {
        self.v["name"].as_str().unwrap()
    }

    fn learned(&self) -> bool {
        self.v["sampler"] == "ddpm" && self.v["variance_type"] == "learned_range"
    }

    fn scheduler(&self, f: &Value) -> Scheduler {
        let v = self.v;
        let sampler = match v["sampler"].as_str().unwrap() {
            "ddpm" => SamplerKind::Ddpm {
                variance: VarianceType::parse(v["variance_type"].as_str().unwrap()).unwrap(),
            },
            _ => SamplerKind::Ddim {
                eta: v["eta"].as_f64().unwrap(),
            },
        };
        let p = PredictionType::parse(v["prediction_type"].as_str().unwrap()).unwrap();
        let clip = v["clip_sample"].as_bool().unwrap().then_some(1.0);
        let mut s = Scheduler::new(
            diffusers_schedule(f, v["schedule"].as_str().unwrap()),
            sampler,
            p,
        )
        .with_clip_sample(clip);
        if let Some(n) = v["num_inference_steps"].as_u64() {
            let spacing = TimestepSpacing::parse(v["timestep_spacing"].as_str().unwrap()).unwrap();
            s.set_timesteps(n as usize, spacing).unwrap();
        }
        s
    }

    fn trajectory(&self, i: usize) -> Tensor {
        tensor(floats(&self.v["trajectory"][i]), &self.shape)
    }

    fn noise(&self, i: usize) -> Option<Tensor> {
        let z = &self.v["noise"][i];
        (!z.is_null()).then(|| tensor(floats(z), &self.shape))
    }

    /// Runs our one sampling loop with the fixture's noise; returns the max |ours - diffusers|
    /// over every intermediate sample.
    fn run_loop(&self, s: &Scheduler) -> f64 {
        let worst = RefCell::new(0.0f64);
        let step = RefCell::new(0usize);
        let learned = self.learned();
        let x_t = tensor(floats(&self.v["x_t"]), &self.shape);
        let out = sample_with_noise(
            s,
            x_t,
            |x, t| {
                let i = *step.borrow();
                if i > 0 {
                    let d = max_abs_diff(x, &self.trajectory(i - 1));
                    worst.replace_with(|w| w.max(d));
                }
                *step.borrow_mut() += 1;
                model(x, t, learned)
            },
            |i, _| {
                Ok(self
                    .noise(i)
                    .unwrap_or_else(|| panic!("{}: no noise recorded for step {i}", self.name())))
            },
            None,
        )
        .unwrap();
        let last = self.v["trajectory"].as_array().unwrap().len() - 1;
        let d = max_abs_diff(&out, &self.trajectory(last));
        worst.into_inner().max(d)
    }
}

#[test]
fn samplers_match_diffusers_step_for_step() {
    let f = fixture("diffusers_parity.json");
    let shape = usizes(&f["shape"]);
    let mut checked = 0;
    for v in f["cases"].as_array().unwrap() {
        let case = Case {
            v,
            shape: shape.clone(),
        };
        if case.name() == "ddim_eta1_linspace" {
            continue; // diffusers' DDIM steps to t - T/n, not the next listed timestep: see below.
        }
        let s = case.scheduler(&f);
        assert_eq!(
            s.timesteps(),
            usizes(&v["timesteps"]).as_slice(),
            "{}",
            case.name()
        );
        let d = case.run_loop(&s);
        println!("{:<40} max |ours - diffusers| = {d:.2e}", case.name());
        assert!(d <= TOL, "{}: {d}", case.name());
        checked += 1;
    }
    assert_eq!(checked, 15);
}

/// diffusers' DDIMScheduler takes `prev = t - T / n` instead of the next timestep in its list;
/// for `linspace` spacing these differ (999 -> 899 while the list says 888). With that
/// previous timestep our step matches; our loop (which uses the list, as improved-diffusion
/// does) therefore deviates, by design.
#[test]
fn ddim_linspace_deviation_is_exactly_diffusers_previous_timestep_rule() {
    let f = fixture("diffusers_parity.json");
    let shape = usizes(&f["shape"]);
    let v = f["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ddim_eta1_linspace")
        .unwrap();
    let case = Case { v, shape };
    let s = case.scheduler(&f);
    let (t_max, n) = (s.schedule().num_train_timesteps(), s.timesteps().len());
    let mut x = tensor(floats(&v["x_t"]), &case.shape);
    let mut worst = 0.0f64;
    for (i, &t) in s.timesteps().iter().enumerate() {
        let prev = t.checked_sub(t_max / n);
        let out = s
            .step_between(
                &model(&x, t, false).unwrap(),
                t,
                prev,
                &x,
                case.noise(i).as_ref(),
            )
            .unwrap();
        worst = worst.max(max_abs_diff(&out.prev_sample, &case.trajectory(i)));
        x = case.trajectory(i);
    }
    println!("ddim_eta1_linspace with prev = t - T/n: max diff {worst:.2e}");
    assert!(worst <= TOL, "{worst}");
    let ours = case.run_loop(&s);
    println!("ddim_eta1_linspace with the listed previous timestep: max diff {ours:.2e}");
    assert!(
        ours > 1e-3,
        "the documented deviation disappeared ({ours}); update the docs"
    );
}

/// Every spacing list diffusers produced, except one documented deviation: a single
/// `linspace` step is `[T - 1]` for us (a sampler starting from pure noise must start at the
/// last timestep) where numpy's `linspace(0, T - 1, 1)` gives diffusers `[0]`.
#[test]
fn timestep_spacing_matches_diffusers() {
    let f = fixture("diffusers_parity.json");
    let mut compared = 0;
    for row in f["spacing"].as_array().unwrap() {
        let t_max = row["num_train_timesteps"].as_u64().unwrap() as usize;
        let n = row["n"].as_u64().unwrap() as usize;
        let spacing = TimestepSpacing::parse(row["spacing"].as_str().unwrap()).unwrap();
        let ours = spaced_timesteps(t_max, n, spacing).unwrap();
        let theirs = usizes(&row["timesteps"]);
        if n == 1 && spacing == TimestepSpacing::Linspace {
            assert_eq!((ours, theirs), (vec![t_max - 1], vec![0]));
            continue;
        }
        assert_eq!(ours, theirs, "T={t_max} n={n} {spacing:?}");
        compared += 1;
    }
    assert_eq!(compared, 31);
}

#[test]
fn schedules_and_forward_process_match_diffusers() {
    let f = fixture("diffusers_parity.json");
    for (key, schedule) in [
        ("linear_1000", BetaSchedule::DDPM_LINEAR),
        ("cosine_1000", BetaSchedule::Cosine),
    ] {
        let ours = NoiseSchedule::new(schedule, 1000).unwrap();
        let theirs = f32_floats(&f["schedules"][key]["alphas_cumprod_f32"]);
        let d = ours
            .alphas_cumprod()
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let betas = f32_floats(&f["schedules"][key]["betas_f32"]);
        let db = ours
            .betas()
            .iter()
            .zip(&betas)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!("{key}: max |alpha_bar ours(f64) - diffusers(f32)| = {d:.2e}, betas {db:.2e}");
        assert!(d <= TOL && db <= TOL, "{key}: {d} {db}");
    }
    let fw = &f["forward"];
    let s = diffusers_schedule(&f, fw["schedule"].as_str().unwrap());
    let shape = [4, 1, 2, 2];
    let x0 = tensor(floats(&fw["x0"]), &shape);
    let noise = tensor(floats(&fw["noise"]), &shape);
    let t = usizes(&fw["t"]);
    let d = max_abs_diff(
        &s.add_noise(&x0, &noise, &t).unwrap(),
        &tensor(floats(&fw["add_noise"]), &shape),
    );
    let v = s
        .training_target(&x0, &noise, &t, PredictionType::VPrediction)
        .unwrap();
    let dv = max_abs_diff(&v, &tensor(floats(&fw["velocity"]), &shape));
    println!("add_noise max diff {d:.2e}, get_velocity max diff {dv:.2e}");
    assert!(d <= TOL && dv <= TOL);
}
