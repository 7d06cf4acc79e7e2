//! Times one layer's decode-step attention work over a compressed store of SmolLM2's geometry
//! (9 query heads, 3 KV heads of 64), random data: dequantising the whole store into a reused
//! f32 scratch (the multi-token path), attention straight from the packed codes (the decode
//! path, `ferrite_gear::attention`), and, for scale, the fused f32 attention a `full` cache runs
//! over the same number of tokens.
//!
//! `cargo run --release -p ferrite-gear --example materialise_bench -- gear:4 [TOKENS]`

use anyhow::Result;
use ferrite_gear::attention::attend_decode;
use ferrite_gear::{CompressedStore, GearSpec};
use ferrite_kernels::attention::{attend, AttentionShape, HeadsView};
use ferrite_kernels::pool::Pool;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// Mean seconds per call of `f` over enough calls to take about 0.3 s.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed().as_secs_f64() < 0.3 {
        f();
        n += 1;
    }
    t0.elapsed().as_secs_f64() / n as f64
}

fn main() -> Result<()> {
    let spec = std::env::args().nth(1).unwrap_or_else(|| "gear:4".into());
    let tokens: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(4096);
    let s = GearSpec::parse(&spec)?;
    let (n_head, n_kv, d) = (9, 3, 64);
    let channels = n_kv * d;
    let mut store = CompressedStore::new(s.config.clone(), s.buffer, channels, d, 0)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut random =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect() };
    let x = random(tokens * channels);
    store.append(&x, &x, false)?;
    let q = random(n_head * d);
    let pool = Pool::new(1);
    let shape = AttentionShape {
        n_head,
        n_kv_head: n_kv,
        t: 1,
        total: tokens,
        d,
    };
    fn view(data: &[f32], tokens: usize, d: usize) -> HeadsView<'_> {
        HeadsView {
            data,
            head_stride: tokens * d,
            row_stride: d,
        }
    }
    let mut out = vec![0f32; n_head * d];
    if std::env::args().nth(3).as_deref() == Some("packed") {
        // Only the packed path, for a profiler.
        let packed = time(|| attend_decode(&store, &q, n_head, &mut out, &pool));
        println!(
            "{spec}: attention from the packed codes {:.3} ms",
            packed * 1e3
        );
        return Ok(());
    }
    let (mut k, mut v) = (vec![0f32; tokens * channels], vec![0f32; tokens * channels]);
    let materialise = time(|| {
        store.materialise_into(true, &mut k, tokens, 0);
        store.materialise_into(false, &mut v, tokens, 0);
        std::hint::black_box((&k, &v));
    });
    let (kv, vv) = (view(&k, tokens, d), view(&v, tokens, d));
    // The f32 attention and the packed one, timed on the same pool.
    let mut both = |pool: &Pool| {
        let dense = time(|| attend(&q, kv, vv, shape, &mut out, pool));
        let packed = time(|| attend_decode(&store, &q, n_head, &mut out, pool));
        (dense, packed)
    };
    let (dense, packed) = both(&pool);
    let (dense2, packed2) = both(&Pool::new(2));
    println!(
        "{spec}: {tokens} tokens, ms per layer per decode step: 1 thread: f32 attention {:.3} | dequantise all + f32 attention {:.3} | from the packed codes {:.3} ({:.2}x the f32 attention's speed); 2 threads: f32 {:.3} | packed {:.3} ({:.2}x)",
        dense * 1e3,
        (materialise + dense) * 1e3,
        packed * 1e3,
        dense / packed,
        dense2 * 1e3,
        packed2 * 1e3,
        dense2 / packed2
    );
    Ok(())
}
