//! Micro-benchmark: sparse `y = x Wᵀ` against the dense f32 product the runtime uses
//! (candle's matmul), on SmolLM2-135M's projection shapes, for decode (`n = 1`) and a prompt
//! chunk (`n = 64` by default).
//!
//! `RAYON_NUM_THREADS=2 cargo bench -p ferrite-sparse --bench sparse_matmul -- [reps] [n]`
//!
//! A plain harness rather than criterion: dense and sparse runs are interleaved repetition by
//! repetition, so a busy shared machine slows both alike; each is reported by its fastest
//! repetition (the one least disturbed by other processes) and the ratio is of those.
//! The masks are synthetic (random 50% and random 2:4 patterns), not a pruning method.

use candle_core::{Device, Tensor};
use ferrite_kernels::pool;
use ferrite_sparse::{Isa, Layout, SparseMatrix};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::time::Instant;

/// SmolLM2-135M projections `(name, rows, cols)`: q/o, k/v, gate/up, down.
const SHAPES: [(&str, usize, usize); 4] = [
    ("q,o 576x576", 576, 576),
    ("k,v 192x576", 192, 576),
    ("gate,up 1536x576", 1536, 576),
    ("down 576x1536", 576, 1536),
];

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn masked(rng: &mut StdRng, rows: usize, cols: usize, layout: Layout) -> Vec<f32> {
    let mut w: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
    match layout {
        Layout::Nm { n, m } => {
            for g in w.chunks_mut(m) {
                let mut idx: Vec<usize> = (0..g.len()).collect();
                for i in (1..idx.len()).rev() {
                    idx.swap(i, rng.gen_range(0..=i));
                }
                idx.iter().skip(n).for_each(|&j| g[j] = 0.0);
            }
        }
        _ => w.iter_mut().for_each(|x| {
            if rng.gen_bool(0.5) {
                *x = 0.0
            }
        }),
    }
    w
}

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let reps: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(30);
    let chunk: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let pool = pool::global();
    let mut rng = StdRng::seed_from_u64(0);
    println!(
        "threads {} (RAYON_NUM_THREADS), {reps} interleaved repetitions; ratio = dense f32 time / sparse time",
        pool.threads()
    );
    println!(
        "{:<18} {:>4} {:>8} {:>11} {:>11} {:>7} {:>11}",
        "shape", "n", "layout", "dense µs", "sparse µs", "ratio", "AVX2 µs"
    );
    for (name, rows, cols) in SHAPES {
        for layout in [Layout::Bitmap, Layout::Nm { n: 2, m: 4 }, Layout::Csr] {
            let dense = masked(&mut rng, rows, cols, layout);
            let s = SparseMatrix::encode(&dense, rows, cols, layout).expect("encodable");
            let wt = Tensor::from_vec(dense, (rows, cols), &Device::Cpu)?;
            for n in [1, chunk] {
                let xv: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let x = Tensor::from_vec(xv.clone(), (n, cols), &Device::Cpu)?;
                let mut y = vec![0f32; n * rows];
                let (mut td, mut ts, mut t2) = (Vec::new(), Vec::new(), Vec::new());
                // Inner loop long enough for the timer; one warm-up repetition dropped.
                let inner = if n == 1 { 50 } else { 2 };
                for rep in 0..=reps {
                    let t = Instant::now();
                    for _ in 0..inner {
                        std::hint::black_box(x.broadcast_matmul(&wt.t()?)?);
                    }
                    let d = t.elapsed().as_secs_f64() / inner as f64;
                    let t = Instant::now();
                    for _ in 0..inner {
                        s.matmul(&xv, &mut y, pool);
                        std::hint::black_box(&y);
                    }
                    let sp = t.elapsed().as_secs_f64() / inner as f64;
                    // The AVX2 kernels, for CPUs where a wider set is detected.
                    let t = Instant::now();
                    for _ in 0..inner {
                        s.matmul_with(&xv, &mut y, pool, Isa::Avx2.min(Isa::detect()));
                        std::hint::black_box(&y);
                    }
                    let avx2 = t.elapsed().as_secs_f64() / inner as f64;
                    if rep > 0 {
                        td.push(d);
                        ts.push(sp);
                        t2.push(avx2);
                    }
                }
                println!(
                    "{name:<18} {n:>4} {:>8} {:>11.1} {:>11.1} {:>6.2}x {:>11.1}",
                    layout.to_string(),
                    best(&td) * 1e6,
                    best(&ts) * 1e6,
                    best(&td) / best(&ts),
                    best(&t2) * 1e6
                );
            }
        }
    }
    Ok(())
}
