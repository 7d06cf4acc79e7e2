//! Autoregressive generation, the one decode loop of the runtime (the CLI's `generate` and
//! `chat` and the server all call [`generate_with`]): prefill the prompt in chunks, then decode
//! one token at a time through the KV-cache policy until a stop token, a stop sequence, the
//! token budget, a full cache, or a request from outside to stop.
//!
//! Cancellation is polled between prefill chunks and after every token. Stop sequences may span
//! several tokens: text that could be the start of one is held back until it is known not to be,
//! so a caller streaming the pieces never sees any part of a stop sequence.

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
    /// The text reached one of the stop sequences.
    StopSequence,
    /// `max_tokens` were produced.
    MaxTokens,
    /// The cache policy cannot take another token (the context is full).
    ContextFull,
    /// The caller's `should_stop` said so.
    Cancelled,
}

impl StopReason {
    /// OpenAI's `finish_reason`: `stop`, `length` or `cancelled`.
    pub fn finish_reason(self) -> &'static str {
        match self {
            StopReason::Eos | StopReason::StopSequence => "stop",
            StopReason::MaxTokens | StopReason::ContextFull => "length",
            StopReason::Cancelled => "cancelled",
        }
    }
}

/// What to generate and when to stop besides stop tokens.
#[derive(Debug, Clone, Default)]
pub struct GenerateParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Stop sequences: the text ends right before the first one (which is not included).
    pub stop: Vec<String>,
    /// Keep generating past stop tokens (their text is part of the output).
    pub ignore_eos: bool,
}

impl GenerateParams {
    /// `max_tokens`, no stop sequences, stop tokens honoured.
    pub fn new(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            ..Default::default()
        }
    }
}

/// How the caller follows and steers a generation.
pub struct Hooks<'a> {
    /// Polled between prefill chunks and after every token; `true` ends generation with
    /// [`StopReason::Cancelled`].
    pub should_stop: &'a dyn Fn() -> bool,
    /// Receives text pieces as soon as they are final (never a part of a stop sequence).
    pub on_text: &'a mut dyn FnMut(&str),
}

fn never() -> bool {
    false
}

impl<'a> Hooks<'a> {
    /// Streams text to `on_text`; never cancelled.
    pub fn text(on_text: &'a mut dyn FnMut(&str)) -> Self {
        Self {
            should_stop: &never,
            on_text,
        }
    }
}

/// What a generation produced and how fast.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Generation {
    /// Generated token ids (the stop token included when there was one). The last one was
    /// sampled but never fed to the cache.
    pub tokens: Vec<u32>,
    /// Generated text: exactly the pieces given to `on_text` (no stop token, no stop sequence).
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
    /// Tokens of the completion proper: [`Generation::tokens`] without a final stop token.
    pub fn completion_tokens(&self) -> usize {
        self.tokens.len() - usize::from(self.stop_reason == StopReason::Eos)
    }

    /// Tokens to feed before the next ChatML turn when the cache keeps the conversation: the
    /// last sampled token (never fed), then the end of the assistant turn (`\n` after a stop
    /// token, `<|im_end|>\n` when the reply was cut short).
    pub fn closing_tokens(&self, tokenizer: &Tokenizer) -> Result<Vec<u32>> {
        let mut pending: Vec<u32> = self.tokens.last().copied().into_iter().collect();
        let close = match self.stop_reason {
            StopReason::Eos => "\n",
            _ => "<|im_end|>\n",
        };
        pending.extend(tokenizer.encode(close)?);
        Ok(pending)
    }
}

/// Prompt tokens fed at once: [`PREFILL_CHUNK`], fewer for a cache that cannot take that many
/// at a time (a `sink:S+W` window shorter than the chunk).
pub fn prefill_chunk(cache: &dyn KvCache) -> usize {
    PREFILL_CHUNK.min((cache.capacity() / 2).max(1))
}

/// Runs `tokens` through the model in chunks and returns the logits after the last one.
pub fn prefill(model: &Llama, tokens: &[u32], cache: &mut dyn KvCache) -> Result<Vec<f32>> {
    let mut logits = Vec::new();
    for chunk in tokens.chunks(prefill_chunk(cache)) {
        logits = model.forward_last(chunk, cache)?;
    }
    Ok(logits)
}

/// Generates up to `max_tokens` after `prompt`, appending to `cache` (which may already hold a
/// conversation). `on_text` receives text pieces as soon as they are complete. Stops at stop
/// tokens; [`generate_with`] takes stop sequences, `ignore_eos` and cancellation.
pub fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    cache: &mut dyn KvCache,
    prompt: &[u32],
    max_tokens: usize,
    sampler: &mut Sampler,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    let params = GenerateParams::new(max_tokens);
    let hooks = Hooks::text(on_text);
    generate_with(model, tokenizer, cache, prompt, &params, sampler, hooks)
}

/// Generates after `prompt` into `cache` as `params` says, reporting to and polling `hooks`.
pub fn generate_with(
    model: &Llama,
    tokenizer: &Tokenizer,
    cache: &mut dyn KvCache,
    prompt: &[u32],
    params: &GenerateParams,
    sampler: &mut Sampler,
    hooks: Hooks<'_>,
) -> Result<Generation> {
    let Hooks {
        should_stop,
        on_text,
    } = hooks;
    let t0 = Instant::now();
    let mut g = Generation {
        tokens: Vec::new(),
        text: String::new(),
        prompt_tokens: prompt.len(),
        prompt_seconds: 0.0,
        decode_seconds: 0.0,
        stop_reason: StopReason::Cancelled,
        kv_bytes_peak: cache.heap_bytes(),
    };
    let mut logits = Vec::new();
    for chunk in prompt.chunks(prefill_chunk(cache)) {
        if should_stop() {
            g.prompt_seconds = t0.elapsed().as_secs_f64();
            return Ok(g);
        }
        logits = model.forward_last(chunk, cache)?;
    }
    g.prompt_seconds = t0.elapsed().as_secs_f64();
    g.kv_bytes_peak = g.kv_bytes_peak.max(cache.heap_bytes());
    let mut history = prompt.to_vec();
    let mut streamer = TextStreamer::new(tokenizer);
    let mut stops = StopMatcher::new(&params.stop);
    let mut emit = |piece: &str, text: &mut String| {
        if !piece.is_empty() {
            on_text(piece);
            text.push_str(piece);
        }
    };
    g.stop_reason = StopReason::MaxTokens;
    let t1 = Instant::now();
    for i in 0..params.max_tokens {
        if should_stop() {
            g.stop_reason = StopReason::Cancelled;
            break;
        }
        let next = sampler.sample(&mut logits, &history);
        g.tokens.push(next);
        history.push(next);
        if !params.ignore_eos && tokenizer.stop_ids.contains(&next) {
            g.stop_reason = StopReason::Eos;
            break;
        }
        if let Some(piece) = streamer.push(next)? {
            let (safe, hit) = stops.push(&piece);
            emit(&safe, &mut g.text);
            if hit {
                g.stop_reason = StopReason::StopSequence;
                break;
            }
        }
        if cache.remaining() == Some(0) {
            g.stop_reason = StopReason::ContextFull;
            break;
        }
        if i + 1 < params.max_tokens {
            logits = model.forward_last(&[next], cache)?;
            g.kv_bytes_peak = g.kv_bytes_peak.max(cache.heap_bytes());
        }
    }
    if g.stop_reason != StopReason::StopSequence {
        emit(&stops.finish(), &mut g.text);
    }
    g.decode_seconds = t1.elapsed().as_secs_f64();
    Ok(g)
}

/// Finds stop sequences in streamed text, holding back the tail that could begin one.
///
/// Invariant: the text already released contains no stop sequence, and no suffix of it that
/// reaches into the held tail begins one, so matches only ever need to be sought in the tail.
struct StopMatcher<'a> {
    stops: Vec<&'a str>,
    held: String,
}

impl<'a> StopMatcher<'a> {
    fn new(stops: &'a [String]) -> Self {
        Self {
            stops: stops
                .iter()
                .map(String::as_str)
                .filter(|s| !s.is_empty())
                .collect(),
            held: String::new(),
        }
    }

    /// Adds `piece`; returns the text now safe to release and whether a stop sequence was
    /// reached (then the released text ends right before it).
    fn push(&mut self, piece: &str) -> (String, bool) {
        self.held.push_str(piece);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s)).min() {
            let safe = self.held[..at].to_string();
            self.held.clear();
            return (safe, true);
        }
        let keep = self.longest_stop_prefix_suffix();
        let safe = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        (safe, false)
    }

    /// Bytes at the end of the held text that are a proper prefix of some stop sequence.
    fn longest_stop_prefix_suffix(&self) -> usize {
        self.stops
            .iter()
            .flat_map(|s| s.char_indices().skip(1).map(move |(i, _)| &s[..i]))
            .filter(|prefix| self.held.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0)
    }

    /// The held tail, released when generation ends without a stop sequence.
    fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::SamplingParams;
    use crate::testing::{temp_dir, write_gguf, TinySpec};
    use crate::{load_model, ComputeDType, FullCache, LoadedModel};
    use candle_core::quantized::GgmlDType;
    use std::cell::Cell;

    fn stops(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    /// Feeds `pieces` and returns what was released and whether a stop was hit.
    fn run(stops: &[String], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops);
        let mut out = String::new();
        for p in pieces {
            let (safe, hit) = m.push(p);
            out.push_str(&safe);
            if hit {
                return (out, true);
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn holds_back_only_possible_stop_prefixes() {
        let s = stops(&["</s>", "END"]);
        let mut m = StopMatcher::new(&s);
        assert_eq!(m.push("hello </"), ("hello ".to_string(), false));
        assert_eq!(m.push("x E"), ("</x ".to_string(), false));
        assert_eq!(m.push("nd"), ("End".to_string(), false));
        let u = stops(&["éX"]);
        let mut m = StopMatcher::new(&u);
        assert_eq!(m.push("hé"), ("h".to_string(), false));
        assert_eq!(m.push("é"), ("é".to_string(), false));
        assert_eq!(m.finish(), "é");
    }

    #[test]
    fn a_stop_sequence_split_across_pieces_is_cut_whole() {
        let s = stops(&["<|stop|>", "xyz"]);
        assert_eq!(
            run(&s, &["ab", "c<", "|st", "op", "|>", "tail"]),
            ("abc".to_string(), true)
        );
        // A false start is released once it cannot be a stop any more.
        assert_eq!(
            run(&s, &["a<|s", "ta", "rt xy", "!"]),
            ("a<|start xy!".to_string(), false)
        );
        // The earliest of several stops wins, even when another completes in the same piece.
        assert_eq!(run(&s, &["1 x", "yz <|stop|>"]), ("1 ".to_string(), true));
        // Empty stops are ignored.
        assert_eq!(run(&stops(&[""]), &["a", "b"]), ("ab".to_string(), false));
    }

    fn tiny(name: &str) -> LoadedModel {
        let path = write_gguf(
            &temp_dir(name).join("m.gguf"),
            &TinySpec::default(),
            GgmlDType::Q8_0,
        )
        .unwrap();
        load_model(&path, ComputeDType::Quantized).unwrap()
    }

    fn greedy() -> Sampler {
        Sampler::new(SamplingParams {
            temperature: 0.0,
            ..Default::default()
        })
    }

    /// Generates with `params`, returning the generation and the streamed pieces.
    fn gen(
        m: &LoadedModel,
        prompt: &[u32],
        params: &GenerateParams,
        should_stop: &dyn Fn() -> bool,
    ) -> (Generation, Vec<String>, FullCache) {
        let mut cache = FullCache::new(&m.model.kv_geometry());
        let mut pieces = Vec::new();
        let mut on_text = |p: &str| pieces.push(p.to_string());
        let hooks = Hooks {
            should_stop,
            on_text: &mut on_text,
        };
        let g = generate_with(
            &m.model,
            &m.tokenizer,
            &mut cache,
            prompt,
            params,
            &mut greedy(),
            hooks,
        )
        .unwrap();
        (g, pieces, cache)
    }

    #[test]
    fn stop_sequences_spanning_tokens_end_the_text_right_before_them() {
        let m = tiny("gen-stop");
        let prompt = m.tokenizer.encode("the cat sat").unwrap();
        let free = GenerateParams {
            max_tokens: 24,
            ignore_eos: true,
            ..Default::default()
        };
        let (g, pieces, _) = gen(&m, &prompt, &free, &never);
        assert_eq!(pieces.concat(), g.text);
        let chars: Vec<(usize, char)> = g.text.char_indices().collect();
        assert!(chars.len() >= 8, "too little text: {:?}", g.text);
        // Three characters from the middle; the tiny tokenizer is byte-level, so they span
        // several tokens.
        let (start, _) = chars[4];
        let end = chars.get(7).map_or(g.text.len(), |c| c.0);
        let stop = g.text[start..end].to_string();
        let want = &g.text[..g.text.find(&stop).unwrap()];
        let params = GenerateParams {
            stop: vec![stop.clone()],
            ..free.clone()
        };
        let (cut, pieces, _) = gen(&m, &prompt, &params, &never);
        assert_eq!(cut.stop_reason, StopReason::StopSequence);
        assert_eq!(cut.stop_reason.finish_reason(), "stop");
        assert_eq!(cut.text, want);
        assert_eq!(pieces.concat(), want);
        assert!(pieces.iter().all(|p| !p.is_empty()));
        assert!(
            m.tokenizer.encode(&stop).unwrap().len() > 1,
            "the stop sequence should span tokens"
        );
        // The tokens up to the one completing the stop sequence were sampled, no more.
        assert!(cut.tokens.len() < g.tokens.len());
        assert_eq!(cut.tokens[..], g.tokens[..cut.tokens.len()]);
    }

    #[test]
    fn cancellation_is_seen_between_prefill_chunks_and_after_every_token() {
        let m = tiny("gen-cancel");
        let params = GenerateParams {
            max_tokens: 20,
            ignore_eos: true,
            ..Default::default()
        };
        // Asked at once: nothing is fed.
        let prompt = m.tokenizer.encode("the cat sat on the mat").unwrap();
        let (g, pieces, cache) = gen(&m, &prompt, &params, &|| true);
        assert_eq!(g.stop_reason, StopReason::Cancelled);
        assert!(g.tokens.is_empty() && pieces.is_empty() && cache.is_empty());
        // Between prefill chunks: a prompt of a chunk and a bit stops after the first chunk.
        let chunk = prefill_chunk(&FullCache::new(&m.model.kv_geometry()));
        let long: Vec<u32> = (0..chunk as u32 + 3).map(|i| 5 + i % 40).collect();
        let calls = Cell::new(0);
        let after_one = || {
            calls.set(calls.get() + 1);
            calls.get() > 1
        };
        let (g, _, cache) = gen(&m, &long, &params, &after_one);
        assert_eq!(g.stop_reason, StopReason::Cancelled);
        assert_eq!(cache.len(), chunk);
        assert!(g.tokens.is_empty());
        // After a token: cancelled once 5 tokens are out, the sixth is never sampled.
        let full = gen(&m, &prompt, &params, &never).0;
        assert_eq!(full.tokens.len(), 20);
        assert_eq!(full.stop_reason, StopReason::MaxTokens);
        let polls = Cell::new(0);
        let after_five = || {
            polls.set(polls.get() + 1);
            polls.get() > 1 + 5 // one prefill chunk, then one poll per token
        };
        let (g, pieces, cache) = gen(&m, &prompt, &params, &after_five);
        assert_eq!(g.stop_reason, StopReason::Cancelled);
        assert_eq!(g.stop_reason.finish_reason(), "cancelled");
        assert_eq!(g.tokens, full.tokens[..5]);
        assert_eq!(pieces.concat(), g.text);
        assert_eq!(cache.len(), prompt.len() + 5);
    }

    #[test]
    fn ignore_eos_runs_to_the_budget_and_eos_is_not_a_completion_token() {
        let mut m = tiny("gen-eos");
        let prompt = m.tokenizer.encode("the").unwrap();
        let free = gen(&m, &prompt, &GenerateParams::new(12), &never).0;
        // Make the fourth greedy token the only stop token: greedy decoding reaches it.
        let at = 3.min(free.tokens.len() - 1);
        let stop_token = free.tokens[at];
        let first = free.tokens.iter().position(|&t| t == stop_token).unwrap();
        m.tokenizer.stop_ids = vec![stop_token];
        let (h, pieces, _) = gen(&m, &prompt, &GenerateParams::new(12), &never);
        assert_eq!(h.stop_reason, StopReason::Eos);
        assert_eq!(h.tokens, free.tokens[..first + 1]);
        assert_eq!(h.completion_tokens(), first);
        assert_eq!(pieces.concat(), h.text);
        let ignoring = GenerateParams {
            max_tokens: 12,
            ignore_eos: true,
            ..Default::default()
        };
        let (g, _, _) = gen(&m, &prompt, &ignoring, &never);
        assert_eq!(g.stop_reason, StopReason::MaxTokens);
        assert_eq!(g.tokens.len(), 12);
        assert_eq!(g.completion_tokens(), 12);
        assert_eq!(g.tokens[..=first], free.tokens[..=first]);
    }
}
