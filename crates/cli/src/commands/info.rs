//! `ferrite info MODEL`.

use crate::common::{print_json, ModelArgs};
use anyhow::Result;
use clap::Args;
use serde_json::json;
use std::collections::BTreeMap;

/// Flags of `ferrite info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// List every tensor.
    #[arg(long)]
    tensors: bool,
}

/// Prints the model's architecture, sizes, tensor types and KV bytes per token.
pub fn run(args: InfoArgs) -> Result<()> {
    let m = args.model.load()?;
    let c = m.config();
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    for (_, ty, _) in &m.tensors {
        *types.entry(ty.clone()).or_default() += 1;
    }
    let n_params: usize = m
        .tensors
        .iter()
        .map(|(_, _, s)| s.iter().product::<usize>())
        .sum();
    let kv_f32 = c.kv_bytes_per_token(4);
    let info = json!({
        "model": m.path.display().to_string(),
        "format": m.format,
        "config": c,
        "parameters": n_params,
        "tensor_types": types,
        "weight_bytes": m.model.weight_bytes(),
        "dtype": m.model.dtype.to_string(),
        "kv_bytes_per_token_f32": kv_f32,
        "kv_bytes_per_token_f16": c.kv_bytes_per_token(2),
        "vocab_size_tokenizer": m.tokenizer.vocab_size(),
    });
    if args.json {
        return print_json(&info);
    }
    println!("model        {} ({})", m.path.display(), m.format);
    println!("architecture {}", c.architecture);
    println!(
        "layers {}  hidden {}  mlp {}  heads {} (kv {})  head_dim {}  vocab {}",
        c.n_layer,
        c.hidden_size,
        c.intermediate_size,
        c.n_head,
        c.n_kv_head,
        c.head_dim,
        c.vocab_size
    );
    println!(
        "rope θ {}  rms ε {}  context {}  tied embeddings {}",
        c.rope_theta, c.rms_norm_eps, c.context_length, c.tie_word_embeddings
    );
    if n_params > 0 {
        println!("parameters   {:.1} M", n_params as f64 / 1e6);
    }
    println!("tensor types {types:?}");
    println!(
        "weights      {:.1} MiB as held by --dtype {}",
        m.model.weight_bytes() as f64 / 1048576.0,
        m.model.dtype
    );
    println!(
        "KV per token {} bytes (f32), {} bytes (f16); full context {:.1} MiB (f32)",
        kv_f32,
        c.kv_bytes_per_token(2),
        (kv_f32 * c.context_length) as f64 / 1048576.0
    );
    if args.tensors {
        for (n, ty, s) in &m.tensors {
            println!("  {n:40} {ty:6} {s:?}");
        }
    }
    Ok(())
}
