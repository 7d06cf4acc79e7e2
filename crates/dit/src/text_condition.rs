//! Text conditions for the cross-attention path: captions embedded by a language model's token
//! embedding table (here SmolLM2-135M's, 576-wide, through ferrite-llm), to be passed as
//! [`crate::Condition::Sequence`] to a DiT built with `cond_dim = Some(576)`.
//!
//! This is the paper's remark (§3.2, cross-attention block "similar to the original design from
//! Vaswani et al., and also similar to the one used by LDM for conditioning on class labels") taken
//! to text, in the cheapest form: no transformer pass over the caption, only its token embeddings,
//! each scaled to unit RMS so the projection in [`crate::sequence_embedder`] starts from inputs of
//! unit size. [`Pooling::Mean`] gives one vector per caption; [`Pooling::Tokens`] keeps the
//! sequence, shorter captions padded with the end-of-text token's embedding.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, D};
use ferrite_llm::llama::Embedding;
use ferrite_llm::{load_model, ComputeDType, Tokenizer};
use std::path::Path;

/// The ten Fashion-MNIST class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// How a caption becomes a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean of the token embeddings: `[1, width]` per caption.
    Mean,
    /// Every token: `[L_max, width]` per caption, padded with the end-of-text embedding.
    Tokens,
}

/// A language model's tokenizer and token embedding table.
pub struct TextEmbedder {
    tokenizer: Tokenizer,
    embedding: Embedding,
    width: usize,
    pad_id: u32,
    device: Device,
}

impl TextEmbedder {
    /// Loads the tokenizer and token embeddings of a GGUF / safetensors llama-family model
    /// (the decoder blocks are loaded too and dropped).
    pub fn load(model: &Path) -> Result<Self> {
        let loaded = load_model(model, ComputeDType::Quantized)
            .with_context(|| format!("loading the text model {}", model.display()))?;
        let width = loaded.config().hidden_size;
        let device = loaded.model.device().clone();
        let pad_id = ["<|endoftext|>", "</s>", "<|im_end|>"]
            .iter()
            .find_map(|t| loaded.tokenizer.token_id(t))
            .context("the text model's tokenizer has no end-of-text token to pad with")?;
        Ok(Self {
            tokenizer: loaded.tokenizer,
            embedding: loaded.model.embedding,
            width,
            pad_id,
            device,
        })
    }

    /// Width of the embeddings (`cond_dim` of the DiT).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Token embeddings of `text`, each scaled to unit RMS: `[L, width]`.
    pub fn embed(&self, text: &str) -> Result<Tensor> {
        let ids = self.tokenizer.encode(text)?;
        if ids.is_empty() {
            bail!("cannot embed an empty caption")
        }
        self.embed_ids(&ids)
    }

    fn embed_ids(&self, ids: &[u32]) -> Result<Tensor> {
        let e = self.embedding.forward(ids, &self.device)?;
        let rms = e.sqr()?.mean_keepdim(D::Minus1)?.sqrt()?;
        Ok(e.broadcast_div(&(rms + 1e-6)?)?)
    }

    /// Captions to a batch `[N, L, width]` (`L = 1` with [`Pooling::Mean`]).
    pub fn embed_batch(&self, captions: &[&str], pooling: Pooling) -> Result<Tensor> {
        let ids = captions
            .iter()
            .map(|c| self.tokenizer.encode(c))
            .collect::<Result<Vec<_>>>()?;
        if let Some(i) = ids.iter().position(|v| v.is_empty()) {
            bail!("caption {i} is empty")
        }
        let rows = match pooling {
            Pooling::Mean => ids
                .iter()
                .map(|v| self.embed_ids(v)?.mean_keepdim(0).map_err(Into::into))
                .collect::<Result<Vec<_>>>()?,
            Pooling::Tokens => {
                let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
                ids.iter()
                    .map(|v| {
                        let mut padded = v.clone();
                        padded.resize(longest, self.pad_id);
                        self.embed_ids(&padded)
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };
        Ok(Tensor::stack(&rows, 0)?)
    }

    /// The ten Fashion-MNIST class names as a `[10, L, width]` table (row = label).
    pub fn fashion_mnist_classes(&self, pooling: Pooling) -> Result<Tensor> {
        self.embed_batch(&FASHION_MNIST_CLASSES, pooling)
    }
}

/// The conditions of a batch of labels from a per-class table `[K, L, width]`: `[B, L, width]`.
pub fn conditions_for_labels(table: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    table.index_select(labels, 0)
}
