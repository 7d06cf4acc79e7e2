//! Patchify and unpatchify (paper §3.2, Figure 4): the `I x I x C` input becomes `T = (I/p)^2`
//! tokens by a linear embedding of each `p x p` patch, i.e. a `p x p` convolution with stride `p`
//! (reference: timm `PatchEmbed`, a `Conv2d`). We compute it as the equivalent reshape plus matmul,
//! keeping the convolution's weight layout `[D, C, p, p]` so the reference's weights load as they
//! are. Unpatchify is the reference's `einsum('nhwpqc->nchpwq')`.

use crate::init::xavier_uniform;
use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// Patch embedding: weight `[D, C, p, p]` (Xavier on the flattened `[D, C*p*p]`), bias `[D]`.
#[derive(Debug, Clone)]
pub struct PatchEmbed {
    weight: Tensor,
    bias: Tensor,
    patch: usize,
}

impl PatchEmbed {
    /// Reads `proj.weight` and `proj.bias` under `vb`.
    pub fn new(vb: &VarBuilder, in_channels: usize, hidden: usize, patch: usize) -> Result<Self> {
        let fan_in = in_channels * patch * patch;
        let vb = vb.pp("proj");
        let weight = vb.get_with_hints(
            (hidden, in_channels, patch, patch),
            "weight",
            xavier_uniform(fan_in, hidden),
        )?;
        let bias = vb.get_with_hints(hidden, "bias", Init::Const(0.0))?;
        Ok(Self {
            weight,
            bias,
            patch,
        })
    }

    /// `[B, C, H, W]` to tokens `[B, T, D]`, row-major over the patch grid.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let patches = patchify(x, self.patch)?;
        let (b, t, width) = patches.dims3()?;
        let hidden = self.weight.dim(0)?;
        let w = self.weight.reshape((hidden, width))?.t()?;
        patches
            .reshape((b * t, width))?
            .matmul(&w)?
            .broadcast_add(&self.bias)?
            .reshape((b, t, hidden))
    }
}

/// `[B, C, H, W]` to `[B, (H/p)(W/p), C*p*p]`, each row one patch flattened as `(c, i, j)` (the
/// order a convolution kernel sees it).
pub fn patchify(x: &Tensor, p: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if h % p != 0 || w % p != 0 {
        candle_core::bail!("input {h}x{w} is not a multiple of the patch size {p}")
    }
    let (gh, gw) = (h / p, w / p);
    x.reshape((b, c, gh, p, gw, p))?
        .permute((0, 2, 4, 1, 3, 5))?
        .reshape((b, gh * gw, c * p * p))
}

/// `[B, T, p*p*C]` (each token laid out `(i, j, c)` as the reference's final linear layer) to
/// `[B, C, H, W]` on a square grid.
pub fn unpatchify(x: &Tensor, p: usize, channels: usize) -> Result<Tensor> {
    let (b, t, width) = x.dims3()?;
    let g = (t as f64).sqrt().round() as usize;
    if g * g != t || width != p * p * channels {
        candle_core::bail!("cannot unpatchify {t} tokens of width {width} into a square grid of {p}x{p}x{channels} patches")
    }
    x.reshape((b, g, g, p, p, channels))?
        .permute((0, 5, 1, 3, 2, 4))?
        .reshape((b, channels, g * p, g * p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    #[test]
    fn unpatchify_inverts_patchify_with_channel_last_tokens() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 2. * 3. * 8. * 8., &dev)
            .unwrap()
            .reshape((2, 3, 8, 8))
            .unwrap();
        let p = 4;
        let tokens = patchify(&x, p).unwrap(); // (c, i, j) per token
        assert_eq!(tokens.dims(), &[2, 4, 48]);
        // token 1 = patch (row 0, column 1): its first entry is x[b, 0, 0, 4].
        let v: f32 = tokens.i((1, 1, 0)).unwrap().to_scalar().unwrap();
        assert_eq!(v, x.i((1, 0, 0, 4)).unwrap().to_scalar::<f32>().unwrap());
        // reorder to (i, j, c) as the final layer lays tokens out, then unpatchify.
        let ijc = tokens
            .reshape((2, 4, 3, p, p))
            .unwrap()
            .permute((0, 1, 3, 4, 2))
            .unwrap()
            .reshape((2, 4, 48))
            .unwrap();
        let back = unpatchify(&ijc, p, 3).unwrap();
        let diff: f32 = (back - &x)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(diff, 0.0);
        assert!(patchify(&x, 3).is_err());
        assert!(unpatchify(&ijc, p, 2).is_err());
    }

    #[test]
    fn patch_embed_equals_convolution() {
        let dev = Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let vb = crate::init::seeded_var_builder(&vm, 1, candle_core::DType::F32, &dev);
        let pe = PatchEmbed::new(&vb, 2, 5, 2).unwrap();
        let x = Tensor::randn(0f32, 1., (1, 2, 6, 6), &dev).unwrap();
        let ours = pe.forward(&x).unwrap();
        let conv = x
            .conv2d(&pe.weight, 0, 2, 1, 1)
            .unwrap()
            .broadcast_add(&pe.bias.reshape((1, 5, 1, 1)).unwrap())
            .unwrap()
            .flatten_from(2)
            .unwrap()
            .transpose(1, 2)
            .unwrap();
        let diff: f32 = (ours - conv)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 1e-5, "{diff}");
    }
}
