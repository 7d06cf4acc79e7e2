//! `ferrite prune`: one-shot pruning (SparseGPT, Wanda, magnitude) of a model, written as a
//! loadable HF directory. A thin layer over `ferrite-sparsegpt` and `ferrite_llm::export`.

use crate::common::{print_json, threads, DEFAULT_MODEL};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use ferrite_llm::safetensors::{convert_dir, save_tensors, StorageFormat};
use ferrite_llm::{export, load_model, ComputeDType};
use ferrite_sparsegpt::calibration::{read_corpus, DEFAULT_CORPUS, DEFAULT_EXCLUDE};
use ferrite_sparsegpt::pattern::parse_nm;
use ferrite_sparsegpt::sequential::Progress;
use ferrite_sparsegpt::{prune_model, Calibration, Magnitude, Pruner, SparseGpt, Sparsity, Wanda};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Pruning method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// SparseGPT (Frantar & Alistarh 2023): OBS updates, adaptive mask.
    Sparsegpt,
    /// Wanda (Sun et al. 2023): |W|·‖X‖₂ per output row, no update.
    Wanda,
    /// Smallest |W| per layer; needs no calibration.
    Magnitude,
    /// No pruning: export the model as an f32 HF directory.
    Dense,
}

/// Flags of `ferrite prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// A GGUF file or an HF safetensors directory (dequantised to f32 for pruning).
    #[arg(long, short, env = "FERRITE_MODEL", default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Pruning method.
    #[arg(long, value_enum, default_value = "sparsegpt")]
    method: Method,
    /// Unstructured sparsity: fraction of every layer's weights zeroed.
    #[arg(long, conflicts_with = "nm")]
    sparsity: Option<f64>,
    /// Semi-structured N:M sparsity (`2:4`, `4:8`).
    #[arg(long)]
    nm: Option<String>,
    /// Output HF directory (written atomically; replaced if it exists).
    #[arg(long)]
    out: PathBuf,
    /// Calibration text: a file, or a directory whose *.txt are all read (default: the
    /// Gutenberg plays, minus --calib-exclude). Magnitude pruning uses it only for the report.
    #[arg(long)]
    calib: Option<PathBuf>,
    /// Leave out corpus-directory files whose name contains this (the evaluation text).
    #[arg(long, default_value = DEFAULT_EXCLUDE)]
    calib_exclude: String,
    /// Calibration segments.
    #[arg(long, default_value_t = 16)]
    nsamples: usize,
    /// Tokens per calibration segment.
    #[arg(long, default_value_t = 512)]
    seqlen: usize,
    /// Seed of the segment offsets.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Read the calibration token ids from this JSON file (as written by --save-calib-ids)
    /// instead of sampling them.
    #[arg(long, conflicts_with = "calib")]
    calib_ids: Option<PathBuf>,
    /// Write the calibration token ids used to this JSON file (for a reference run).
    #[arg(long)]
    save_calib_ids: Option<PathBuf>,
    /// SparseGPT column block size.
    #[arg(long, default_value_t = ferrite_sparsegpt::sparsegpt::DEFAULT_BLOCK_SIZE)]
    blocksize: usize,
    /// SparseGPT Hessian dampening, fraction of the mean diagonal.
    #[arg(long, default_value_t = 0.01)]
    percdamp: f64,
    /// On-disk weight format of the output: `dense` (plain f32 safetensors), `sparse`
    /// (matrices with enough zeros in the layout that suits them), `sparse:bitmap`,
    /// `sparse:csr`, `sparse:2:4` (any N:M).
    #[arg(long, default_value = "dense")]
    format: String,
    /// Re-encode this existing HF directory into --out with --format instead of pruning.
    #[arg(long)]
    convert: Option<PathBuf>,
    /// Also write the JSON report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print the JSON report instead of the table.
    #[arg(long)]
    json: bool,
}

fn sparsity(args: &PruneArgs) -> Result<Option<Sparsity>> {
    match (args.sparsity, &args.nm, args.method) {
        (None, None, Method::Dense) => Ok(None),
        (_, _, Method::Dense) => bail!("--method dense prunes nothing; drop --sparsity/--nm"),
        (Some(p), None, _) => Ok(Some(Sparsity::unstructured(p)?)),
        (None, Some(nm), _) => Ok(Some(parse_nm(nm)?)),
        (None, None, _) => bail!("give --sparsity P (e.g. 0.5) or --nm N:M (e.g. 2:4)"),
        (Some(_), Some(_), _) => bail!("--sparsity and --nm are exclusive"),
    }
}

/// Prunes the model and writes it.
pub fn run(args: PruneArgs) -> Result<()> {
    let t0 = Instant::now();
    let format: StorageFormat = args.format.parse()?;
    if let Some(src) = &args.convert {
        let r = convert_dir(src, &args.out, &format)
            .with_context(|| format!("converting {}", src.display()))?;
        if args.json {
            return print_json(&json!({"from": src.display().to_string(),
                "out": args.out.display().to_string(), "format": args.format, "report": r}));
        }
        println!(
            "wrote {} ({} matrices sparse, {} tensors dense, {} bytes) in {:.1} s",
            args.out.display(),
            r.sparse_tensors,
            r.dense_tensors,
            r.file_bytes,
            t0.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let pattern = sparsity(&args)?;
    if args.nsamples == 0 || args.seqlen < 2 {
        bail!("--nsamples must be at least 1 and --seqlen at least 2");
    }
    let pruner: Option<Box<dyn Pruner>> = match args.method {
        Method::Sparsegpt => Some(Box::new(SparseGpt {
            block_size: args.blocksize,
            percdamp: args.percdamp,
        })),
        Method::Wanda => Some(Box::new(Wanda)),
        Method::Magnitude => Some(Box::new(Magnitude)),
        Method::Dense => None,
    };
    let mut m = load_model(&args.model, ComputeDType::F32)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let calibrated = pruner.as_ref().is_some_and(|p| p.needs_calibration())
        || args.calib.is_some()
        || args.calib_ids.is_some();
    let mut calib_files = Vec::new();
    let calibration = if !calibrated {
        None
    } else if let Some(path) = &args.calib_ids {
        Some(Calibration::load(path)?)
    } else {
        let path = args
            .calib
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CORPUS));
        let corpus = read_corpus(&path, std::slice::from_ref(&args.calib_exclude))?;
        calib_files = corpus.files.clone();
        let encode = |t: &str| m.tokenizer.encode(t);
        Some(Calibration::sample_corpus(
            &corpus,
            &encode,
            args.nsamples,
            args.seqlen,
            args.seed,
        )?)
    };
    if let (Some(c), Some(path)) = (&calibration, &args.save_calib_ids) {
        c.save(path)?;
    }
    let report = match (&pruner, pattern) {
        (Some(p), Some(s)) => {
            let pb = ProgressBar::new(0);
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} {msg} elapsed {elapsed} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            let mut progress = |e: &Progress| {
                pb.set_length((e.n_blocks * e.per_block) as u64);
                pb.set_position((e.block * e.per_block + e.done) as u64);
                pb.set_prefix(format!("{} block {}/{}", p.name(), e.block + 1, e.n_blocks));
                pb.set_message(e.what.clone());
            };
            let r = prune_model(
                &mut m.model,
                p.as_ref(),
                s,
                calibration.as_ref(),
                &mut progress,
            )?;
            pb.finish_and_clear();
            Some(r)
        }
        _ => None,
    };
    let te = Instant::now();
    export::save_hf_dir_with(&m.model, &m.tokenizer, &args.out, &|path, tensors| {
        save_tensors(path, tensors, &format).map(|_| ())
    })?;
    let export_seconds = te.elapsed().as_secs_f64();
    let summary = json!({
        "model": args.model.display().to_string(),
        "out": args.out.display().to_string(),
        "method": format!("{:?}", args.method).to_lowercase(),
        "format": args.format,
        "sparsity": pattern.map(|s| s.label()),
        "calibration_files": calib_files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "calibration_ids": args.calib_ids.as_ref().map(|p| p.display().to_string()),
        "threads": threads(),
        "load_seconds": load_seconds,
        "prune_seconds": report.as_ref().map(|r| r.seconds),
        "export_seconds": export_seconds,
        "total_seconds": t0.elapsed().as_secs_f64(),
        "report": report,
    });
    if let Some(path) = &args.report {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        return print_json(&summary);
    }
    if let Some(r) = &report {
        println!(
            "{:>5} {:<18} {:>11} {:>8} {:>13} {:>9}",
            "block", "layer", "shape", "sparsity", "‖WX−ŴX‖²", "relative"
        );
        for l in &r.layers {
            let fmt = |x: Option<f64>, p: usize| x.map_or("-".into(), |v| format!("{v:.p$e}"));
            println!(
                "{:>5} {:<18} {:>11} {:>8.4} {:>13} {:>9}",
                l.block,
                ferrite_sparsegpt::sequential::LayerName::hf_name(l.layer),
                format!("{}x{}", l.rows, l.cols),
                l.sparsity,
                fmt(l.error, 3),
                fmt(l.relative_error, 2),
            );
            if l.notes.damp_retries > 0 {
                println!(
                    "      Cholesky failed; damping raised {} time(s) to {} x mean diag",
                    l.notes.damp_retries,
                    l.notes.damp_fraction.unwrap_or(0.0)
                );
            }
        }
        println!(
            "{} {}: {:.4} of the block weights zeroed in {:.1} s ({} threads)",
            r.method,
            r.sparsity,
            r.total_sparsity,
            r.seconds,
            threads()
        );
    }
    println!(
        "wrote {} (load {load_seconds:.1} s, export {export_seconds:.1} s, total {:.1} s)",
        args.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
