//! Flags and helpers shared by the subcommands.

use anyhow::{bail, Context, Result};
use clap::Args;
use ferrite_llm::{load_model, ComputeDType, LoadedModel};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// The default model installed by `make setup`.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Which model to load and how.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A GGUF file or an HF safetensors directory.
    #[arg(long, short, env = "FERRITE_MODEL", default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Compute path: `quant` (multiply the GGUF blocks directly) or `f32` (dequantised).
    #[arg(long, default_value = "quant")]
    pub dtype: ComputeDType,
}

impl ModelArgs {
    /// Loads the model with its tokenizer.
    pub fn load(&self) -> Result<LoadedModel> {
        load_model(&self.model, self.dtype)
            .with_context(|| format!("loading {}", self.model.display()))
    }
}

/// Sets the worker threads of rayon and candle's kernels.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        // candle reads RAYON_NUM_THREADS for its kernels; rayon's global pool is built once.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    Ok(())
}

/// Threads the kernels will use.
pub fn threads() -> usize {
    candle_threads()
}

fn candle_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Reads a UTF-8 text file, refusing empty ones.
pub fn read_text(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read text {}", path.display()))?;
    if text.trim().is_empty() {
        bail!("text {} is empty", path.display());
    }
    Ok(text)
}

/// A progress bar on stderr (hidden when `quiet`).
pub fn progress_bar(total: usize, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} tokens {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
