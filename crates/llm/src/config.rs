//! Hyper-parameters of a llama-family model, read in one place from GGUF metadata or an HF
//! `config.json`.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// How RoPE pairs the channels of a head.
///
/// llama.cpp's converter permutes the rows of `W_q` and `W_k` so that rotated pairs are adjacent
/// (`(2i, 2i+1)`, "interleaved"); HF checkpoints keep the original layout where channel `i` pairs
/// with `i + d/2` ("half split"). Both compute the same attention scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum RopeStyle {
    /// Pairs `(2i, 2i+1)` (GGUF files).
    Interleaved,
    /// Pairs `(i, i + d/2)` (HF safetensors).
    HalfSplit,
}

/// Architecture of a llama-family decoder (RMSNorm, RoPE, GQA attention, SwiGLU MLP).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LlamaConfig {
    /// Architecture name as found in the file (`llama`).
    pub architecture: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Residual stream width `d_model`.
    pub hidden_size: usize,
    /// Hidden width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub n_layer: usize,
    /// Number of query heads.
    pub n_head: usize,
    /// Number of key/value heads (GQA: `n_head % n_kv_head == 0`).
    pub n_kv_head: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency θ.
    pub rope_theta: f64,
    /// How RoPE pairs channels; follows the weight layout of the file.
    pub rope_style: RopeStyle,
    /// Context length the model was trained with.
    pub context_length: usize,
    /// Whether the output projection shares the token embedding.
    pub tie_word_embeddings: bool,
}

impl LlamaConfig {
    /// Query heads sharing one key/value head.
    pub fn n_rep(&self) -> usize {
        self.n_head / self.n_kv_head
    }

    /// Bytes of K and V for one token in all layers, stored as f32 (the runtime's KV dtype).
    pub fn kv_bytes_per_token(&self, bytes_per_elem: usize) -> usize {
        2 * self.n_layer * self.n_kv_head * self.head_dim * bytes_per_elem
    }

    /// Checks the invariants the model code relies on.
    pub fn validate(&self) -> Result<()> {
        if self.n_head == 0 || self.n_kv_head == 0 || !self.n_head.is_multiple_of(self.n_kv_head) {
            bail!(
                "invalid head counts: n_head {} is not a multiple of n_kv_head {}",
                self.n_head,
                self.n_kv_head
            );
        }
        if !self.head_dim.is_multiple_of(2) || self.head_dim == 0 {
            bail!("head_dim {} must be even for RoPE", self.head_dim);
        }
        if self.n_layer == 0 || self.hidden_size == 0 || self.vocab_size == 0 {
            bail!("model has an empty dimension: {self:?}");
        }
        Ok(())
    }
}

/// The subset of an HF `config.json` that describes a llama-family model.
#[derive(Debug, Deserialize)]
pub struct HfConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    /// transformers >= 5 nests θ here: `{"rope_theta": ..., "rope_type": "default"}`.
    rope_parameters: Option<RopeParameters>,
    /// Older configs' RoPE scaling (`null` for plain RoPE).
    rope_scaling: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
}

/// `rope_parameters` of a transformers >= 5 config.
#[derive(Debug, Deserialize)]
struct RopeParameters {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
}

impl HfConfig {
    /// Parses `config.json` text.
    pub fn parse(text: &str) -> Result<Self> {
        serde_json::from_str(text).context("config.json is not a valid llama config")
    }

    /// Converts to the runtime's config; only `model_type: llama` (or absent) is accepted.
    pub fn into_llama(self) -> Result<LlamaConfig> {
        let arch = self.model_type.unwrap_or_else(|| "llama".into());
        if arch != "llama" {
            bail!("unsupported architecture `{arch}` (ferrite runs the llama family)");
        }
        let rope_type = self
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_type.clone())
            .unwrap_or_else(|| "default".into());
        let scaled = self.rope_scaling.as_ref().is_some_and(|v| !v.is_null());
        if rope_type != "default" || scaled {
            bail!("unsupported RoPE scaling (`{rope_type}`): ferrite implements plain RoPE");
        }
        let rope_theta = self
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(10_000.0);
        let cfg = LlamaConfig {
            architecture: arch,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            n_layer: self.num_hidden_layers,
            n_head: self.num_attention_heads,
            n_kv_head: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim: self
                .head_dim
                .unwrap_or(self.hidden_size / self.num_attention_heads.max(1)),
            rms_norm_eps: self.rms_norm_eps,
            rope_theta,
            rope_style: RopeStyle::HalfSplit,
            context_length: self.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(false),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "rms_norm_eps": 1e-5"#;

    fn parse(extra: &str) -> Result<LlamaConfig> {
        HfConfig::parse(&format!("{{{BASE}{extra}}}"))?.into_llama()
    }

    #[test]
    fn rope_theta_from_either_place() -> Result<()> {
        assert_eq!(parse("")?.rope_theta, 10_000.0);
        assert_eq!(parse(r#", "rope_theta": 5e5"#)?.rope_theta, 5e5);
        let nested = r#", "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}"#;
        assert_eq!(parse(nested)?.rope_theta, 1e5);
        Ok(())
    }

    #[test]
    fn scaled_rope_and_other_architectures_are_refused() {
        assert!(parse(r#", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}"#).is_err());
        assert!(parse(r#", "rope_parameters": {"rope_type": "yarn"}"#).is_err());
        assert!(parse(r#", "model_type": "mistral""#).is_err());
    }
}
