//! GGUF files: validation (magic, truncation), hyper-parameters from the metadata, and the
//! tensor-name mapping of llama.cpp's converter.

use crate::config::{LlamaConfig, RopeStyle};
use crate::weights::{StoredTensor, TensorRole, WeightSource};
use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::Device;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An opened, validated GGUF file.
pub struct GgufFile {
    path: PathBuf,
    /// Parsed header: metadata and tensor directory.
    pub content: Content,
    reader: BufReader<File>,
    device: Device,
}

impl GgufFile {
    /// Opens `path`, checks the magic and that every tensor lies inside the file.
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        let mut file =
            File::open(path).with_context(|| format!("cannot open model {}", path.display()))?;
        let file_len = file.metadata()?.len();
        let mut magic = [0u8; 4];
        if file.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
            bail!("{} is not a GGUF file (bad magic)", path.display());
        }
        let mut reader = BufReader::new(File::open(path)?);
        let content = Content::read(&mut reader).map_err(|e| {
            anyhow::anyhow!(
                "{} is a corrupt or truncated GGUF file: {e}",
                path.display()
            )
        })?;
        for (name, info) in &content.tensor_infos {
            let dtype = info.ggml_dtype;
            let bytes = info.shape.elem_count() / dtype.block_size() * dtype.type_size();
            let end = content.tensor_data_offset + info.offset + bytes as u64;
            if end > file_len {
                bail!(
                    "{} is truncated: tensor `{name}` ends at byte {end} but the file has {file_len}",
                    path.display()
                );
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
            device: device.clone(),
        })
    }

    /// The metadata value under `key`.
    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn meta_usize(&self, key: &str) -> Result<usize> {
        let v = self
            .meta(key)
            .with_context(|| format!("GGUF metadata lacks `{key}`"))?;
        value_to_u64(v).map(|x| x as usize)
    }

    fn meta_f64(&self, key: &str) -> Option<f64> {
        self.meta(key).and_then(|v| match v {
            Value::F32(x) => Some(*x as f64),
            Value::F64(x) => Some(*x),
            _ => None,
        })
    }

    /// The architecture named in `general.architecture`.
    pub fn architecture(&self) -> Result<String> {
        Ok(self
            .meta("general.architecture")
            .context("GGUF metadata lacks `general.architecture`")?
            .to_string()?
            .clone())
    }

    /// Hyper-parameters of a llama-family model.
    pub fn llama_config(&self) -> Result<LlamaConfig> {
        let arch = self.architecture()?;
        if arch != "llama" {
            bail!(
                "unsupported architecture `{arch}` in {} (ferrite runs the llama family)",
                self.path.display()
            );
        }
        let key = |k: &str| format!("{arch}.{k}");
        let n_head = self.meta_usize(&key("attention.head_count"))?;
        let hidden_size = self.meta_usize(&key("embedding_length"))?;
        let vocab_size = match self.meta_usize(&key("vocab_size")) {
            Ok(v) => v,
            Err(_) => self
                .meta("tokenizer.ggml.tokens")
                .and_then(|v| v.to_vec().ok())
                .map(|v| v.len())
                .context("GGUF metadata has neither a vocab size nor tokens")?,
        };
        let cfg = LlamaConfig {
            architecture: arch.clone(),
            vocab_size,
            hidden_size,
            intermediate_size: self.meta_usize(&key("feed_forward_length"))?,
            n_layer: self.meta_usize(&key("block_count"))?,
            n_head,
            n_kv_head: self
                .meta_usize(&key("attention.head_count_kv"))
                .unwrap_or(n_head),
            head_dim: self
                .meta_usize(&key("attention.key_length"))
                .or_else(|_| self.meta_usize(&key("rope.dimension_count")))
                .unwrap_or(hidden_size / n_head.max(1)),
            rms_norm_eps: self
                .meta_f64(&key("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5),
            rope_theta: self.meta_f64(&key("rope.freq_base")).unwrap_or(10_000.0),
            rope_style: RopeStyle::Interleaved,
            context_length: self.meta_usize(&key("context_length")).unwrap_or(2048),
            tie_word_embeddings: !self.content.tensor_infos.contains_key("output.weight"),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// `(name, type, shape)` of every tensor, sorted by name.
    pub fn tensor_list(&self) -> Vec<(String, String, Vec<usize>)> {
        let mut v: Vec<_> = self
            .content
            .tensor_infos
            .iter()
            .map(|(n, i)| {
                (
                    n.clone(),
                    format!("{:?}", i.ggml_dtype).to_lowercase(),
                    i.shape.dims().to_vec(),
                )
            })
            .collect();
        v.sort();
        v
    }
}

/// llama.cpp's name for a tensor role.
pub fn gguf_name(role: TensorRole) -> String {
    use TensorRole::*;
    match role {
        TokenEmbedding => "token_embd.weight".into(),
        OutputNorm => "output_norm.weight".into(),
        Output => "output.weight".into(),
        AttnNorm(l) => format!("blk.{l}.attn_norm.weight"),
        Q(l) => format!("blk.{l}.attn_q.weight"),
        K(l) => format!("blk.{l}.attn_k.weight"),
        V(l) => format!("blk.{l}.attn_v.weight"),
        O(l) => format!("blk.{l}.attn_output.weight"),
        FfnNorm(l) => format!("blk.{l}.ffn_norm.weight"),
        Gate(l) => format!("blk.{l}.ffn_gate.weight"),
        Up(l) => format!("blk.{l}.ffn_up.weight"),
        Down(l) => format!("blk.{l}.ffn_down.weight"),
    }
}

impl WeightSource for GgufFile {
    fn load(&mut self, role: TensorRole) -> Result<Option<StoredTensor>> {
        let name = gguf_name(role);
        if !self.content.tensor_infos.contains_key(&name) {
            return Ok(None);
        }
        let q = self
            .content
            .tensor(&mut self.reader, &name, &self.device)
            .with_context(|| format!("reading tensor `{name}` from {}", self.path.display()))?;
        Ok(Some(StoredTensor::Quantized(Arc::new(q))))
    }

    fn format(&self) -> &'static str {
        "gguf"
    }
}

/// Reads any integer metadata value.
pub fn value_to_u64(v: &Value) -> Result<u64> {
    Ok(match v {
        Value::U8(x) => *x as u64,
        Value::I8(x) => *x as u64,
        Value::U16(x) => *x as u64,
        Value::I16(x) => *x as u64,
        Value::U32(x) => *x as u64,
        Value::I32(x) => *x as u64,
        Value::U64(x) => *x,
        Value::I64(x) => *x as u64,
        other => bail!("expected an integer in GGUF metadata, got {other:?}"),
    })
}
