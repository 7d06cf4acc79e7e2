//! Criterion micro-benchmarks of every kernel at SmolLM2-135M's shapes (hidden 576, MLP 1536,
//! 9 query / 3 key heads of 64, vocabulary 49152): each dot-product variant this CPU has, the
//! decode matvec on the pool, the prompt-sized tiled GEMM (Q4_1 tiles and f32), activation
//! quantisation, RMSNorm, softmax, SwiGLU, RoPE, and attention for decode and for a 512-token
//! prompt chunk. `cargo bench -p ferrite-kernels` (add `-- <filter>` for one group).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrite_kernels::attention::{attend, AttentionShape, HeadsView};
use ferrite_kernels::pool::Pool;
use ferrite_kernels::quantize_q8::quantize_row;
use ferrite_kernels::tiled_gemm::{self, WeightRows};
use ferrite_kernels::{q4_0, q4_1, q8_0, rope, rows, BlockQ8, Format, QMatrix, QK};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::hint::black_box;

/// `rows × cols` weights of `format` with random codes and scales around 0.01.
fn random_blocks(rng: &mut StdRng, format: Format, rows: usize, cols: usize) -> Vec<u8> {
    let bytes = format.block_bytes();
    let mut out = Vec::with_capacity(rows * cols / QK * bytes);
    for _ in 0..rows * cols / QK {
        let scale = half::f16::from_f32(rng.gen_range(0.005..0.02)).to_le_bytes();
        out.extend_from_slice(&scale);
        if format == Format::Q4_1 {
            out.extend_from_slice(&half::f16::from_f32(-0.05).to_le_bytes());
        }
        (2 + usize::from(format == Format::Q4_1) * 2..bytes).for_each(|_| out.push(rng.gen()));
    }
    out
}

fn random_f32(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

fn dot_products(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let cols = 1536;
    let mut xq = vec![BlockQ8::default(); cols / QK];
    quantize_row(&random_f32(&mut rng, cols), &mut xq);
    let mut g = c.benchmark_group("vec_dot_1536");
    g.throughput(Throughput::Elements(cols as u64));
    for (format, variants) in [
        (Format::Q4_0, q4_0::vec_dot_variants()),
        (Format::Q4_1, q4_1::vec_dot_variants()),
        (Format::Q8_0, q8_0::vec_dot_variants()),
    ] {
        let w = random_blocks(&mut rng, format, 1, cols);
        for (name, dot) in variants {
            g.bench_function(BenchmarkId::new(format!("{format:?}"), name), |b| {
                b.iter(|| dot(black_box(&w), black_box(&xq)))
            });
        }
    }
    g.finish();
}

fn decode_matvec(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let mut g = c.benchmark_group("matvec");
    for threads in [1, 2] {
        let pool = Pool::new(threads);
        for (format, rows, cols) in [
            (Format::Q4_1, 1536, 576),
            (Format::Q4_1, 576, 1536),
            (Format::Q8_0, 49152, 576),
        ] {
            let data = random_blocks(&mut rng, format, rows, cols);
            let w = QMatrix::new(format, rows, cols, &data).expect("valid shape");
            let x = random_f32(&mut rng, cols);
            let mut y = vec![0f32; rows];
            g.throughput(Throughput::Bytes(data.len() as u64));
            let id = format!("{format:?}_{rows}x{cols}_t{threads}");
            g.bench_function(id, |b| b.iter(|| w.matmul(black_box(&x), &mut y, &pool)));
        }
    }
    g.finish();
}

fn row_ops(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2);
    let pool = Pool::new(1);
    let mut g = c.benchmark_group("rows");
    let x = random_f32(&mut rng, 576);
    let mut xq = vec![BlockQ8::default(); 576 / QK];
    g.bench_function("quantize_q8_576", |b| {
        b.iter(|| quantize_row(black_box(&x), &mut xq))
    });
    let gain = random_f32(&mut rng, 576);
    let mut y = vec![0f32; 576];
    g.bench_function("rms_norm_576", |b| {
        b.iter(|| rows::rms_norm_rows(black_box(&x), &gain, 1e-5, &mut y, &pool))
    });
    let logits = random_f32(&mut rng, 49152);
    g.bench_function("softmax_49152", |b| {
        b.iter(|| {
            let mut l = logits.clone();
            rows::softmax_rows(&mut l, 49152, &pool);
            l
        })
    });
    let (gate, up) = (
        random_f32(&mut rng, 512 * 1536),
        random_f32(&mut rng, 512 * 1536),
    );
    g.bench_function("swiglu_512x1536", |b| {
        b.iter(|| {
            let mut h = gate.clone();
            rows::swiglu_rows(&mut h, &up, 1536, &pool);
            h
        })
    });
    let (cos, sin): (Vec<f32>, Vec<f32>) = (0..32).map(|j| (j as f32).sin_cos()).unzip();
    let q = random_f32(&mut rng, 9 * 64);
    g.bench_function("rope_9x64", |b| {
        b.iter(|| {
            let mut v = q.clone();
            rope::rotate(&mut v, &cos, &sin, 1, 64, false);
            v
        })
    });
    g.finish();
}

fn prompt_gemm(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(4);
    let mut g = c.benchmark_group("prompt_gemm");
    let n = 512;
    for threads in [1, 2] {
        let pool = Pool::new(threads);
        for (rows, cols) in [(1536, 576), (576, 1536)] {
            let data = random_blocks(&mut rng, Format::Q4_1, rows, cols);
            let q = QMatrix::new(Format::Q4_1, rows, cols, &data).expect("valid shape");
            let mut dense = vec![0f32; rows * cols];
            q.dequantize(&mut dense);
            let x = random_f32(&mut rng, n * cols);
            let mut y = vec![0f32; n * rows];
            g.throughput(Throughput::Elements((2 * n * rows * cols) as u64));
            for (name, w) in [
                ("q4_1", WeightRows::Quantized(q)),
                (
                    "f32",
                    WeightRows::F32 {
                        values: &dense,
                        rows,
                        cols,
                    },
                ),
            ] {
                let id = format!("{name}_{n}x{cols}_by_{rows}_t{threads}");
                g.bench_function(id, |b| {
                    b.iter(|| tiled_gemm::matmul(w, black_box(&x), &mut y, &pool))
                });
            }
        }
    }
    g.finish();
}

fn prompt_attention(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(5);
    let mut g = c.benchmark_group("attention_prompt");
    let (t, d) = (512, 64);
    let q = random_f32(&mut rng, 9 * t * d);
    let k = random_f32(&mut rng, 3 * t * d);
    let v = random_f32(&mut rng, 3 * t * d);
    let view = |data| HeadsView {
        data,
        head_stride: t * d,
        row_stride: d,
    };
    let shape = AttentionShape {
        n_head: 9,
        n_kv_head: 3,
        t,
        total: t,
        d,
    };
    let mut out = vec![0f32; t * 9 * d];
    for threads in [1, 2] {
        let pool = Pool::new(threads);
        g.bench_function(format!("gqa9x3_d64_causal{t}_t{threads}"), |b| {
            b.iter(|| attend(black_box(&q), view(&k), view(&v), shape, &mut out, &pool))
        });
    }
    g.finish();
}

fn decode_attention(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(3);
    let pool = Pool::new(1);
    let mut g = c.benchmark_group("attention_decode");
    for total in [256, 1024, 2048] {
        let cap = total + 64;
        let q = random_f32(&mut rng, 9 * 64);
        let k = random_f32(&mut rng, 3 * cap * 64);
        let v = random_f32(&mut rng, 3 * cap * 64);
        let view = |data| HeadsView {
            data,
            head_stride: cap * 64,
            row_stride: 64,
        };
        let shape = AttentionShape {
            n_head: 9,
            n_kv_head: 3,
            t: 1,
            total,
            d: 64,
        };
        let mut out = vec![0f32; 9 * 64];
        g.throughput(Throughput::Elements(total as u64));
        g.bench_function(format!("gqa9x3_d64_{total}"), |b| {
            b.iter(|| attend(black_box(&q), view(&k), view(&v), shape, &mut out, &pool))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    dot_products,
    decode_matvec,
    prompt_gemm,
    row_ops,
    prompt_attention,
    decode_attention
);
criterion_main!(benches);
