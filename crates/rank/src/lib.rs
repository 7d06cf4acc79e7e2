//! ferrite-rank: attention rank collapse, after Dong, Cordonnier & Loukas 2021, "Attention is not
//! all you need: pure attention loses rank doubly exponentially with depth" (ICML 2021; reference
//! code twistedcubic/attention-rank-collapse).
//!
//! - [`residual`]: `res(X) = X − 1xᵀ`, the composite norm `‖·‖₁,∞`, Frobenius, relative residuals;
//! - [`surgery`]: a transformer run as SAN, SAN + skip, SAN + MLP or full, random or from a
//!   loaded llama-family model, recording the residual stream after each block;
//! - [`paths`]: the path-length distribution `C(L,k)Hᵏ/(H+1)ᴸ` and chained attention products;
//! - [`bound`]: a numerical check of Theorem 2.2's doubly exponential bound;
//! - [`study`]: the experiments of the paper's Figure 2 on a batch of text sequences;
//! - [`plot`] and [`cli`]: the PNG and `ferrite rank`.

pub mod bound;
pub mod cli;
pub mod paths;
pub mod plot;
pub mod residual;
pub mod study;
pub mod surgery;
