//! Autoregressive generation: prefill the prompt in chunks, then decode one token at a time
//! through the KV-cache policy until EOS / `<|im_end|>` or the token budget.

use crate::kv_cache::KvCache;
use crate::llama::Llama;
use crate::sampling::Sampler;
use crate::tokenizer::{TextStreamer, Tokenizer};
use anyhow::Result;
use std::time::Instant;

/// Prompt tokens run through the model at once during prefill.
pub const PREFILL_CHUNK: usize = 512;

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A stop token (EOS, `<|im_end|>`) was produced.
    Eos,
    /// `max_tokens` were produced.
    MaxTokens,
    /// The cache policy cannot take another token (the context is full).
    ContextFull,
}

/// What a generation produced and how fast.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Generation {
    /// Generated token ids (the stop token included when there was one).
    pub tokens: Vec<u32>,
    /// Generated text (stop token excluded).
    pub text: String,
    /// Prompt tokens processed.
    pub prompt_tokens: usize,
    /// Prefill time.
    pub prompt_seconds: f64,
    /// Decode time (tokens after the first).
    pub decode_seconds: f64,
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// Largest KV-cache footprint seen.
    pub kv_bytes_peak: usize,
}

impl Generation {
    /// Prompt tokens per second.
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_seconds.max(1e-9)
    }
    /// Decode tokens per second (excluding the token produced by prefill).
    pub fn decode_tps(&self) -> f64 {
        self.tokens.len().saturating_sub(1) as f64 / self.decode_seconds.max(1e-9)
    }
}

/// Runs `tokens` through the model in chunks and returns the logits after the last one.
pub fn prefill(model: &Llama, tokens: &[u32], cache: &mut dyn KvCache) -> Result<Vec<f32>> {
    let mut logits = Vec::new();
    for chunk in tokens.chunks(PREFILL_CHUNK) {
        logits = model.forward_last(chunk, cache)?;
    }
    Ok(logits)
}

/// Generates up to `max_tokens` after `prompt`, appending to `cache` (which may already hold a
/// conversation). `on_text` receives text pieces as soon as they are complete.
pub fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    cache: &mut dyn KvCache,
    prompt: &[u32],
    max_tokens: usize,
    sampler: &mut Sampler,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    let t0 = Instant::now();
    let mut logits = prefill(model, prompt, cache)?;
    let prompt_seconds = t0.elapsed().as_secs_f64();
    let mut kv_bytes_peak = cache.heap_bytes();
    let mut history = prompt.to_vec();
    let mut tokens = Vec::new();
    let mut streamer = TextStreamer::new(tokenizer);
    let mut text = String::new();
    let mut stop_reason = StopReason::MaxTokens;
    let t1 = Instant::now();
    for i in 0..max_tokens {
        let next = sampler.sample(&mut logits, &history);
        tokens.push(next);
        history.push(next);
        if tokenizer.stop_ids.contains(&next) {
            stop_reason = StopReason::Eos;
            break;
        }
        if let Some(piece) = streamer.push(next)? {
            on_text(&piece);
            text.push_str(&piece);
        }
        if cache.remaining() == Some(0) {
            stop_reason = StopReason::ContextFull;
            break;
        }
        if i + 1 < max_tokens {
            logits = model.forward_last(&[next], cache)?;
            kv_bytes_peak = kv_bytes_peak.max(cache.heap_bytes());
        }
    }
    Ok(Generation {
        tokens,
        text,
        prompt_tokens: prompt.len(),
        prompt_seconds,
        decode_seconds: t1.elapsed().as_secs_f64(),
        stop_reason,
        kv_bytes_peak,
    })
}
