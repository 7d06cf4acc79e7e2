//! Training throughput of DiT configurations on this machine: images/s of one forward + backward
//! pass (ε-MSE on random data, batch `B`), to size the CPU presets.
//!
//! usage: cargo run --release -p ferrite-dit --example throughput -- [BATCH] [STEPS] [CONFIG...]
//! CONFIG is `preset` or `preset:design`, e.g. `cpu-tiny cpu-small:in-context`, or a custom
//! `28/p/d/N/heads` (28x28x1, patch p, hidden d, depth N).

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use ferrite_dit::{seeded_var_builder, Condition, Conditioning, DiT, DitConfig};
use std::time::Instant;

fn parse(spec: &str) -> Result<DitConfig> {
    let (name, design) = spec.split_once(':').unwrap_or((spec, "adaln-zero"));
    let mut cfg = if name.starts_with("28/") {
        let v: Vec<usize> = name
            .split('/')
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?;
        if v.len() != 5 {
            bail!("custom config is 28/p/d/N/heads, got {name}")
        }
        let mut c = DitConfig::preset("cpu-tiny")?;
        (c.patch_size, c.hidden_size, c.depth, c.num_heads) = (v[1], v[2], v[3], v[4]);
        c
    } else {
        DitConfig::preset(name)?
    };
    cfg.conditioning = Conditioning::parse(design)?;
    Ok(cfg)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let batch: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(32);
    let steps: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let specs: Vec<String> = if args.len() > 2 {
        args[2..].to_vec()
    } else {
        vec!["cpu-tiny".into(), "cpu-small".into()]
    };
    let dev = Device::Cpu;
    for spec in specs {
        let cfg = parse(&spec)?;
        let varmap = candle_nn::VarMap::new();
        let dit = DiT::new(&cfg, seeded_var_builder(&varmap, 0, DType::F32, &dev))?;
        let size = cfg.input_size;
        let x = Tensor::randn(0f32, 1., (batch, cfg.in_channels, size, size), &dev)?;
        let t = Tensor::rand(0f32, 1000., batch, &dev)?;
        let y = Tensor::from_vec(
            (0..batch as u32).map(|i| i % 10).collect::<Vec<_>>(),
            batch,
            &dev,
        )?;
        let step = || -> Result<()> {
            let out = dit.forward(&x, &t, Condition::Labels(&y), true)?;
            let loss = (out - &x)?.sqr()?.mean_all()?;
            let _grads = loss.backward()?;
            Ok(())
        };
        step()?; // warm-up
        let start = Instant::now();
        for _ in 0..steps {
            step()?;
        }
        let secs = start.elapsed().as_secs_f64();
        let s = cfg.summary();
        println!(
            "{spec:<28} tokens {:>3}  params {:>7.3}M  Gflops {:>6.3}  fwd+bwd {:>7.1} img/s  ({:.3} s/step at B={batch})",
            s.tokens,
            s.params as f64 / 1e6,
            s.gflops,
            (steps * batch) as f64 / secs,
            secs / steps as f64
        );
    }
    Ok(())
}
