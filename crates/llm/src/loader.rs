//! Opens a model path (a GGUF file or an HF safetensors directory) and returns the model with
//! its tokenizer.

use crate::config::LlamaConfig;
use crate::gguf::GgufFile;
use crate::llama::{ComputeDType, Llama};
use crate::safetensors::SafetensorsDir;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};

/// A loaded model, its tokenizer and where it came from.
pub struct LoadedModel {
    /// The network.
    pub model: Llama,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Path it was loaded from.
    pub path: PathBuf,
    /// `gguf` or `safetensors`.
    pub format: &'static str,
    /// `(tensor, type, shape)` as stored in the file (`sparse-<layout>` for sparse matrices).
    pub tensors: Vec<(String, String, Vec<usize>)>,
}

impl LoadedModel {
    /// Hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.model.config
    }
}

/// Loads the model at `path`: a `.gguf` file, or a directory with `config.json`,
/// `*.safetensors` and `tokenizer.json`.
pub fn load_model(path: &Path, dtype: ComputeDType) -> Result<LoadedModel> {
    let device = Device::Cpu;
    if !path.exists() {
        bail!("model not found: {}", path.display());
    }
    if path.is_dir() {
        let (mut st, config) = SafetensorsDir::open(path, &device)?;
        let tokenizer = Tokenizer::from_hf_dir(path)?;
        let tensors = st.tensor_list()?;
        let model = Llama::load(config, &mut st, dtype, &device)?;
        return Ok(LoadedModel {
            model,
            tokenizer,
            path: path.to_path_buf(),
            format: "safetensors",
            tensors,
        });
    }
    let mut gguf = GgufFile::open(path, &device)?;
    let config = gguf.llama_config()?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let tensors = gguf.tensor_list();
    let model = Llama::load(config, &mut gguf, dtype, &device)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        path: path.to_path_buf(),
        format: "gguf",
        tensors,
    })
}
