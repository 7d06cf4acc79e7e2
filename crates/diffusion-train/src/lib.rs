//! Training and evaluation of class-conditional diffusion transformers (DiT, Peebles & Xie 2023)
//! on Fashion-MNIST, on CPU.
//!
//! * [`fashion_mnist`]: the IDX files of Debian's `dataset-fashion-mnist`, scaled to [-1, 1].
//! * [`train`]: the training loop (AdamW [`adamw`], weight EMA [`ema`], label dropout for
//!   classifier-free guidance), resumable from atomic [`checkpoint`]s with counter-based
//!   [`seeded`] randomness, so a resumed run reproduces an uninterrupted one.
//! * [`sampling`]: class-conditional samples from a checkpoint through `ferrite-diffusion`'s
//!   samplers (DDPM / DDIM, respacing, guidance), the network run by [`hand_forward`] where the
//!   hand-written pass covers it, finished batches kept by [`sample_shards`] so long runs resume.
//! * [`classifier`], [`fid`], [`evaluate`]: a small CNN trained here, the classifier-feature FID
//!   on its penultimate features and the class accuracy of samples.
//! * [`grid`], [`loss_plot`]: PNG outputs.

pub mod adamw;
pub mod checkpoint;
pub mod classifier;
pub mod ema;
pub mod evaluate;
pub mod fashion_mnist;
pub mod fid;
pub mod flat_vars;
pub mod grid;
pub mod hand_forward;
pub mod loss_plot;
pub mod sample_shards;
pub mod sampling;
pub mod seeded;
pub mod train;
