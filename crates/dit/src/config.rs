//! DiT hyper-parameters and the named model configurations.
//!
//! Peebles & Xie, "Scalable Diffusion Models with Transformers" (ICCV 2023), Table 1: DiT-S/B/L/XL
//! (depth, hidden size, heads) crossed with patch sizes 2/4/8 (§3.2 "Patchify"). Paper models run on
//! 32x32x4 VAE latents of 256x256 images with 1000 ImageNet classes and learned Σ (the reference
//! code's defaults). The `cpu-*` presets are ours, sized for 28x28x1 Fashion-MNIST on two cores
//! (see docs/dit.md for the throughput measurements behind them).

use candle_core::{bail, Result};
use serde::{Deserialize, Serialize};

/// How a DiT block receives the timestep and condition embeddings (paper §3.2, Figure 3/5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Conditioning {
    /// The t and c embeddings appended to the image tokens as extra tokens (standard ViT blocks);
    /// removed after the last block.
    InContext,
    /// The t and c embeddings as a separate sequence, read by a multi-head cross-attention layer
    /// after self-attention.
    CrossAttention,
    /// Adaptive LayerNorm: scale and shift of each LayerNorm regressed from t + c.
    #[serde(rename = "adaln")]
    AdaLn,
    /// adaLN plus a residual gate α before each residual connection, the regression zero-initialised
    /// so every block starts as the identity. The paper's choice.
    #[default]
    #[serde(rename = "adaln-zero")]
    AdaLnZero,
}

impl Conditioning {
    /// All four designs, in the paper's Figure 5 order.
    pub const ALL: [Conditioning; 4] = [
        Conditioning::InContext,
        Conditioning::CrossAttention,
        Conditioning::AdaLn,
        Conditioning::AdaLnZero,
    ];

    /// Kebab-case name (`in-context`, `cross-attention`, `adaln`, `adaln-zero`).
    pub fn name(self) -> &'static str {
        match self {
            Conditioning::InContext => "in-context",
            Conditioning::CrossAttention => "cross-attention",
            Conditioning::AdaLn => "adaln",
            Conditioning::AdaLnZero => "adaln-zero",
        }
    }

    /// Parses a name as printed by [`Conditioning::name`] (also `adaLN-Zero` style capitals).
    pub fn parse(name: &str) -> Result<Self> {
        let lower = name.to_ascii_lowercase().replace('_', "-");
        for design in Self::ALL {
            if design.name() == lower {
                return Ok(design);
            }
        }
        bail!("unknown DiT conditioning `{name}` (expected in-context, cross-attention, adaln or adaln-zero)")
    }

    /// Whether the (final) LayerNorms are adaptive, i.e. modulated by t + c.
    pub fn is_adaptive(self) -> bool {
        matches!(self, Conditioning::AdaLn | Conditioning::AdaLnZero)
    }
}

impl std::fmt::Display for Conditioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Size of the sinusoidal timestep features fed to the timestep MLP (reference code: 256).
pub const FREQUENCY_EMBEDDING_SIZE: usize = 256;

/// Epsilon of every LayerNorm (reference code: 1e-6; diffusers' DiT uses 1e-5 in its blocks).
pub const LAYER_NORM_EPS: f64 = 1e-6;

/// Hyper-parameters of one DiT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DitConfig {
    /// Spatial side of the (square) input, in pixels or latent cells.
    pub input_size: usize,
    /// Side `p` of a patch; the token grid is `input_size / p` squared.
    pub patch_size: usize,
    /// Input channels `C`.
    pub in_channels: usize,
    /// Token width `d`.
    pub hidden_size: usize,
    /// Number of DiT blocks `N`.
    pub depth: usize,
    /// Attention heads per block.
    pub num_heads: usize,
    /// MLP hidden width as a multiple of `hidden_size`.
    pub mlp_ratio: f64,
    /// Probability of replacing a label by the null class in training (classifier-free guidance);
    /// 0 builds no null class.
    pub class_dropout_prob: f64,
    /// Number of class labels.
    pub num_classes: usize,
    /// Output `2C` channels (ε and the Σ interpolation of Improved DDPM) instead of `C`.
    pub learn_sigma: bool,
    /// Block design.
    pub conditioning: Conditioning,
    /// Width of sequence conditions ([`crate::Condition::Sequence`], e.g. text token embeddings);
    /// `None` builds no sequence embedder.
    pub cond_dim: Option<usize>,
}

impl DitConfig {
    /// A named configuration: `S/2` ... `XL/8` (also written `DiT-XL/2`) for the paper's models on
    /// 32x32x4 latents, 1000 classes, learned Σ; or a CPU preset for 28x28x1, 10 classes:
    /// `cpu-tiny` (p=4, d=128, N=4, 4 heads) and `cpu-small` (p=4, d=192, N=6, 6 heads).
    pub fn preset(name: &str) -> Result<Self> {
        let key = name.trim();
        let key = key.strip_prefix("DiT-").unwrap_or(key);
        if let Some(cfg) = Self::cpu_preset(key) {
            return Ok(cfg);
        }
        let Some((size, patch)) = key.split_once('/') else {
            bail!("unknown DiT preset `{name}` (expected S/2 .. XL/8, cpu-tiny or cpu-small)")
        };
        let (depth, hidden_size, num_heads) = match size {
            "S" => (12, 384, 6),
            "B" => (12, 768, 12),
            "L" => (24, 1024, 16),
            "XL" => (28, 1152, 16),
            _ => bail!("unknown DiT size `{size}` in `{name}` (expected S, B, L or XL)"),
        };
        let patch_size = match patch {
            "2" => 2,
            "4" => 4,
            "8" => 8,
            _ => bail!("unknown DiT patch size `{patch}` in `{name}` (expected 2, 4 or 8)"),
        };
        Ok(Self {
            input_size: 32,
            patch_size,
            in_channels: 4,
            hidden_size,
            depth,
            num_heads,
            mlp_ratio: 4.0,
            class_dropout_prob: 0.1,
            num_classes: 1000,
            learn_sigma: true,
            conditioning: Conditioning::AdaLnZero,
            cond_dim: None,
        })
    }

    fn cpu_preset(name: &str) -> Option<Self> {
        let (patch_size, hidden_size, depth, num_heads) = match name {
            "cpu-tiny" => (4, 128, 4, 4),
            "cpu-small" => (4, 192, 6, 6),
            _ => return None,
        };
        Some(Self {
            input_size: 28,
            patch_size,
            in_channels: 1,
            hidden_size,
            depth,
            num_heads,
            mlp_ratio: 4.0,
            class_dropout_prob: 0.1,
            num_classes: 10,
            learn_sigma: false,
            conditioning: Conditioning::AdaLnZero,
            cond_dim: None,
        })
    }

    /// Names accepted by [`DitConfig::preset`].
    pub fn preset_names() -> Vec<String> {
        let mut names: Vec<String> = ["S", "B", "L", "XL"]
            .iter()
            .flat_map(|s| [2, 4, 8].map(|p| format!("{s}/{p}")))
            .collect();
        names.push("cpu-tiny".into());
        names.push("cpu-small".into());
        names
    }

    /// The same configuration with another block design.
    pub fn with_conditioning(mut self, conditioning: Conditioning) -> Self {
        self.conditioning = conditioning;
        self
    }

    /// Checks the shapes fit together; called by [`crate::DiT::new`].
    pub fn validate(&self) -> Result<()> {
        if self.patch_size == 0 || self.input_size % self.patch_size != 0 {
            bail!(
                "DiT input size {} is not a multiple of the patch size {}",
                self.input_size,
                self.patch_size
            )
        }
        if self.num_heads == 0 || self.hidden_size % self.num_heads != 0 {
            bail!(
                "DiT hidden size {} is not a multiple of the head count {}",
                self.hidden_size,
                self.num_heads
            )
        }
        if self.hidden_size % 4 != 0 {
            bail!(
                "DiT hidden size {} must be a multiple of 4 (2-D sin-cos position embedding)",
                self.hidden_size
            )
        }
        if self.depth == 0 || self.in_channels == 0 || self.num_classes == 0 {
            bail!("DiT depth, in_channels and num_classes must be positive")
        }
        if !(0.0..1.0).contains(&self.class_dropout_prob) {
            bail!(
                "DiT class dropout probability {} is outside [0, 1)",
                self.class_dropout_prob
            )
        }
        if self.mlp_hidden() == 0 {
            bail!("DiT mlp_ratio {} gives an empty MLP", self.mlp_ratio)
        }
        Ok(())
    }

    /// Side of the token grid, `input_size / patch_size`.
    pub fn grid_size(&self) -> usize {
        self.input_size / self.patch_size
    }

    /// Number of image tokens `T = (I/p)^2`.
    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Output channels: `2C` with learned Σ, else `C`.
    pub fn out_channels(&self) -> usize {
        if self.learn_sigma {
            2 * self.in_channels
        } else {
            self.in_channels
        }
    }

    /// MLP hidden width, `int(hidden_size * mlp_ratio)` as in the reference.
    pub fn mlp_hidden(&self) -> usize {
        (self.hidden_size as f64 * self.mlp_ratio) as usize
    }

    /// Whether the label table has the extra null class used by classifier-free guidance.
    pub fn has_null_class(&self) -> bool {
        self.class_dropout_prob > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_reject() {
        let xl = DitConfig::preset("DiT-XL/2").unwrap();
        assert_eq!(
            (xl.depth, xl.hidden_size, xl.num_heads, xl.patch_size),
            (28, 1152, 16, 2)
        );
        assert_eq!(xl.num_patches(), 256);
        assert_eq!(DitConfig::preset("S/8").unwrap().num_patches(), 16);
        for name in DitConfig::preset_names() {
            DitConfig::preset(&name).unwrap().validate().unwrap();
        }
        assert!(DitConfig::preset("XL/3").is_err());
        assert!(DitConfig::preset("M/2").is_err());
        assert!(DitConfig::preset("cpu-huge").is_err());
        assert_eq!(
            Conditioning::parse("adaLN-Zero").unwrap(),
            Conditioning::AdaLnZero
        );
        assert!(Conditioning::parse("film").is_err());
        for design in Conditioning::ALL {
            let json = serde_json::to_string(&design).unwrap();
            assert_eq!(json, format!("\"{}\"", design.name()));
        }
    }
}
