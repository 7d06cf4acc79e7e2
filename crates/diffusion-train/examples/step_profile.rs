//! Where a training step's time goes: data, forward, loss, backward, AdamW, EMA.
//! `cargo run --release -p ferrite-diffusion-train --example step_profile -- cpu-tiny 64 10`
use candle_core::{DType, Device, Tensor};
use ferrite_diffusion_train::fashion_mnist::{Dataset, Split, DEFAULT_DIR};
use ferrite_dit::{seeded_var_builder, Condition, DiT, DitConfig};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let preset = args.get(1).map_or("cpu-tiny", |s| s.as_str());
    let batch: usize = args.get(2).map_or(64, |s| s.parse().unwrap());
    let iters: usize = args.get(3).map_or(10, |s| s.parse().unwrap());
    let mut cfg = DitConfig::preset(preset)?;
    if let Some(p) = args.get(4) {
        cfg.patch_size = p.parse()?;
    }
    let t0 = Instant::now();
    let data = Dataset::load(std::path::Path::new(DEFAULT_DIR), Split::Train)?;
    println!("load {:.2}s", t0.elapsed().as_secs_f64());
    let map = candle_nn::VarMap::new();
    let dev = Device::Cpu;
    let model = DiT::new(&cfg, seeded_var_builder(&map, 0, DType::F32, &dev))?;
    let vars = map.all_vars();
    let mut opt = candle_nn::AdamW::new_lr(vars, 1e-3)?;
    use candle_nn::Optimizer;
    let idx: Vec<usize> = (0..batch).collect();
    let (x, y) = data.batch(&idx, cfg.input_size, &dev)?;
    let t = Tensor::full(500f32, batch, &dev)?;
    let (mut f, mut b, mut o) = (0.0, 0.0, 0.0);
    for _ in 0..iters {
        let s = Instant::now();
        let out = model.forward_with_drop(&x, &t, Condition::Labels(&y), None)?;
        let loss = (out - &x)?.sqr()?.mean_all()?;
        f += s.elapsed().as_secs_f64();
        let s = Instant::now();
        let g = loss.backward()?;
        b += s.elapsed().as_secs_f64();
        let s = Instant::now();
        opt.step(&g)?;
        o += s.elapsed().as_secs_f64();
    }
    let n = iters as f64;
    println!(
        "{preset} p={} batch {batch}: forward {:.1} ms, backward {:.1} ms, adamw {:.1} ms -> {:.0} img/s",
        cfg.patch_size,
        1e3 * f / n,
        1e3 * b / n,
        1e3 * o / n,
        batch as f64 * n / (f + b + o)
    );
    Ok(())
}
