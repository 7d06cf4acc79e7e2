//! `ferrite generate`.

use crate::common::{print_json, threads, ModelArgs};
use crate::kv_spec;
use anyhow::{bail, Result};
use clap::Args;
use ferrite_llm::generate::{generate_with, GenerateParams, Hooks};
use ferrite_llm::sampling::{Sampler, SamplingParams};
use ferrite_llm::tokenizer::{chatml_prompt, Message};
use serde_json::json;
use std::io::Write;

/// Sampling flags shared by `generate` and `chat`.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Softmax temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Top-p nucleus (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Most tokens to generate.
    #[arg(long, short = 'n', default_value_t = 128)]
    pub max_tokens: usize,
    /// KV-cache policy (`full`; others come with their crates).
    #[arg(long, default_value = "full")]
    pub kv: String,
}

impl SamplingArgs {
    /// Validated sampler.
    pub fn sampler(&self) -> Result<Sampler> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            bail!("--temperature must be a finite number >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("--top-p must be in (0, 1]");
        }
        if !self.repeat_penalty.is_finite() || self.repeat_penalty <= 0.0 {
            bail!("--repeat-penalty must be > 0");
        }
        Ok(Sampler::new(SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repeat_penalty,
            seed: self.seed,
            ..Default::default()
        }))
    }
}

/// Flags of `ferrite generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(long, short)]
    prompt: String,
    /// Wrap the prompt as one user turn of the chat template.
    #[arg(long)]
    chat: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Stop before this text (repeatable; the text is not printed).
    #[arg(long)]
    stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens, up to --max-tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Print a JSON summary (text, tokens, speed, KV bytes) instead of streaming.
    #[arg(long)]
    json: bool,
}

/// Streams a continuation of the prompt, then prints speed and KV bytes on stderr.
pub fn run(args: GenerateArgs) -> Result<()> {
    let mut sampler = args.sampling.sampler()?;
    if args.stop.iter().any(String::is_empty) {
        bail!("--stop takes non-empty text");
    }
    let m = args.model.load()?;
    let text = if args.chat {
        chatml_prompt(&[Message {
            role: "user".into(),
            content: args.prompt.clone(),
        }])
    } else {
        args.prompt.clone()
    };
    let prompt = m.tokenizer.encode(&text)?;
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    let ctx = m.config().context_length;
    if prompt.len() >= ctx {
        bail!(
            "the prompt has {} tokens, more than the context of {ctx} tokens",
            prompt.len()
        );
    }
    let mut cache = kv_spec::build(&args.sampling.kv, &m.model.kv_geometry())?;
    let max_tokens = args.sampling.max_tokens.min(ctx - prompt.len());
    let quiet = args.json;
    let mut out = std::io::stdout();
    if !quiet {
        print!("{}", args.prompt);
        out.flush()?;
    }
    let params = GenerateParams {
        max_tokens,
        stop: args.stop.clone(),
        ignore_eos: args.ignore_eos,
    };
    let mut on_text = |piece: &str| {
        if !quiet {
            print!("{piece}");
            let _ = std::io::stdout().flush();
        }
    };
    let g = generate_with(
        &m.model,
        &m.tokenizer,
        cache.as_mut(),
        &prompt,
        &params,
        &mut sampler,
        Hooks::text(&mut on_text),
    )?;
    if args.json {
        return print_json(&json!({
            "prompt": args.prompt,
            "text": g.text,
            "tokens": g.tokens,
            "prompt_tokens": g.prompt_tokens,
            "generated_tokens": g.tokens.len(),
            "prompt_tokens_per_second": g.prompt_tps(),
            "decode_tokens_per_second": g.decode_tps(),
            "stop_reason": g.stop_reason,
            "finish_reason": g.stop_reason.finish_reason(),
            "kv_bytes_peak": g.kv_bytes_peak,
            "kv_policy": cache.spec(),
            "model": m.path.display().to_string(),
            "dtype": m.model.dtype.to_string(),
            "threads": threads(),
        }));
    }
    println!();
    eprintln!(
        "[{} prompt tokens at {:.1} tok/s, {} generated at {:.1} tok/s, KV cache {} bytes ({}), {} threads]",
        g.prompt_tokens,
        g.prompt_tps(),
        g.tokens.len(),
        g.decode_tps(),
        g.kv_bytes_peak,
        cache.spec(),
        threads()
    );
    Ok(())
}
