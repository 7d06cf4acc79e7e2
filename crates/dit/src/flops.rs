//! Analytic parameter and compute counts (paper Table 4 and Figure 5 report Gflops per forward
//! pass of one image).
//!
//! Gflops as the paper counts them (fvcore convention): one multiply-accumulate of a matrix product
//! counts as one flop, and only matrix products are counted (linear layers, the patch embedding,
//! `Q K^T` and `A V`); norms, activations and softmax are left out. With this count DiT-S/2 is
//! 6.06 and DiT-XL/2 118.6 Gflops, the paper's figures (checked in the tests).

use crate::config::{Conditioning, DitConfig, FREQUENCY_EMBEDDING_SIZE};
use serde::Serialize;

/// Trainable parameters (the variables [`crate::DiT::new`] creates; the fixed position embedding
/// is not one of them).
pub fn params(cfg: &DitConfig) -> usize {
    let d = cfg.hidden_size;
    let m = cfg.mlp_hidden();
    let p2 = cfg.patch_size * cfg.patch_size;
    let linear = |i: usize, o: usize| i * o + o;
    let patch = linear(cfg.in_channels * p2, d);
    let timestep = linear(FREQUENCY_EMBEDDING_SIZE, d) + linear(d, d);
    let labels = (cfg.num_classes + usize::from(cfg.has_null_class())) * d;
    let sequence = cfg.cond_dim.map_or(0, |k| linear(k, d) + d);
    let shared_block = linear(d, 3 * d) + linear(d, d) + linear(d, m) + linear(m, d);
    let design_block = match cfg.conditioning {
        Conditioning::InContext => 2 * 2 * d,
        Conditioning::CrossAttention => 3 * 2 * d + linear(d, d) + linear(d, 2 * d) + linear(d, d),
        Conditioning::AdaLn => linear(d, 4 * d),
        Conditioning::AdaLnZero => linear(d, 6 * d),
    };
    let final_norm = if cfg.conditioning.is_adaptive() {
        linear(d, 2 * d)
    } else {
        2 * d
    };
    let final_layer = final_norm + linear(d, p2 * cfg.out_channels());
    patch + timestep + labels + sequence + cfg.depth * (shared_block + design_block) + final_layer
}

/// Multiply-accumulates of one forward pass of one sample, conditioned on a sequence of
/// `cond_len` vectors (`cond_len = 1` and no projection for a class label).
pub fn flops(cfg: &DitConfig, cond_len: usize, sequence_condition: bool) -> u64 {
    let d = cfg.hidden_size as u64;
    let m = cfg.mlp_hidden() as u64;
    let t = cfg.num_patches() as u64;
    let p2 = (cfg.patch_size * cfg.patch_size) as u64;
    let ctx = 1 + cond_len as u64; // [t_emb, c...]
    let patch = t * cfg.in_channels as u64 * p2 * d;
    let timestep = FREQUENCY_EMBEDDING_SIZE as u64 * d + d * d;
    let projection = if sequence_condition {
        cond_len as u64 * cfg.cond_dim.unwrap_or(0) as u64 * d
    } else {
        0
    };
    let n = match cfg.conditioning {
        Conditioning::InContext => t + ctx,
        _ => t,
    };
    let self_attention = n * d * 3 * d + 2 * n * n * d + n * d * d;
    let mlp = 2 * n * d * m;
    let design = match cfg.conditioning {
        Conditioning::InContext => 0,
        Conditioning::CrossAttention => t * d * d + ctx * d * 2 * d + 2 * t * ctx * d + t * d * d,
        Conditioning::AdaLn => d * 4 * d,
        Conditioning::AdaLnZero => d * 6 * d,
    };
    let final_modulation = if cfg.conditioning.is_adaptive() {
        d * 2 * d
    } else {
        0
    };
    let final_linear = t * d * p2 * cfg.out_channels() as u64;
    patch
        + timestep
        + projection
        + cfg.depth as u64 * (self_attention + mlp + design)
        + final_modulation
        + final_linear
}

/// Gflops of one class-conditional forward pass (the paper's figure).
pub fn gflops(cfg: &DitConfig) -> f64 {
    flops(cfg, 1, false) as f64 / 1e9
}

/// A printable, serialisable description of a configuration (for `ferrite diffusion info`).
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// Block design.
    pub conditioning: String,
    /// Input `I x I x C`.
    pub input: [usize; 3],
    /// Patch side.
    pub patch_size: usize,
    /// Image tokens.
    pub tokens: usize,
    /// Hidden size, depth, heads.
    pub hidden_size: usize,
    /// Number of blocks.
    pub depth: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Trainable parameters.
    pub params: usize,
    /// Gflops per class-conditional forward pass of one sample.
    pub gflops: f64,
}

impl ModelSummary {
    /// Summary of `cfg`.
    pub fn new(cfg: &DitConfig) -> Self {
        Self {
            conditioning: cfg.conditioning.name().to_string(),
            input: [cfg.input_size, cfg.input_size, cfg.in_channels],
            patch_size: cfg.patch_size,
            tokens: cfg.num_patches(),
            hidden_size: cfg.hidden_size,
            depth: cfg.depth,
            num_heads: cfg.num_heads,
            out_channels: cfg.out_channels(),
            params: params(cfg),
            gflops: gflops(cfg),
        }
    }
}

impl std::fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DiT {}: input {}x{}x{}, patch {} ({} tokens), d={} N={} heads={}, out {} ch, {:.2}M params, {:.3} Gflops",
            self.conditioning,
            self.input[0],
            self.input[1],
            self.input[2],
            self.patch_size,
            self.tokens,
            self.hidden_size,
            self.depth,
            self.num_heads,
            self.out_channels,
            self.params as f64 / 1e6,
            self.gflops
        )
    }
}

impl DitConfig {
    /// Trainable parameters, see [`params`].
    pub fn params(&self) -> usize {
        params(self)
    }

    /// Gflops per class-conditional forward pass, see [`gflops`].
    pub fn gflops(&self) -> f64 {
        gflops(self)
    }

    /// Printable / serialisable summary.
    pub fn summary(&self) -> ModelSummary {
        ModelSummary::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        ((a - b) / b).abs() < rel
    }

    #[test]
    fn matches_paper_table4_and_figure5() {
        // Table 4 (Gflops) and Table 1 / Section 4 parameter counts.
        for (name, g) in [
            ("S/2", 6.06),
            ("B/2", 23.01),
            ("L/2", 80.71),
            ("XL/2", 118.64),
            ("XL/4", 29.05),
        ] {
            let got = DitConfig::preset(name).unwrap().gflops();
            assert!(close(got, g, 0.005), "{name}: {got} vs {g}");
        }
        let xl = DitConfig::preset("XL/2").unwrap();
        assert!(close(xl.params() as f64, 675e6, 0.01), "{}", xl.params());
        // Figure 5: in-context 119.4, cross-attention 137.6, adaLN and adaLN-Zero 118.6.
        for (design, g) in [
            (Conditioning::InContext, 119.4),
            (Conditioning::CrossAttention, 137.6),
            (Conditioning::AdaLn, 118.6),
            (Conditioning::AdaLnZero, 118.6),
        ] {
            let got = xl.clone().with_conditioning(design).gflops();
            assert!(close(got, g, 0.002), "{design}: {got} vs {g}");
        }
    }

    #[test]
    fn hand_count_on_a_tiny_config() {
        // I = 4, p = 2 (T = 4 tokens), C = 1, d = 8, N = 1, MLP 32, 3 classes + null, no Σ.
        let cfg = DitConfig {
            input_size: 4,
            patch_size: 2,
            in_channels: 1,
            hidden_size: 8,
            depth: 1,
            num_heads: 2,
            mlp_ratio: 4.0,
            class_dropout_prob: 0.1,
            num_classes: 3,
            learn_sigma: false,
            conditioning: Conditioning::AdaLnZero,
            cond_dim: None,
        };
        // patch 4*4*8 = 128; timestep 256*8 + 64 = 2112; qkv 4*8*24 = 768; QK^T and AV 2*4*4*8 = 256;
        // proj 4*64 = 256; MLP 2*4*8*32 = 2048; adaLN-Zero 8*48 = 384; final modulation 8*16 = 128;
        // final linear 4*8*4 = 128.
        let by_hand = 128 + 2112 + 768 + 256 + 256 + 2048 + 384 + 128 + 128;
        assert_eq!(flops(&cfg, 1, false), by_hand);
        // in-context: 6 tokens, no modulation: qkv 6*8*24 = 1152, attention 2*36*8 = 576,
        // proj 6*64 = 384, MLP 2*6*8*32 = 3072.
        let ic = cfg.clone().with_conditioning(Conditioning::InContext);
        assert_eq!(
            flops(&ic, 1, false),
            128 + 2112 + 1152 + 576 + 384 + 3072 + 128
        );
        // cross-attention: + q 4*64, kv 2*8*16, scores and AV 2*4*2*8, proj 4*64.
        let ca = cfg.clone().with_conditioning(Conditioning::CrossAttention);
        let cross = 256 + 256 + 128 + 256;
        assert_eq!(
            flops(&ca, 1, false),
            128 + 2112 + 768 + 256 + 256 + 2048 + cross + 128
        );
        // parameters: patch 4*8+8, timestep 256*8+8 + 64+8, labels 4*8, block: qkv 8*24+24,
        // proj 64+8, MLP 8*32+32 + 32*8+8, adaLN-Zero 8*48+48; final 8*16+16 + 8*4+4.
        let p = 40 + 2056 + 72 + 32 + 216 + 72 + 288 + 264 + 432 + 144 + 36;
        assert_eq!(cfg.params(), p);
        let s = cfg.summary();
        assert_eq!(s.tokens, 4);
        assert!(s.to_string().contains("adaln-zero"));
    }
}
