//! ferrite-llm: a llama-family LLM runtime on candle (CPU).
//!
//! - [`loader::load_model`] opens a GGUF file or an HF safetensors directory;
//! - [`llama::Llama`] is the decoder; its KV cache is a policy behind [`kv_cache::KvCache`];
//! - [`generate`], [`perplexity`] and [`sampling`] are what the CLI and server call.

pub mod config;
pub mod cpu_ops;
pub mod export;
pub mod generate;
pub mod gguf;
pub mod kv_cache;
pub mod linear;
pub mod llama;
pub mod loader;
pub mod perplexity;
pub mod profile;
pub mod rope;
pub mod safetensors;
pub mod sampling;
pub mod testing;
pub mod tokenizer;
pub mod weights;

pub use config::LlamaConfig;
pub use kv_cache::{FullCache, KvCache, KvGeometry};
pub use llama::{ComputeDType, Llama};
pub use loader::{load_model, LoadedModel};
pub use tokenizer::Tokenizer;
