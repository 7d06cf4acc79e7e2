//! Re-encodes an HF checkpoint directory dense <-> sparse (`ferrite prune --convert` is the
//! CLI for this; the example needs only ferrite-llm).
//!
//! `cargo run --release -p ferrite-llm --example sparse_convert -- SRC DST [dense|sparse|sparse:bitmap|sparse:csr|sparse:2:4]`

use anyhow::{Context, Result};
use ferrite_llm::safetensors::{convert_dir, StorageFormat};
use std::path::PathBuf;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: sparse_convert SRC DST [FORMAT]";
    let src = PathBuf::from(args.next().context(usage)?);
    let dst = PathBuf::from(args.next().context(usage)?);
    let format: StorageFormat = args.next().as_deref().unwrap_or("sparse").parse()?;
    let r = convert_dir(&src, &dst, &format)?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
