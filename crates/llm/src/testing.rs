//! Tiny random llama models written to disk, for tests of this crate and of the policy crates
//! built on it (no downloaded asset needed). The same weights are written as GGUF (with
//! llama.cpp's q/k row permutation and tokenizer metadata) and as an HF safetensors directory.

use anyhow::{anyhow, Result};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Shape of the tiny model.
#[derive(Debug, Clone)]
pub struct TinySpec {
    /// Residual width.
    pub hidden: usize,
    /// MLP width.
    pub mlp: usize,
    /// Blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Context length.
    pub context: usize,
    /// Whether the output projection is tied to the embedding.
    pub tied: bool,
    /// Weight seed.
    pub seed: u64,
}

impl Default for TinySpec {
    fn default() -> Self {
        Self {
            hidden: 64,
            mlp: 96,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            context: 128,
            tied: false,
            seed: 0,
        }
    }
}

const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const MERGES: [(&str, &str); 6] = [
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("Ġ", "a"),
    ("o", "n"),
];

/// Vocabulary: special tokens, the 256 byte-level symbols, then one token per merge.
fn vocab() -> Vec<String> {
    let mut alphabet: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
        .into_iter()
        .collect();
    alphabet.sort();
    let mut v: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    v.extend(alphabet.iter().map(|c| c.to_string()));
    v.extend(MERGES.iter().map(|(a, b)| format!("{a}{b}")));
    v
}

/// Weights of the tiny model in HF layout (`[out, in]`, q/k rows in half-split order).
fn hf_weights(spec: &TinySpec, vocab_size: usize) -> Result<Vec<(String, Tensor)>> {
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut rand = |shape: (usize, usize), scale: f32| -> Result<Tensor> {
        let data: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| rng.gen_range(-1.0f32..1.0) * scale)
            .collect();
        Ok(Tensor::from_vec(data, shape, &dev)?)
    };
    let hd = spec.hidden / spec.heads;
    let s = 1.0 / (spec.hidden as f32).sqrt() * 1.7;
    let mut w = vec![(
        "model.embed_tokens.weight".to_string(),
        rand((vocab_size, spec.hidden), 1.0)?,
    )];
    for l in 0..spec.layers {
        let p = format!("model.layers.{l}");
        let norm = (Tensor::ones(spec.hidden, candle_core::DType::F32, &dev)?
            + rand((1, spec.hidden), 0.1)?.flatten_all()?)?;
        w.push((format!("{p}.input_layernorm.weight"), norm.clone()));
        w.push((format!("{p}.post_attention_layernorm.weight"), norm));
        w.push((
            format!("{p}.self_attn.q_proj.weight"),
            rand((spec.heads * hd, spec.hidden), s)?,
        ));
        w.push((
            format!("{p}.self_attn.k_proj.weight"),
            rand((spec.kv_heads * hd, spec.hidden), s)?,
        ));
        w.push((
            format!("{p}.self_attn.v_proj.weight"),
            rand((spec.kv_heads * hd, spec.hidden), s)?,
        ));
        w.push((
            format!("{p}.self_attn.o_proj.weight"),
            rand((spec.hidden, spec.heads * hd), s)?,
        ));
        w.push((
            format!("{p}.mlp.gate_proj.weight"),
            rand((spec.mlp, spec.hidden), s)?,
        ));
        w.push((
            format!("{p}.mlp.up_proj.weight"),
            rand((spec.mlp, spec.hidden), s)?,
        ));
        w.push((
            format!("{p}.mlp.down_proj.weight"),
            rand((spec.hidden, spec.mlp), s)?,
        ));
    }
    w.push((
        "model.norm.weight".into(),
        Tensor::ones(spec.hidden, candle_core::DType::F32, &dev)?,
    ));
    if !spec.tied {
        w.push(("lm_head.weight".into(), rand((vocab_size, spec.hidden), s)?));
    }
    Ok(w)
}

/// llama.cpp's converter permutation of q/k rows: half-split pairs become adjacent pairs.
fn permute_rows(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let hd = rows / n_head;
    Ok(w.reshape((n_head, 2, hd / 2, cols))?
        .transpose(1, 2)?
        .reshape((rows, cols))?
        .contiguous()?)
}

fn gguf_name(hf: &str) -> String {
    let map = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = map.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    let rest = hf.trim_start_matches("model.layers.");
    let (l, name) = rest.split_once('.').expect("layer tensor");
    let g = match name {
        "input_layernorm.weight" => "attn_norm",
        "post_attention_layernorm.weight" => "ffn_norm",
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        other => panic!("unknown tensor {other}"),
    };
    format!("blk.{l}.{g}.weight")
}

/// Writes the tiny model as a GGUF file; matrices stored as `matrix_type` (F32, Q8_0, Q4_1...).
pub fn write_gguf(path: &Path, spec: &TinySpec, matrix_type: GgmlDType) -> Result<PathBuf> {
    write_gguf_with(path, spec, matrix_type, "llama")
}

/// Like [`write_gguf`] with another `general.architecture` (to test refusal).
pub fn write_gguf_with(
    path: &Path,
    spec: &TinySpec,
    matrix_type: GgmlDType,
    arch: &str,
) -> Result<PathBuf> {
    let tokens = vocab();
    let weights = hf_weights(spec, tokens.len())?;
    let mut qtensors = Vec::new();
    for (name, t) in &weights {
        let t = if name.contains("q_proj") {
            permute_rows(t, spec.heads)?
        } else if name.contains("k_proj") {
            permute_rows(t, spec.kv_heads)?
        } else {
            t.clone()
        };
        let ty = if t.rank() == 1 {
            GgmlDType::F32
        } else {
            matrix_type
        };
        qtensors.push((gguf_name(name), QTensor::quantize(&t, ty)?));
    }
    let u32v = |x: usize| Value::U32(x as u32);
    let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    let token_types = Value::Array(
        (0..tokens.len())
            .map(|i| Value::I32(if i < SPECIALS.len() { 3 } else { 1 }))
            .collect(),
    );
    let merges = strings(MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect());
    let md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (format!("{arch}.embedding_length"), u32v(spec.hidden)),
        (format!("{arch}.feed_forward_length"), u32v(spec.mlp)),
        (format!("{arch}.block_count"), u32v(spec.layers)),
        (format!("{arch}.attention.head_count"), u32v(spec.heads)),
        (
            format!("{arch}.attention.head_count_kv"),
            u32v(spec.kv_heads),
        ),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        ),
        (format!("{arch}.rope.freq_base"), Value::F32(10_000.0)),
        (format!("{arch}.context_length"), u32v(spec.context)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
        ("tokenizer.ggml.tokens".into(), strings(tokens.clone())),
        ("tokenizer.ggml.merges".into(), merges),
        ("tokenizer.ggml.token_type".into(), token_types),
        ("tokenizer.ggml.eos_token_id".into(), u32v(2)),
    ];
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qtensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path)?;
    gguf_file::write(&mut f, &md_refs, &t_refs)?;
    Ok(path.to_path_buf())
}

/// Writes the tiny model as an HF directory (`config.json`, `model.safetensors`,
/// `tokenizer.json`) with the same weights as [`write_gguf`].
pub fn write_safetensors_dir(dir: &Path, spec: &TinySpec) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let gguf = dir.join("tmp-tokenizer.gguf");
    write_gguf(&gguf, spec, GgmlDType::F32)?;
    let g = crate::gguf::GgufFile::open(&gguf, &Device::Cpu)?;
    let tok = crate::tokenizer::Tokenizer::from_gguf(&g)?;
    tok.save_json(&dir.join("tokenizer.json"))?;
    std::fs::remove_file(&gguf)?;
    let tokens = vocab();
    let weights: HashMap<String, Tensor> = hf_weights(spec, tokens.len())?.into_iter().collect();
    candle_core::safetensors::save(&weights, dir.join("model.safetensors"))?;
    let config = serde_json::json!({
        "model_type": "llama",
        "vocab_size": tokens.len(),
        "hidden_size": spec.hidden,
        "intermediate_size": spec.mlp,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": spec.context,
        "tie_word_embeddings": spec.tied,
    });
    std::fs::write(dir.join("config.json"), config.to_string())
        .map_err(|e| anyhow!("writing config.json: {e}"))?;
    Ok(dir.to_path_buf())
}

/// A fresh empty directory under the system temp dir for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrite-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}
