//! Small shared pieces: linear layers with the reference init, LayerNorm (optionally affine),
//! adaLN's `modulate`, and the ViT MLP.

use crate::config::LAYER_NORM_EPS;
use crate::init::xavier_uniform;
use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// `nn.Linear(in_dim, out_dim)` with weight hint `init` and a zero bias.
pub fn linear_with_init(
    vb: &VarBuilder,
    in_dim: usize,
    out_dim: usize,
    init: Init,
) -> Result<Linear> {
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
    let bias = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
    Ok(Linear { weight, bias })
}

/// `y = x Wᵀ + b` over the last dimension of `x` (`[.., in] -> [.., out]`).
///
/// Unlike `candle_nn::Linear`, which broadcasts `W` to a batched matmul for 3-d inputs, this
/// flattens the leading dimensions into rows first: one GEMM forward, and in the backward pass
/// one GEMM for `∂W` instead of a per-sample `[B, in, out]` gradient summed afterwards.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let in_dim = x.dim(D::Minus1)?;
        let leading = &x.dims()[..x.rank() - 1];
        let rows = x.reshape((leading.iter().product::<usize>(), in_dim))?;
        let y = crate::fused_ops::add_bias(&rows.matmul(&self.weight.t()?)?, &self.bias)?;
        let mut out_dims = leading.to_vec();
        out_dims.push(self.weight.dim(0)?);
        y.reshape(out_dims)
    }
}

/// `nn.Linear` with the reference's basic init: Xavier-uniform weight, zero bias.
pub fn linear(vb: &VarBuilder, in_dim: usize, out_dim: usize) -> Result<Linear> {
    linear_with_init(vb, in_dim, out_dim, xavier_uniform(in_dim, out_dim))
}

/// A linear layer initialised to zero (adaLN-Zero modulation, final layer).
pub fn zero_linear(vb: &VarBuilder, in_dim: usize, out_dim: usize) -> Result<Linear> {
    linear_with_init(vb, in_dim, out_dim, Init::Const(0.0))
}

/// LayerNorm over the last dimension, `eps` = 1e-6; affine (ViT blocks) or not (adaLN blocks,
/// where the modulation supplies scale and shift). Built from differentiable ops.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    affine: Option<(Tensor, Tensor)>,
}

impl LayerNorm {
    /// Without learned scale and shift (`elementwise_affine=False`).
    pub fn plain() -> Self {
        Self { affine: None }
    }

    /// With learned `weight` (init 1) and `bias` (init 0).
    pub fn affine(vb: &VarBuilder, dim: usize) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", Init::Const(0.0))?;
        Ok(Self {
            affine: Some((weight, bias)),
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + LAYER_NORM_EPS)?.sqrt()?)?;
        match &self.affine {
            None => Ok(normed),
            Some((w, b)) => normed.broadcast_mul(w)?.broadcast_add(b),
        }
    }
}

/// adaLN: `x * (1 + scale) + shift` with per-sample `scale`, `shift` of shape `[B, D]`
/// broadcast over the tokens of `x` (`[B, T, D]`).
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&(scale.unsqueeze(1)? + 1.0)?)?
        .broadcast_add(&shift.unsqueeze(1)?)
}

/// The ViT MLP (timm `Mlp`): fc1, tanh-approximated GELU, fc2.
#[derive(Debug, Clone)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    /// `dim -> hidden -> dim`.
    pub fn new(vb: &VarBuilder, dim: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            fc1: linear(&vb.pp("fc1"), dim, hidden)?,
            fc2: linear(&vb.pp("fc2"), hidden, dim)?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2
            .forward(&crate::gelu::gelu_tanh(&self.fc1.forward(x)?)?)
    }
}
