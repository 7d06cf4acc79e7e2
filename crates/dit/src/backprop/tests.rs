//! The hand-written step against candle's autograd of [`crate::DiT`] on the same weights.

use super::*;
use crate::{Condition, DiT};
use candle_core::Var;
use ferrite_kernels::pool::Pool;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn tiny() -> DitConfig {
    crate::testing::tiny_config(Conditioning::AdaLnZero, false, None)
}

/// A model with every variable redrawn (so no branch is zero-initialised away), and its
/// variables in name order.
fn random_model(cfg: &DitConfig, seed: u64) -> (DiT, Vec<(String, Var)>) {
    let (dit, vm) = crate::testing::random_dit(cfg, seed);
    (dit, crate::testing::sorted_vars(&vm))
}

fn layout_of(vars: &[(String, Var)]) -> ParamLayout {
    ParamLayout::new(
        vars.iter()
            .map(|(n, v)| (n.clone(), v.dims().to_vec()))
            .collect(),
    )
}

fn flat_weights(vars: &[(String, Var)]) -> Vec<f32> {
    vars.iter()
        .flat_map(|(_, v)| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

struct Case {
    x_t: Vec<f32>,
    t: Vec<f32>,
    labels: Vec<u32>,
    drop: Vec<bool>,
    target: Vec<f32>,
}

fn case(cfg: &DitConfig, b: usize, seed: u64) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    let px = cfg.in_channels * cfg.input_size * cfg.input_size;
    let mut normal = || {
        (0..b * px)
            .map(|_| rng.gen_range(-1.5f32..1.5))
            .collect::<Vec<_>>()
    };
    let (x_t, target) = (normal(), normal());
    let t = (0..b)
        .map(|i| [0.0, 999.0, 3.0, 500.0, 71.0][i % 5])
        .collect();
    let labels = (0..b).map(|i| (i % cfg.num_classes) as u32).collect();
    let drop = (0..b).map(|i| i % 3 == 1).collect();
    Case {
        x_t,
        t,
        labels,
        drop,
        target,
    }
}

/// Loss and per-variable gradients from candle's autograd.
fn autograd(dit: &DiT, vars: &[(String, Var)], cfg: &DitConfig, c: &Case) -> (f32, Vec<Vec<f32>>) {
    let dev = Device::Cpu;
    let (b, s) = (c.t.len(), cfg.input_size);
    let x = Tensor::from_slice(&c.x_t, (b, cfg.in_channels, s, s), &dev).unwrap();
    let target = Tensor::from_slice(&c.target, (b, cfg.in_channels, s, s), &dev).unwrap();
    let t = Tensor::from_slice(&c.t, b, &dev).unwrap();
    let y = Tensor::from_slice(&c.labels, b, &dev).unwrap();
    let out = dit
        .forward_with_drop(&x, &t, Condition::Labels(&y), Some(&c.drop))
        .unwrap();
    let loss = (out - target).unwrap().sqr().unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    let per_var = vars
        .iter()
        .map(|(_, v)| {
            grads
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect();
    (loss.to_scalar().unwrap(), per_var)
}

fn labels_with_drop(cfg: &DitConfig, c: &Case) -> Vec<u32> {
    let null = cfg.num_classes as u32;
    c.labels
        .iter()
        .zip(&c.drop)
        .map(|(&y, &d)| if d { null } else { y })
        .collect()
}

/// The step on `c`, run after two steps on another batch of the same size, so that gradients
/// left in the reused (and swapped) buffers by earlier steps would show.
fn ours(cfg: &DitConfig, vars: &[(String, Var)], c: &Case, pool: &Pool) -> (f32, Vec<f32>) {
    let mut step = DitBackprop::new(cfg, layout_of(vars)).unwrap();
    let weights = flat_weights(vars);
    let earlier = case(cfg, c.t.len(), 99);
    let mut loss_and_grads = |c: &Case| {
        let labels = labels_with_drop(cfg, c);
        let batch = TrainBatch {
            x_t: &c.x_t,
            t: &c.t,
            labels: &labels,
            target: &c.target,
        };
        let (loss, g) = step.loss_and_gradients_on(&weights, batch, pool).unwrap();
        (loss, g.values.to_vec())
    };
    loss_and_grads(&earlier);
    loss_and_grads(&earlier);
    loss_and_grads(c)
}

#[test]
fn loss_and_every_gradient_equal_autograd_for_any_worker_count() {
    let cfg = tiny();
    let (dit, vars) = random_model(&cfg, 7);
    let c = case(&cfg, 5, 1);
    let (want_loss, want) = autograd(&dit, &vars, &cfg, &c);
    let layout = layout_of(&vars);
    for threads in [1, 2, 3] {
        let (loss, got) = ours(&cfg, &vars, &c, &Pool::new(threads));
        assert!(
            (loss - want_loss).abs() <= 1e-5 * want_loss,
            "{threads} threads: loss {loss} vs {want_loss}"
        );
        for ((name, _, range), want) in layout.entries().zip(&want) {
            let got = &got[range];
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = got
                .iter()
                .zip(want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                scale > 0.0,
                "{name}: autograd gives a zero gradient; the test would be vacuous"
            );
            assert!(
                diff <= 1e-4 * scale,
                "{threads} threads, {name}: differs by {diff} (scale {scale})"
            );
        }
    }
}

#[test]
fn unsupported_designs_and_bad_batches_are_errors() {
    let mut cfg = tiny();
    cfg.learn_sigma = true;
    assert!(supports(&cfg).unwrap_err().to_string().contains("fixed"));
    let mut cfg = tiny();
    cfg.conditioning = Conditioning::AdaLn;
    assert!(supports(&cfg).is_err());
    let cfg = tiny();
    let (_, vars) = random_model(&cfg, 1);
    let mut step = DitBackprop::new(&cfg, layout_of(&vars)).unwrap();
    let c = case(&cfg, 2, 0);
    let w = flat_weights(&vars);
    let pool = Pool::new(1);
    let bad_label = [0u32, 4];
    let batch = TrainBatch {
        x_t: &c.x_t,
        t: &c.t,
        labels: &bad_label,
        target: &c.target,
    };
    let err = step
        .loss_and_gradients_on(&w, batch, &pool)
        .unwrap_err()
        .to_string();
    assert!(err.contains("label 4"), "{err}");
    let batch = TrainBatch {
        x_t: &c.x_t[1..],
        t: &c.t,
        labels: &c.labels,
        target: &c.target,
    };
    assert!(step.loss_and_gradients_on(&w, batch, &pool).is_err());
    let batch = TrainBatch {
        x_t: &c.x_t,
        t: &c.t,
        labels: &c.labels,
        target: &c.target,
    };
    assert!(step.loss_and_gradients_on(&w[1..], batch, &pool).is_err());
    let missing = ParamLayout::new(vec![("x_embedder.proj.weight".into(), vec![16, 2, 2, 2])]);
    assert!(DitBackprop::new(&cfg, missing).is_err());
}

#[test]
fn forward_only_prediction_equals_the_candle_forward_in_any_piece_split() {
    let cfg = tiny();
    let (dit, vars) = random_model(&cfg, 3);
    let weights = flat_weights(&vars);
    let px = cfg.in_channels * cfg.input_size * cfg.input_size;
    // 37 samples: two pieces of 18 and 19; 5: one piece smaller than a full one.
    for b in [37, 5] {
        let c = case(&cfg, b, 11);
        let dev = Device::Cpu;
        let shape = (b, cfg.in_channels, cfg.input_size, cfg.input_size);
        let x = Tensor::from_slice(&c.x_t, shape, &dev).unwrap();
        let t = Tensor::from_slice(&c.t, b, &dev).unwrap();
        let y = Tensor::new(c.labels.as_slice(), &dev).unwrap();
        let want = dit
            .forward_with_drop(&x, &t, Condition::Labels(&y), Some(&c.drop))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let labels = labels_with_drop(&cfg, &c);
        let mut step = DitBackprop::new(&cfg, layout_of(&vars)).unwrap();
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            // Twice, so buffers reused from the first call cannot leak into the second.
            for _ in 0..2 {
                let got = step
                    .predict_noise_on(&weights, &c.x_t, &c.t, &labels, &pool)
                    .unwrap();
                assert_eq!(got.len(), b * px);
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                let diff = got
                    .iter()
                    .zip(&want)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(scale > 0.0, "the candle forward is zero: vacuous");
                assert!(
                    diff <= 1e-5 * scale,
                    "b {b}, {threads} threads: differs by {diff} (scale {scale})"
                );
            }
        }
        let bad = [cfg.num_classes as u32 + 1];
        let one = &c.x_t[..px];
        assert!(step
            .predict_noise_on(&weights, one, &c.t[..1], &bad, &Pool::new(1))
            .is_err());
        assert!(step
            .predict_noise_on(&weights, &c.x_t[1..], &c.t, &labels, &Pool::new(1))
            .is_err());
    }
}
