//! Writes a loaded (possibly modified, e.g. pruned) model as an HF directory that this crate's
//! loader and `transformers`' `LlamaForCausalLM` both read: `model.safetensors` (f32, tensors
//! named as in `safetensors.rs`), `config.json`, `tokenizer.json`.
//!
//! GGUF files store `W_q`/`W_k` with llama.cpp's row permutation (RoPE pairs adjacent); the
//! export undoes it, so the directory has the HF layout whatever the source was.
//!
//! The directory is written atomically: everything goes to `DIR.tmp-<pid>-<n>` beside it, which
//! is renamed to `DIR` at the end (an existing `DIR` is replaced only then). How the weights
//! are encoded is the caller's choice ([`save_hf_dir_with`]); [`save_hf_dir`] writes plain
//! safetensors.

use crate::config::{LlamaConfig, RopeStyle};
use crate::linear::Linear;
use crate::llama::{Embedding, Llama};
use crate::safetensors::hf_name;
use crate::tokenizer::Tokenizer;
use crate::weights::TensorRole;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use std::path::{Path, PathBuf};

/// File the weights are written to inside the directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Writes `tensors` to `path` (the weights file inside the temporary directory).
pub type WeightsWriter<'a> = &'a dyn Fn(&Path, &[(String, Tensor)]) -> Result<()>;

/// Plain f32 safetensors.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let map: std::collections::HashMap<String, Tensor> = tensors.iter().cloned().collect();
    candle_core::safetensors::save(&map, path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Undoes llama.cpp's q/k row permutation (`[n_head, d/2, 2, cols]` → `[n_head, 2, d/2, cols]`).
fn unpermute_rows(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let hd = rows / n_head;
    Ok(w.reshape((n_head, hd / 2, 2, cols))?
        .transpose(1, 2)?
        .reshape((rows, cols))?
        .contiguous()?)
}

/// Every tensor of `model` under transformers' names, f32, in HF layout. The output projection
/// is left out when the config ties it to the embedding.
pub fn hf_tensors(model: &Llama) -> Result<Vec<(String, Tensor)>> {
    let cfg = &model.config;
    let f32 = |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?.contiguous()?) };
    let dense = |l: &Linear| -> Result<Tensor> { f32(&l.to_dense()?) };
    let qk = |l: &Linear, heads: usize| -> Result<Tensor> {
        let w = dense(l)?;
        match cfg.rope_style {
            RopeStyle::Interleaved => unpermute_rows(&w, heads),
            RopeStyle::HalfSplit => Ok(w),
        }
    };
    let mut out = Vec::new();
    let embedding = match &model.embedding {
        Embedding::Dense(w) => f32(w)?,
        Embedding::Quantized(q) => q.dequantize(&q.device())?,
    };
    out.push((hf_name(TensorRole::TokenEmbedding), embedding));
    for (l, b) in model.blocks.iter().enumerate() {
        use TensorRole::*;
        out.push((hf_name(AttnNorm(l)), f32(&b.attn_norm.weight)?));
        out.push((hf_name(Q(l)), qk(&b.attn.q, cfg.n_head)?));
        out.push((hf_name(K(l)), qk(&b.attn.k, cfg.n_kv_head)?));
        out.push((hf_name(V(l)), dense(&b.attn.v)?));
        out.push((hf_name(O(l)), dense(&b.attn.o)?));
        out.push((hf_name(FfnNorm(l)), f32(&b.ffn_norm.weight)?));
        out.push((hf_name(Gate(l)), dense(&b.mlp.gate)?));
        out.push((hf_name(Up(l)), dense(&b.mlp.up)?));
        out.push((hf_name(Down(l)), dense(&b.mlp.down)?));
    }
    out.push((hf_name(TensorRole::OutputNorm), f32(&model.norm.weight)?));
    if !cfg.tie_word_embeddings {
        out.push((hf_name(TensorRole::Output), dense(&model.lm_head)?));
    }
    Ok(out)
}

/// The `config.json` of `config` (transformers' `LlamaConfig` keys).
pub fn hf_config(config: &LlamaConfig, eos_token_id: Option<u32>) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": null,
        "max_position_embeddings": config.context_length,
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_bias": false,
        "mlp_bias": false,
        "eos_token_id": eos_token_id,
        "torch_dtype": "float32",
    })
}

/// Writes `model` and `tokenizer` as an HF directory at `dir` with plain safetensors weights.
pub fn save_hf_dir(model: &Llama, tokenizer: &Tokenizer, dir: &Path) -> Result<()> {
    save_hf_dir_with(model, tokenizer, dir, &write_safetensors)
}

/// Like [`save_hf_dir`], the weights written by `write_weights` (e.g. a sparse encoding).
pub fn save_hf_dir_with(
    model: &Llama,
    tokenizer: &Tokenizer,
    dir: &Path,
    write_weights: WeightsWriter<'_>,
) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("{} exists and is not a directory", dir.display());
    }
    let tmp = sibling(dir, "tmp")?;
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let written = write_contents(model, tokenizer, &tmp, write_weights);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // Swap in: the old directory (if any) is moved aside, then removed.
    let old = if dir.exists() {
        let old = sibling(dir, "old")?;
        std::fs::rename(dir, &old)
            .with_context(|| format!("moving the old {} aside", dir.display()))?;
        Some(old)
    } else {
        None
    };
    std::fs::rename(&tmp, dir).with_context(|| format!("renaming into {}", dir.display()))?;
    if let Some(old) = old {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(())
}

fn write_contents(
    model: &Llama,
    tokenizer: &Tokenizer,
    tmp: &Path,
    write_weights: WeightsWriter<'_>,
) -> Result<()> {
    let tensors = hf_tensors(model)?;
    write_weights(&tmp.join(WEIGHTS_FILE), &tensors)?;
    let eos = tokenizer.stop_ids.first().copied();
    let config = hf_config(&model.config, eos);
    std::fs::write(
        tmp.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )
    .context("writing config.json")?;
    tokenizer.save_json(&tmp.join("tokenizer.json"))?;
    if let Some(id) = eos {
        let eos_token = tokenizer.decode(&[id])?;
        let tc = serde_json::json!({ "eos_token": eos_token });
        std::fs::write(
            tmp.join("tokenizer_config.json"),
            serde_json::to_string_pretty(&tc)?,
        )
        .context("writing tokenizer_config.json")?;
    }
    Ok(())
}

/// `DIR.<what>-<pid>-<nanos>` beside `dir`.
fn sibling(dir: &Path, what: &str) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .with_context(|| format!("{} has no directory name", dir.display()))?
        .to_string_lossy();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Ok(dir.with_file_name(format!("{name}.{what}-{}-{nanos}", std::process::id())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::FullCache;
    use crate::llama::ComputeDType;
    use crate::loader::load_model;
    use crate::testing::{temp_dir, write_gguf, TinySpec};
    use candle_core::quantized::GgmlDType;

    fn logits(model: &Llama, ids: &[u32]) -> Result<Vec<f32>> {
        let mut cache = FullCache::new(&model.kv_geometry());
        let h = model.forward_hidden(ids, &mut cache)?;
        Ok(model.logits(&h)?.flatten_all()?.to_vec1()?)
    }

    #[test]
    fn gguf_exported_as_hf_dir_gives_the_same_logits() -> Result<()> {
        let dir = temp_dir("export");
        for tied in [false, true] {
            let spec = TinySpec {
                tied,
                ..TinySpec::default()
            };
            let gguf = write_gguf(&dir.join("m.gguf"), &spec, GgmlDType::F32)?;
            let src = load_model(&gguf, ComputeDType::F32)?;
            let out = dir.join(format!("hf-{tied}"));
            std::fs::create_dir_all(&out)?; // an existing directory is replaced
            std::fs::write(out.join("stale.txt"), "x")?;
            save_hf_dir(&src.model, &src.tokenizer, &out)?;
            assert!(!out.join("stale.txt").exists());
            let back = load_model(&out, ComputeDType::F32)?;
            assert_eq!(back.config().tie_word_embeddings, tied);
            let ids = src.tokenizer.encode("the cat sat on the mat")?;
            assert_eq!(back.tokenizer.encode("the cat sat on the mat")?, ids);
            let (a, b) = (logits(&src.model, &ids)?, logits(&back.model, &ids)?);
            let max = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(max < 1e-4, "max logit difference {max}");
        }
        let leftovers: Vec<_> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() -> Result<()> {
        let dir = temp_dir("export-fail");
        let spec = TinySpec::default();
        let gguf = write_gguf(&dir.join("m.gguf"), &spec, GgmlDType::F32)?;
        let src = load_model(&gguf, ComputeDType::F32)?;
        let out = dir.join("hf");
        let fail = |_: &Path, _: &[(String, Tensor)]| -> Result<()> { bail!("disk full") };
        assert!(save_hf_dir_with(&src.model, &src.tokenizer, &out, &fail).is_err());
        let names: Vec<String> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names, vec!["m.gguf".to_string()]);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
