//! ferrite-dit: Diffusion Transformers (William Peebles & Saining Xie, "Scalable Diffusion Models
//! with Transformers", ICCV 2023, arXiv:2212.09748) on candle, trainable with candle's autograd.
//!
//! - [`DitConfig`]: hyper-parameters; [`DitConfig::preset`] gives the paper's `S/2` .. `XL/8` and
//!   the CPU presets `cpu-tiny`, `cpu-small` for 28x28x1 Fashion-MNIST;
//!   [`DitConfig::params`], [`DitConfig::gflops`] and [`DitConfig::summary`] count analytically
//!   ([`flops`]).
//! - [`Conditioning`]: the four block designs of §3.2 (in-context, cross-attention, adaLN,
//!   adaLN-Zero), selectable per config, everything else shared ([`block`]).
//! - [`DiT`]: the model. [`DiT::new`] takes a `VarBuilder`: [`seeded_var_builder`] for a fresh,
//!   seeded, trainable model with the reference initialisation (its variables land in the given
//!   `VarMap`, ready for `candle_nn::AdamW`), or a safetensors `VarBuilder` to load weights (the
//!   tensor names are the reference `state_dict`'s).
//! - [`DiT::forward`]`(x, t, Condition, train)` predicts ε (and the Σ interpolation with
//!   `learn_sigma`); `train` applies label dropout for classifier-free guidance;
//!   [`DiT::forward_with_cfg`] samples with guidance.
//! - [`Condition::Sequence`] conditions on a sequence of vectors (e.g. text token embeddings,
//!   [`text_condition`]) through the same embedding paths.
//!
//! ```no_run
//! use candle_core::{DType, Device, Tensor};
//! use ferrite_dit::{seeded_var_builder, Condition, DiT, DitConfig};
//! # fn main() -> candle_core::Result<()> {
//! let cfg = DitConfig::preset("cpu-tiny")?;
//! let varmap = candle_nn::VarMap::new();
//! let dit = DiT::new(&cfg, seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
//! let x = Tensor::randn(0f32, 1., (8, 1, 28, 28), &Device::Cpu)?;
//! let t = Tensor::full(500f32, 8, &Device::Cpu)?;
//! let y = Tensor::new(&[0u32, 1, 2, 3, 4, 5, 6, 7], &Device::Cpu)?;
//! let eps = dit.forward(&x, &t, Condition::Labels(&y), true)?; // [8, 1, 28, 28]
//! # Ok(()) }
//! ```

pub mod attention;
pub mod backprop;
pub mod block;
pub mod config;
pub mod dit;
pub mod final_layer;
pub mod flops;
pub mod fused_ops;
pub mod gelu;
pub mod init;
pub mod label_embedder;
pub mod layers;
pub mod modulated_norm;
pub mod patchify;
pub mod pos_embed;
pub mod sequence_embedder;
#[cfg(test)]
mod testing;
pub mod text_condition;
pub mod timestep_embedder;

pub use config::{Conditioning, DitConfig};
pub use dit::{Condition, DiT, GuidedChannels};
pub use flops::ModelSummary;
pub use init::seeded_var_builder;
