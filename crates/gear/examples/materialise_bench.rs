//! Times one layer's dequantisation of a 4096-token compressed store (SmolLM2 geometry: 3 KV
//! heads of 64), the work the compressed policy adds to each decode step per layer.
//!
//! `cargo run --release -p ferrite-gear --example materialise_bench -- gear:4`

use anyhow::Result;
use ferrite_gear::{CompressedStore, GearSpec};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() -> Result<()> {
    let spec = std::env::args().nth(1).unwrap_or_else(|| "gear:4".into());
    let tokens: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(4096);
    let s = GearSpec::parse(&spec)?;
    let (channels, head_dim) = (192, 64);
    let mut store = CompressedStore::new(s.config.clone(), s.buffer, channels, head_dim, 0)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let x: Vec<f32> = (0..tokens * channels)
        .map(|_| rng.gen_range(-2.0f32..2.0))
        .collect();
    let t0 = Instant::now();
    store.append(&x, &x, false)?;
    let compress = t0.elapsed().as_secs_f64();
    let reps = 20;
    let t0 = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(store.materialise());
    }
    let per = t0.elapsed().as_secs_f64() / reps as f64;
    let mut k = vec![0f32; tokens * channels];
    let mut v = vec![0f32; tokens * channels];
    let t0 = Instant::now();
    for _ in 0..reps {
        store.materialise_into(true, &mut k, tokens, 0);
        store.materialise_into(false, &mut v, tokens, 0);
        std::hint::black_box((&k, &v));
    }
    let reused = t0.elapsed().as_secs_f64() / reps as f64;
    println!(
        "{spec}: {tokens} tokens, compress {:.1} ms ({:.3} ms/block), materialise {:.2} ms per layer per step ({:.2} ms into a reused scratch)",
        compress * 1e3,
        compress * 1e3 / store.n_blocks().max(1) as f64,
        per * 1e3,
        reused * 1e3
    );
    Ok(())
}
