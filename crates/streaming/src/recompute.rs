//! Sliding window with re-computation (Xiao et al. 2023, "Efficient Streaming Language Models
//! with Attention Sinks", §1 and Fig. 1c): every token is predicted by re-encoding the `W` most
//! recent tokens from scratch at positions `0..W`. No state survives between tokens, so quality
//! is that of a model always reading a fresh window — the paper's quality oracle — at `O(W²)`
//! cost per token — its speed baseline (Fig. 10).

use anyhow::{bail, Result};
use ferrite_llm::kv_cache::{FullCache, KvCache};
use ferrite_llm::llama::Llama;
use ferrite_llm::perplexity::{nll_of_logits, Perplexity};
use std::time::Instant;

/// Logits `[vocab]` after re-encoding `window` (the most recent tokens) from scratch.
pub fn step_logits(model: &Llama, window: &[u32], cache: &mut FullCache) -> Result<Vec<f32>> {
    cache.reset();
    model.forward_last(window, cache)
}

/// Whether prediction `i` (of token `i + 1`) is scored when scoring every `every`-th one:
/// predictions `every - 1, 2·every - 1, ...`.
pub fn is_scored(i: usize, every: usize) -> bool {
    let every = every.max(1);
    i % every == every - 1
}

/// Perplexity of `ids` with the sliding window with re-computation of `window` tokens. Only
/// every `every`-th prediction is scored (see [`is_scored`]), since each one costs a forward
/// pass over the whole window. `progress(done, total)` is called after each scored prediction.
pub fn perplexity(
    model: &Llama,
    ids: &[u32],
    window: usize,
    every: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Perplexity> {
    if window == 0 || window > model.config.context_length {
        bail!(
            "recompute:{window}: the window must be between 1 and the model's context {}",
            model.config.context_length
        );
    }
    let scored: Vec<usize> = (0..ids.len().saturating_sub(1))
        .filter(|&i| is_scored(i, every))
        .collect();
    if scored.is_empty() {
        bail!(
            "no prediction to score: {} tokens, scoring every {every}th",
            ids.len()
        );
    }
    let t0 = Instant::now();
    let mut cache = FullCache::new(&model.kv_geometry());
    let (mut nll, mut peak) = (Vec::with_capacity(scored.len()), 0);
    for (n, &i) in scored.iter().enumerate() {
        let start = (i + 1).saturating_sub(window);
        let logits = step_logits(model, &ids[start..=i], &mut cache)?;
        peak = peak.max(cache.heap_bytes());
        nll.push(nll_of_logits(
            &logits,
            model.config.vocab_size,
            &ids[i + 1..i + 2],
        ));
        progress(n + 1, scored.len());
    }
    let sum: f64 = nll.iter().sum();
    let seconds = t0.elapsed().as_secs_f64();
    Ok(Perplexity {
        ppl: (sum / nll.len() as f64).exp(),
        tokens_scored: nll.len(),
        nll_sum: sum,
        seconds,
        tokens_per_second: nll.len() as f64 / seconds.max(1e-9),
        kv_bytes_peak: peak,
        nll,
    })
}
