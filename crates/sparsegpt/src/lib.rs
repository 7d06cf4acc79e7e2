//! ferrite-sparsegpt: one-shot pruning of llama-family models.
//!
//! - [`sparsegpt`]: SparseGPT (Frantar & Alistarh 2023), Algorithm 1 — OBS updates with an
//!   adaptive mask, unstructured or N:M;
//! - [`wanda`] (Sun et al. 2023) and [`magnitude`]: the baselines;
//! - [`hessian`]: the layer Hessian `2XXᵀ/n`, its dampened inverse Cholesky factor (faer);
//! - [`mask`], [`nm_mask`], [`pattern`]: exact-count masks for every [`Sparsity`];
//! - [`calibration`]: seeded calibration segments from text;
//! - [`sequential`]: the block-by-block driver over a [`ferrite_llm::Llama`], one seam
//!   ([`Pruner`]) for all three methods.

pub mod calibration;
pub mod hessian;
pub mod magnitude;
pub mod mask;
pub mod matrix;
pub mod nm_mask;
pub mod pattern;
pub mod pruner;
pub mod sequential;
pub mod sparsegpt;
pub mod wanda;

pub use calibration::Calibration;
pub use magnitude::Magnitude;
pub use matrix::Matrix;
pub use pattern::Sparsity;
pub use pruner::Pruner;
pub use sequential::{prune_model, PruneReport};
pub use sparsegpt::SparseGpt;
pub use wanda::Wanda;
