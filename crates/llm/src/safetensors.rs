//! HF safetensors checkpoints: a directory with `config.json`, `*.safetensors` and
//! `tokenizer.json`, tensors named as in `transformers`' `LlamaForCausalLM`.

use crate::config::{HfConfig, LlamaConfig};
use crate::weights::{StoredTensor, TensorRole, WeightSource};
use anyhow::{bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::Device;
use std::path::{Path, PathBuf};

/// An opened safetensors checkpoint directory.
pub struct SafetensorsDir {
    st: MmapedSafetensors,
    device: Device,
    /// Directory path.
    pub dir: PathBuf,
}

impl SafetensorsDir {
    /// Opens every `*.safetensors` file in `dir` and parses `config.json`.
    pub fn open(dir: &Path, device: &Device) -> Result<(Self, LlamaConfig)> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("cannot read {}", config_path.display()))?;
        let config = HfConfig::parse(&text)
            .with_context(|| format!("in {}", config_path.display()))?
            .into_llama()?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("no *.safetensors file in {}", dir.display());
        }
        // SAFETY: the files are mapped read-only and not modified while the model is loaded.
        let st = unsafe { MmapedSafetensors::multi(&files) }
            .with_context(|| format!("cannot read safetensors in {}", dir.display()))?;
        Ok((
            Self {
                st,
                device: device.clone(),
                dir: dir.to_path_buf(),
            },
            config,
        ))
    }
}

/// `transformers`' name for a tensor role.
pub fn hf_name(role: TensorRole) -> String {
    use TensorRole::*;
    match role {
        TokenEmbedding => "model.embed_tokens.weight".into(),
        OutputNorm => "model.norm.weight".into(),
        Output => "lm_head.weight".into(),
        AttnNorm(l) => format!("model.layers.{l}.input_layernorm.weight"),
        Q(l) => format!("model.layers.{l}.self_attn.q_proj.weight"),
        K(l) => format!("model.layers.{l}.self_attn.k_proj.weight"),
        V(l) => format!("model.layers.{l}.self_attn.v_proj.weight"),
        O(l) => format!("model.layers.{l}.self_attn.o_proj.weight"),
        FfnNorm(l) => format!("model.layers.{l}.post_attention_layernorm.weight"),
        Gate(l) => format!("model.layers.{l}.mlp.gate_proj.weight"),
        Up(l) => format!("model.layers.{l}.mlp.up_proj.weight"),
        Down(l) => format!("model.layers.{l}.mlp.down_proj.weight"),
    }
}

impl WeightSource for SafetensorsDir {
    fn load(&mut self, role: TensorRole) -> Result<Option<StoredTensor>> {
        let name = hf_name(role);
        match self.st.load(&name, &self.device) {
            Ok(t) => Ok(Some(StoredTensor::Dense(t))),
            Err(_) if self.st.get(&name).is_err() => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading `{name}`")),
        }
    }

    fn format(&self) -> &'static str {
        "safetensors"
    }
}
