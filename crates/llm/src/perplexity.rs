//! Perplexity `exp(mean NLL)`, in the two modes later work reuses:
//! - chunked: consecutive chunks of `ctx` tokens scored independently (targets 1..len-1 of each
//!   chunk), as HF's and llama.cpp's evaluations do;
//! - streaming: one token at a time through a KV-cache policy (feed token t, score token t+1),
//!   the method of StreamingLLM's long-text evaluation.

use crate::kv_cache::{FullCache, KvCache};
use crate::linear::Linear;
use crate::llama::Llama;
use anyhow::{bail, Result};
use candle_core::{IndexOp, Tensor};
use ferrite_kernels::{pool, rows};
use std::time::Instant;

/// Rows of logits materialised at once when scoring a chunk.
const SCORE_ROWS: usize = 128;

/// A perplexity measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Perplexity {
    /// exp(mean NLL).
    pub ppl: f64,
    /// Predictions scored.
    pub tokens_scored: usize,
    /// Sum of NLL (nats).
    pub nll_sum: f64,
    /// Wall time.
    pub seconds: f64,
    /// Tokens scored per second.
    pub tokens_per_second: f64,
    /// Largest KV-cache footprint seen.
    pub kv_bytes_peak: usize,
    /// NLL of every prediction, in order (streaming mode only).
    #[serde(skip)]
    pub nll: Vec<f64>,
}

impl Perplexity {
    fn new(nll_sum: f64, count: usize, seconds: f64, kv_bytes_peak: usize, nll: Vec<f64>) -> Self {
        Self {
            ppl: (nll_sum / count as f64).exp(),
            tokens_scored: count,
            nll_sum,
            seconds,
            tokens_per_second: count as f64 / seconds.max(1e-9),
            kv_bytes_peak,
            nll,
        }
    }
}

/// Sum of -log p(target) for each row of `hidden` (final-normed hidden states), through the
/// output projection `head`, `SCORE_ROWS` rows of logits at a time.
fn nll_of_rows(head: &Linear, hidden: &Tensor, targets: &[u32]) -> Result<f64> {
    let mut sum = 0.0;
    for start in (0..targets.len()).step_by(SCORE_ROWS) {
        let n = SCORE_ROWS.min(targets.len() - start);
        let logits = head.forward(&hidden.narrow(0, start, n)?)?;
        let vocab = logits.dim(1)?;
        sum += crate::cpu_ops::with_f32_contiguous(&logits, |l| {
            nll_of_logits(l, vocab, &targets[start..start + n])
        })?;
    }
    Ok(sum)
}

/// `Σ_r −log softmax(logits_r)[target_r]` for rows of `vocab` logits, one per target: the NLL
/// every perplexity in ferrite is built from (chunked, streaming and re-computation).
pub fn nll_of_logits(logits: &[f32], vocab: usize, targets: &[u32]) -> f64 {
    rows::nll_of_targets(logits, vocab, targets, pool::global())
}

/// Chunked perplexity of `ids` with chunks of `ctx` tokens. `progress(done, total)` is called
/// after each chunk.
pub fn chunked(
    model: &Llama,
    ids: &[u32],
    ctx: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Perplexity> {
    if ids.len() < 2 {
        bail!(
            "need at least 2 tokens to measure perplexity, got {}",
            ids.len()
        );
    }
    if ctx < 2 || ctx > model.config.context_length {
        bail!(
            "--ctx {ctx} must be between 2 and the model's context {}",
            model.config.context_length
        );
    }
    let t0 = Instant::now();
    let (mut nll, mut count, mut peak) = (0.0, 0, 0);
    let mut cache = FullCache::new(&model.kv_geometry());
    // Every chunk multiplies ctx rows by the output projection: dequantise it once (as an f32
    // model holds it), not once per SCORE_ROWS block of every chunk.
    let head = Linear::dense(model.lm_head.to_dense()?)?;
    for chunk in ids.chunks(ctx) {
        if chunk.len() < 2 {
            break;
        }
        cache.reset();
        let hidden = model.forward_hidden(chunk, &mut cache)?;
        peak = peak.max(cache.heap_bytes());
        let n = chunk.len() - 1;
        nll += nll_of_rows(&head, &hidden.i(0..n)?, &chunk[1..])?;
        count += n;
        progress(count, ids.len());
    }
    Ok(Perplexity::new(
        nll,
        count,
        t0.elapsed().as_secs_f64(),
        peak,
        Vec::new(),
    ))
}

/// Streaming perplexity: token t is fed through `cache`, token t+1 is scored; `ids.len() - 1`
/// predictions. `progress(done, total)` is called after every token.
pub fn streaming(
    model: &Llama,
    ids: &[u32],
    cache: &mut dyn KvCache,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Perplexity> {
    if ids.len() < 2 {
        bail!(
            "need at least 2 tokens to measure perplexity, got {}",
            ids.len()
        );
    }
    let t0 = Instant::now();
    let mut nlls = Vec::with_capacity(ids.len() - 1);
    let mut peak = 0;
    for t in 0..ids.len() - 1 {
        let hidden = model.forward_hidden(&ids[t..t + 1], cache)?;
        peak = peak.max(cache.heap_bytes());
        nlls.push(nll_of_rows(&model.lm_head, &hidden, &ids[t + 1..t + 2])?);
        progress(t + 1, ids.len() - 1);
    }
    let sum = nlls.iter().sum();
    Ok(Perplexity::new(
        sum,
        nlls.len(),
        t0.elapsed().as_secs_f64(),
        peak,
        nlls,
    ))
}
