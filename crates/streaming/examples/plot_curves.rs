//! Merges curve CSVs written by `ferrite ppl --stream --curve` (one run each) into one file and
//! plots every policy in it, one line each.
//!
//! ```text
//! cargo run --release -p ferrite-streaming --example plot_curves -- \
//!     --out crates/streaming/results/table2.csv --title "SmolLM2, cache 1024" a.csv b.csv
//! ```

use anyhow::{bail, Context, Result};
use ferrite_streaming::curve;
use std::path::PathBuf;

fn main() -> Result<()> {
    let mut out: Option<PathBuf> = None;
    let mut title = String::from("running perplexity");
    let mut inputs = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = Some(it.next().context("--out needs a path")?.into()),
            "--title" => title = it.next().context("--title needs a value")?,
            _ => inputs.push(PathBuf::from(a)),
        }
    }
    let out = out.context("--out is required")?;
    if inputs.is_empty() {
        bail!("no input curve files");
    }
    for input in &inputs {
        for (policy, points) in curve::read_csv(input)? {
            curve::write_csv(&out, &policy, &points)?;
        }
    }
    let png = out.with_extension("png");
    curve::plot(&out, &png, &title)?;
    println!("{} and {}", out.display(), png.display());
    Ok(())
}
