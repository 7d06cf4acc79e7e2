//! The decode loop of one request: `ferrite_llm::generate` made cancellable and aware of stop
//! sequences. Between prefill chunks and after every token it asks whether to stop (the client
//! went away, the server is shutting down), and it holds back text that could be the start of
//! a stop sequence until it is sure it is not.

use anyhow::Result;
use ferrite_llm::generate::PREFILL_CHUNK;
use ferrite_llm::sampling::{Sampler, SamplingParams};
use ferrite_llm::tokenizer::TextStreamer;
use ferrite_llm::{KvCache, Llama, Tokenizer};

/// What to generate.
#[derive(Debug, Clone)]
pub struct DecodeParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Sampler settings.
    pub sampling: SamplingParams,
    /// Stop sequences (not included in the output).
    pub stop: Vec<String>,
    /// Do not stop on end-of-sequence tokens.
    pub ignore_eos: bool,
}

/// Why decoding ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A stop token or stop sequence.
    Stop,
    /// `max_tokens`, or the cache is full.
    Length,
    /// Asked to stop from outside.
    Cancelled,
}

impl Finish {
    /// OpenAI's `finish_reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Cancelled => "cancelled",
        }
    }
}

/// What a decode produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Why it ended.
    pub finish: Finish,
    /// Tokens generated (a stop token excluded).
    pub completion_tokens: usize,
    /// The last sampled token, which was never fed to the cache.
    pub last_token: Option<u32>,
    /// Whether the last token is a stop token.
    pub ended_by_stop_token: bool,
    /// Seconds from the start to the first sampled token (prefill).
    pub prefill_seconds: f64,
}

/// Prompt tokens fed at once: [`PREFILL_CHUNK`], smaller for a cache that cannot take that many
/// at a time (a `sink:S+W` window shorter than the chunk).
fn prefill_chunk(cache: &dyn KvCache) -> usize {
    PREFILL_CHUNK.min((cache.capacity() / 2).max(1))
}

/// Bytes at the end of `text` that could begin one of `stops`.
fn held_back(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .flat_map(|s| s.char_indices().skip(1).map(move |(i, _)| &s[..i]))
        .filter(|prefix| text.ends_with(prefix))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

/// Generates after `prompt` into `cache`. `emit` receives text pieces and returns false when
/// nobody listens any more; `cancelled` is polled between steps.
pub fn decode(
    model: &Llama,
    tokenizer: &Tokenizer,
    cache: &mut dyn KvCache,
    prompt: &[u32],
    params: &DecodeParams,
    cancelled: &dyn Fn() -> bool,
    emit: &mut dyn FnMut(String) -> bool,
) -> Result<Outcome> {
    let t0 = std::time::Instant::now();
    let mut outcome = Outcome {
        finish: Finish::Cancelled,
        completion_tokens: 0,
        last_token: None,
        ended_by_stop_token: false,
        prefill_seconds: 0.0,
    };
    let mut logits = Vec::new();
    for chunk in prompt.chunks(prefill_chunk(cache)) {
        if cancelled() {
            return Ok(outcome);
        }
        logits = model.forward_last(chunk, cache)?;
    }
    outcome.prefill_seconds = t0.elapsed().as_secs_f64();
    let mut sampler = Sampler::new(params.sampling.clone());
    let mut history = prompt.to_vec();
    let mut streamer = TextStreamer::new(tokenizer);
    let mut text = String::new();
    let mut sent = 0;
    outcome.finish = Finish::Length;
    for i in 0..params.max_tokens {
        if cancelled() {
            outcome.finish = Finish::Cancelled;
            return Ok(outcome);
        }
        let next = sampler.sample(&mut logits, &history);
        history.push(next);
        outcome.last_token = Some(next);
        if !params.ignore_eos && tokenizer.stop_ids.contains(&next) {
            outcome.ended_by_stop_token = true;
            outcome.finish = Finish::Stop;
            break;
        }
        outcome.completion_tokens += 1;
        if let Some(piece) = streamer.push(next)? {
            text.push_str(&piece);
            let hit = params
                .stop
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min();
            if let Some(at) = hit {
                if at > sent && !emit(text[sent..at].to_string()) {
                    outcome.finish = Finish::Cancelled;
                    return Ok(outcome);
                }
                sent = text.len();
                outcome.finish = Finish::Stop;
                break;
            }
            let safe = text.len() - held_back(&text, &params.stop);
            if safe > sent {
                if !emit(text[sent..safe].to_string()) {
                    outcome.finish = Finish::Cancelled;
                    return Ok(outcome);
                }
                sent = safe;
            }
        }
        if cache.remaining() == Some(0) {
            break;
        }
        if i + 1 < params.max_tokens {
            logits = model.forward_last(&[next], cache)?;
        }
    }
    if sent < text.len() && !emit(text[sent..].to_string()) {
        outcome.finish = Finish::Cancelled;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_only_possible_stop_prefixes() {
        let stops = vec!["</s>".to_string(), "END".to_string()];
        assert_eq!(held_back("hello </", &stops), 2);
        assert_eq!(held_back("hello E", &stops), 1);
        assert_eq!(held_back("hello", &stops), 0);
        assert_eq!(held_back("héé", &["éX".to_string()]), 'é'.len_utf8());
    }
}
