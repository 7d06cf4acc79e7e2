//! Decode attention read straight from a [`CompressedStore`]: nothing the size of the history is
//! dequantised, so a decode step costs about what attention over an f32 cache costs, plus the
//! unpacking, instead of a write and a re-read of the whole history in f32.
//!
//! Per KV head, the keys are walked one compressed block at a time
//! ([`CompressedStore::for_each_tile`]): the block's quantised backbone and outliers `D̂ + S`
//! (GEAR, Kang et al. 2024, Alg. 1) are unpacked into an L1-sized tile and dotted with the
//! queries of the head's group, and the low-rank part enters through its factors,
//! `q · (A Bᵀ)_t = A_t · (Bᵀ q)` — `r` products per token instead of `r · d`. After the softmax
//! the values are read the same way: `Σ_t p_t v_t = Σ_t p_t (D̂ + S)_t + B (Aᵀ p)`.

use crate::low_rank::LowRank;
use crate::policy::CompressedStore;
use candle_core::{DType, Tensor};
use ferrite_kernels::attention::accumulate_weighted_rows;
use ferrite_kernels::pool::Pool;
use ferrite_kernels::rows::{axpy, dot, exp_nonpositive, softmax_in_place, sum_f64};
use std::ops::Range;
use std::sync::Mutex;

/// `out[h] = Σ_j softmax_j(q_h · k_j / √d) v_j` over every token of `store`, for one new query
/// per head: `q, out: [n_head, d]` row-major, query head `h` reading KV head
/// `h / (n_head / n_kv_head)` (grouped-query attention, no head repeated).
///
/// Work is split over `pool` by KV head and, within a head, by runs of tiles (one per thread,
/// split-K as in flash-decoding), so three heads spread evenly over two threads: each run
/// returns its own maximum score, exponential sum and unnormalised output, and the runs are
/// merged exactly, `y = Σ_p e^{m_p − m} y_p / Σ_p e^{m_p − m} l_p`.
pub fn attend_decode(
    store: &CompressedStore,
    q: &[f32],
    n_head: usize,
    out: &mut [f32],
    pool: &Pool,
) {
    let d = store.head_dim();
    let n_kv_head = store.channels() / d;
    let group_len = n_head / n_kv_head * d;
    let n_tiles = store.n_tiles();
    let runs = pool.threads().min(n_tiles).max(1);
    let partials: Vec<Mutex<Partial>> = (0..n_kv_head * runs)
        .map(|_| Mutex::new(Partial::default()))
        .collect();
    pool.run(n_kv_head * runs, &|task| {
        let (g, run) = (task / runs, task % runs);
        let tiles = run * n_tiles / runs..(run + 1) * n_tiles / runs;
        let q_g = &q[g * group_len..(g + 1) * group_len];
        let part = attend_tiles(store, g, tiles, q_g, runs == 1);
        *partials[task].lock().unwrap_or_else(|e| e.into_inner()) = part;
    });
    let partials: Vec<Partial> = partials
        .into_iter()
        .map(|p| p.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    for (y_g, parts) in out
        .chunks_exact_mut(group_len)
        .zip(partials.chunks_exact(runs))
    {
        for (r, y) in y_g.chunks_exact_mut(d).enumerate() {
            let m = parts
                .iter()
                .map(|p| p.max[r])
                .fold(f32::NEG_INFINITY, f32::max);
            y.fill(0.0);
            let mut total = 0f32;
            for p in parts {
                let w = exp_nonpositive(p.max[r] - m);
                total += w * p.sum[r];
                axpy(w, &p.y[r * d..(r + 1) * d], y);
            }
            y.iter_mut().for_each(|v| *v /= total);
        }
    }
}

/// [`attend_decode`] on tensors: the new queries `q: [n_head, 1, d]` over `store` on the kernel
/// pool, as the `[1, n_head·d]` attention output a [`ferrite_llm::KvCache::attend`] returns.
pub fn attend_decode_tensor(store: &CompressedStore, q: &Tensor) -> anyhow::Result<Tensor> {
    let (n_head, _, d) = q.dims3()?;
    let q_values = q.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; n_head * d];
    attend_decode(
        store,
        &q_values,
        n_head,
        &mut out,
        ferrite_kernels::pool::global(),
    );
    Ok(Tensor::from_vec(out, (1, n_head * d), q.device())?)
}

/// One run of tiles of one KV head: per query, the largest scaled score `m`, `l = Σ_t e^{s_t − m}`
/// and the unnormalised output `Σ_t e^{s_t − m} v_t`.
#[derive(Default)]
struct Partial {
    max: Vec<f32>,
    sum: Vec<f32>,
    y: Vec<f32>,
}

/// Working buffers of one KV head's attention: the current tile's low-rank factors in f32,
/// transposed (`Aᵀ: [rank, n_b]`, `Bᵀ: [rank, d]`), and their projections.
#[derive(Default)]
struct Buffers {
    at: Vec<f32>,
    bt: Vec<f32>,
    /// `Bᵀ q_r` (keys) or `Aᵀ p_r` (values), `[n_rep, rank]`.
    proj: Vec<f32>,
}

impl Buffers {
    /// Loads the tile's low-rank factors (if any); returns the rank (0 for none).
    fn load(&mut self, low_rank: Option<&LowRank>) -> usize {
        low_rank.map_or(0, |lr| {
            lr.factors_f32(&mut self.at, &mut self.bt);
            lr.rank
        })
    }

    /// `proj[r, k] = f_k · x_r` for the rows `f_k` of `f: [rank, n]` and `x: [n_rep, n]`.
    fn project(&mut self, use_a: bool, x: &[f32], n: usize, rank: usize) {
        let f = if use_a { &self.at } else { &self.bt };
        let width = f.len() / rank;
        self.proj.clear();
        for x_r in x.chunks_exact(n) {
            for f_k in f.chunks_exact(width) {
                self.proj.push(dot(&f_k[..n], x_r));
            }
        }
    }
}

/// The queries `q: [n_rep, d]` of KV head `g` over the tokens of tiles `tiles`.
///
/// With `normalise` (a single run) the weights are normalised before the values are summed, in
/// the same order and with the same operations as the f32 cache's fused attention
/// (`ferrite_kernels::attention`), so exact rows give that attention bit for bit: on the
/// quantised runtime, whose 8-bit activations amplify rounding-level differences, a different
/// order alone would change greedy generations within a few dozen tokens.
fn attend_tiles(
    store: &CompressedStore,
    g: usize,
    tiles: Range<usize>,
    q: &[f32],
    normalise: bool,
) -> Partial {
    let (d, block) = (store.head_dim(), store.block_len());
    let n_rep = q.len() / d;
    let first = tiles.start * block;
    let len = (tiles.end * block).min(store.len()) - first;
    let mut buf = Buffers::default();
    let mut tile = vec![0f32; block * d];
    // scores[r · len + t] = q_r · k_t, t counted from the run's first token.
    let mut scores = vec![0f32; n_rep * len];
    store.for_each_tile(true, g, tiles.clone(), &mut tile, |t0, rows, low_rank| {
        let (t0, n) = (t0 - first, rows.len() / d);
        for (r, q_r) in q.chunks_exact(d).enumerate() {
            tile_scores(q_r, rows, &mut scores[r * len + t0..][..n]);
        }
        let rank = buf.load(low_rank);
        if rank > 0 {
            // s_t += A_t · (Bᵀ q_r) = Σ_k (Bᵀ q_r)_k Aᵀ[k, t]
            buf.project(false, q, d, rank);
            for (r, btq) in buf.proj.chunks_exact(rank).enumerate() {
                let s = &mut scores[r * len + t0..][..n];
                for (&c, a_k) in btq.iter().zip(buf.at.chunks_exact(n)) {
                    axpy(c, a_k, s);
                }
            }
        }
    });
    let scale = 1.0 / (d as f32).sqrt();
    let mut part = Partial {
        max: Vec::with_capacity(n_rep),
        sum: Vec::with_capacity(n_rep),
        y: vec![0f32; n_rep * d],
    };
    for p in scores.chunks_exact_mut(len) {
        p.iter_mut().for_each(|s| *s *= scale);
        if normalise {
            // The f32 cache's softmax itself; a single run needs no maximum to merge with.
            softmax_in_place(p);
            part.max.push(0.0);
            part.sum.push(1.0);
        } else {
            let m = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            p.iter_mut().for_each(|s| *s = exp_nonpositive(*s - m));
            part.max.push(m);
            part.sum.push(sum_f64(p) as f32);
        }
    }
    let mut probs = Vec::with_capacity(n_rep * block);
    let y = &mut part.y;
    store.for_each_tile(false, g, tiles, &mut tile, |t0, rows, low_rank| {
        let (t0, n) = (t0 - first, rows.len() / d);
        for (r, y_r) in y.chunks_exact_mut(d).enumerate() {
            accumulate_weighted_rows(&scores[r * len + t0..][..n], |t| &rows[t * d..][..d], y_r);
        }
        let rank = buf.load(low_rank);
        if rank > 0 {
            // y_r += B (Aᵀ p_r) = Σ_k (Aᵀ p_r)_k Bᵀ[k, ·]
            probs.clear();
            for r in 0..n_rep {
                probs.extend_from_slice(&scores[r * len + t0..][..n]);
            }
            buf.project(true, &probs, n, rank);
            for (y_r, atp) in y.chunks_exact_mut(d).zip(buf.proj.chunks_exact(rank)) {
                for (&c, b_k) in atp.iter().zip(buf.bt.chunks_exact(d)) {
                    axpy(c, b_k, y_r);
                }
            }
        }
    });
    part
}

/// `s_t = q · k_t` for the rows `k_t` of a tile (the same dot product the f32 attention uses).
fn tile_scores(q: &[f32], rows: &[f32], s: &mut [f32]) {
    for (s_t, k_t) in s.iter_mut().zip(rows.chunks_exact(q.len())) {
        *s_t = dot(q, k_t);
    }
}

#[cfg(test)]
mod tests {
    use crate::{GearCache, GearSpec};
    use anyhow::Result;
    use candle_core::{Device, Tensor};
    use ferrite_llm::config::RopeStyle;
    use ferrite_llm::rope::Rope;
    use ferrite_llm::{KvCache, KvGeometry};
    use rand::{Rng, SeedableRng};

    /// Plain f64 attention of `q: [n_head, d]` over `k, v: [n_kv_head, len, d]`.
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        n_head: usize,
        n_kv: usize,
        d: usize,
    ) -> Vec<f64> {
        let len = k.len() / (n_kv * d);
        let mut out = vec![0f64; n_head * d];
        for h in 0..n_head {
            let g = h / (n_head / n_kv);
            let row = |x: &[f32], j: usize| x[(g * len + j) * d..(g * len + j + 1) * d].to_vec();
            let s: Vec<f64> = (0..len)
                .map(|j| {
                    let kj = row(k, j);
                    (0..d)
                        .map(|c| q[h * d + c] as f64 * kj[c] as f64)
                        .sum::<f64>()
                        / (d as f64).sqrt()
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for (j, ej) in e.iter().enumerate() {
                let vj = row(v, j);
                for c in 0..d {
                    out[h * d + c] += ej / z * vj[c] as f64;
                }
            }
        }
        out
    }

    /// Attention from the packed codes equals attention over the dequantised K/V, for every
    /// backbone and with outliers and low rank on, at every decode step across block edges.
    #[test]
    fn decode_attention_from_codes_matches_the_dequantised_cache() -> Result<()> {
        // A generic head width and the fixed-width one of SmolLM2 (3 queries per KV head).
        for (n_head, n_kv, d) in [(4, 2, 8), (6, 2, 64), (9, 3, 64)] {
            compare_with_dequantised(n_head, n_kv, d)?;
        }
        Ok(())
    }

    fn compare_with_dequantised(n_head: usize, n_kv: usize, d: usize) -> Result<()> {
        let dev = Device::Cpu;
        let geometry = KvGeometry {
            n_layer: 1,
            n_kv_head: n_kv,
            head_dim: d,
            max_tokens: 512,
            device: dev.clone(),
        };
        let rope = Rope::new(10000.0, d, RopeStyle::Interleaved, &dev);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut rand = |shape: (usize, usize, usize)| -> Result<Tensor> {
            let n = shape.0 * shape.1 * shape.2;
            let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            Ok(Tensor::from_vec(x, shape, &dev)?)
        };
        for spec in [
            "gear:4,buffer=16",
            "gear:2,group=16,buffer=16",
            "kivi:2,group=16,buffer=16",
            "quant:8,buffer=16,exact=f16",
            "gear:4,tails=1,buffer=16",
            "quant:8,buffer=256",
        ] {
            let spec = GearSpec::parse(spec)?;
            let (mut packed, mut dense) = (
                GearCache::new(spec.clone(), &geometry)?,
                GearCache::new(spec.clone(), &geometry)?,
            );
            let mut worst = 0f64;
            for step in 0..60 {
                let t = if step == 0 { 21 } else { 1 };
                let positions = packed.begin_step(t)?;
                dense.begin_step(t)?;
                let angles = rope.angles(&positions)?;
                let (q, k, v) = (
                    rand((n_head, t, d))?,
                    rand((n_kv, t, d))?,
                    rand((n_kv, t, d))?,
                );
                let mut no_dense = |_: &Tensor, _: &Tensor| -> Result<Tensor> {
                    anyhow::bail!("decode must not fall back to the dense path")
                };
                if t > 1 {
                    packed.update(0, &k, &v, &angles)?;
                    dense.update(0, &k, &v, &angles)?;
                    continue;
                }
                let y = packed.attend(0, &q, &k, &v, &angles, &mut no_dense)?;
                let (k_all, v_all) = dense.update(0, &k, &v, &angles)?;
                let flat = |x: &Tensor| -> Result<Vec<f32>> { Ok(x.flatten_all()?.to_vec1()?) };
                let want = reference(&flat(&q)?, &flat(&k_all)?, &flat(&v_all)?, n_head, n_kv, d);
                for (a, b) in flat(&y)?.iter().zip(&want) {
                    worst = worst.max((*a as f64 - b).abs());
                }
            }
            assert!(worst < 1e-5, "{}: max |diff| {worst}", spec.to_spec());
        }
        Ok(())
    }

    /// Splitting a head's tiles over threads (split-K) and merging the runs changes nothing
    /// beyond rounding.
    #[test]
    fn runs_merged_over_threads_equal_one_run() -> Result<()> {
        let spec = GearSpec::parse("gear:4,buffer=16")?;
        let (n_head, n_kv, d) = (6, 3, 8);
        let mut store = crate::CompressedStore::new(spec.config, 16, n_kv * d, d, 0)?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut random =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect() };
        let x = random(300 * n_kv * d);
        store.append(&x, &random(x.len()), false)?;
        let q = random(n_head * d);
        let attend = |threads: usize| {
            let mut out = vec![0f32; n_head * d];
            let pool = ferrite_kernels::pool::Pool::new(threads);
            super::attend_decode(&store, &q, n_head, &mut out, &pool);
            out
        };
        let one = attend(1);
        for threads in [2, 3, 5] {
            let worst = one
                .iter()
                .zip(attend(threads))
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "{threads} threads: max |diff| {worst}");
        }
        Ok(())
    }
}
