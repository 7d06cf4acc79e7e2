//! The adaLN-Zero DiT block (paper §3.2, reference `DiTBlock`) forward with its activations
//! saved, and its backward in reverse order:
//!
//! ```text
//! (β1, γ1, α1, β2, γ2, α2) = Linear(SiLU(c))
//! x ← x + α1 · Attn(LN(x)(1 + γ1) + β1)
//! x ← x + α2 · MLP(LN(x)(1 + γ2) + β2)        MLP = fc2 ∘ GELU_tanh ∘ fc1
//! ```

use super::attention::{attention_backward, attention_forward, Heads};
use super::layout::{Chunk, LinearParams, ParamLayout};
use super::ops::*;
use anyhow::Result;

/// The five linear layers of one block.
#[derive(Debug, Clone)]
pub(crate) struct BlockParams {
    qkv: LinearParams,
    proj: LinearParams,
    fc1: LinearParams,
    fc2: LinearParams,
    modulation: LinearParams,
}

impl BlockParams {
    /// `blocks.{i}.*` of the reference `state_dict`.
    pub fn find(layout: &ParamLayout, i: usize, d: usize, mlp: usize) -> Result<Self> {
        let p = |name: &str, out, inp| {
            LinearParams::find(layout, &format!("blocks.{i}.{name}"), out, inp)
        };
        Ok(Self {
            qkv: p("attn.qkv", 3 * d, d)?,
            proj: p("attn.proj", d, d)?,
            fc1: p("mlp.fc1", mlp, d)?,
            fc2: p("mlp.fc2", d, mlp)?,
            modulation: p("adaLN_modulation.1", 6 * d, d)?,
        })
    }
}

/// What the backward of one block reads, saved by its forward (`R` rows of `D`, `M` MLP units).
pub(crate) struct BlockActivations {
    modulation: Vec<f32>, // [B, 6D]
    xhat1: Vec<f32>,
    rstd1: Vec<f32>,
    h1: Vec<f32>,  // modulated LN1, [R, D]
    qkv: Vec<f32>, // [R, 3D]
    probs: Vec<f32>,
    attn: Vec<f32>, // attention output before proj, [R, D]
    a: Vec<f32>,    // proj output, [R, D]
    xhat2: Vec<f32>,
    rstd2: Vec<f32>,
    h2: Vec<f32>,     // modulated LN2, [R, D]
    f1: Vec<f32>,     // fc1 output, [R, M]
    tanh_u: Vec<f32>, // GELU's tanh, [R, M]
    g: Vec<f32>,      // GELU output, [R, M]
    m: Vec<f32>,      // fc2 output, [R, D]
}

/// Scratch buffers of the backward pass, shared by all blocks of a worker.
pub(crate) struct BlockScratch {
    d_modulation: Vec<f32>,
    d_branch: Vec<f32>, // [R, D]
    d_hidden: Vec<f32>, // [R, M]
    d_norm: Vec<f32>,   // [R, D]
    d_attn: Vec<f32>,   // [R, D]
    d_qkv: Vec<f32>,    // [R, 3D]
}

/// Sizes of one worker's share of a batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub samples: usize,
    pub tokens: usize,
    pub d: usize,
    pub mlp: usize,
    pub heads: usize,
}

impl Dims {
    fn rows(&self) -> usize {
        self.samples * self.tokens
    }

    fn attention(&self) -> Heads {
        Heads {
            tokens: self.tokens,
            heads: self.heads,
            head_dim: self.d / self.heads,
        }
    }
}

impl BlockActivations {
    pub fn new(s: Dims) -> Self {
        let (r, d, m) = (s.rows(), s.d, s.mlp);
        Self {
            modulation: vec![0.0; s.samples * 6 * d],
            xhat1: vec![0.0; r * d],
            rstd1: vec![0.0; r],
            h1: vec![0.0; r * d],
            qkv: vec![0.0; r * 3 * d],
            probs: vec![0.0; s.samples * s.heads * s.tokens * s.tokens],
            attn: vec![0.0; r * d],
            a: vec![0.0; r * d],
            xhat2: vec![0.0; r * d],
            rstd2: vec![0.0; r],
            h2: vec![0.0; r * d],
            f1: vec![0.0; r * m],
            tanh_u: vec![0.0; r * m],
            g: vec![0.0; r * m],
            m: vec![0.0; r * d],
        }
    }
}

impl BlockScratch {
    pub fn new(s: Dims) -> Self {
        let (r, d) = (s.rows(), s.d);
        Self {
            d_modulation: vec![0.0; s.samples * 6 * d],
            d_branch: vec![0.0; r * d],
            d_hidden: vec![0.0; r * s.mlp],
            d_norm: vec![0.0; r * d],
            d_attn: vec![0.0; r * d],
            d_qkv: vec![0.0; r * 3 * d],
        }
    }
}

fn chunk(i: usize, d: usize) -> Chunk {
    Chunk::nth(i, 6, d)
}

/// `x` (`[R, D]`) through the block, in place, saving into `act`; `silu_c` is `SiLU(c)`, `[B, D]`.
pub(crate) fn block_forward(
    p: &BlockParams,
    w: &[f32],
    s: Dims,
    silu_c: &[f32],
    x: &mut [f32],
    act: &mut BlockActivations,
) {
    let (t, d) = (s.tokens, s.d);
    linear_forward(&p.modulation, w, silu_c, &mut act.modulation);
    let m = &act.modulation;
    let norm1 = NormSaved {
        xhat: &mut act.xhat1,
        rstd: &mut act.rstd1,
    };
    modulated_norm_forward(x, m, (chunk(0, d), chunk(1, d)), t, norm1, &mut act.h1);
    linear_forward(&p.qkv, w, &act.h1, &mut act.qkv);
    attention_forward(s.attention(), &act.qkv, &mut act.probs, &mut act.attn);
    linear_forward(&p.proj, w, &act.attn, &mut act.a);
    gated_residual_forward(x, &act.a, m, chunk(2, d), t);
    let norm2 = NormSaved {
        xhat: &mut act.xhat2,
        rstd: &mut act.rstd2,
    };
    modulated_norm_forward(x, m, (chunk(3, d), chunk(4, d)), t, norm2, &mut act.h2);
    linear_forward(&p.fc1, w, &act.h2, &mut act.f1);
    gelu_forward(&act.f1, &mut act.tanh_u, &mut act.g);
    linear_forward(&p.fc2, w, &act.g, &mut act.m);
    gated_residual_forward(x, &act.m, m, chunk(5, d), t);
}

/// Backward of [`block_forward`]: `dx` holds `∂L/∂x_out` and becomes `∂L/∂x_in`; weight
/// gradients are added to `grads`, `∂L/∂SiLU(c)` to `d_silu_c`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn block_backward(
    p: &BlockParams,
    w: &[f32],
    grads: &mut [f32],
    s: Dims,
    silu_c: &[f32],
    act: &BlockActivations,
    dx: &mut [f32],
    d_silu_c: &mut [f32],
    sc: &mut BlockScratch,
) {
    let (t, d) = (s.tokens, s.d);
    let m = &act.modulation;
    sc.d_modulation.fill(0.0);
    let dm = &mut sc.d_modulation;
    // x_out = x_mid + α2 · fc2(GELU(fc1(h2)))
    gated_residual_backward(dx, &act.m, m, dm, chunk(5, d), t, &mut sc.d_branch);
    linear_backward(
        &p.fc2,
        w,
        grads,
        &act.g,
        &sc.d_branch,
        InputGrad::Set(&mut sc.d_hidden),
    );
    gelu_backward(&act.f1, &act.tanh_u, &mut sc.d_hidden);
    linear_backward(
        &p.fc1,
        w,
        grads,
        &act.h2,
        &sc.d_hidden,
        InputGrad::Set(&mut sc.d_norm),
    );
    let chunks2 = (chunk(3, d), chunk(4, d));
    modulated_norm_backward(&act.xhat2, &act.rstd2, &sc.d_norm, m, dm, chunks2, t, dx);
    // x_mid = x_in + α1 · proj(Attn(h1))
    gated_residual_backward(dx, &act.a, m, dm, chunk(2, d), t, &mut sc.d_branch);
    linear_backward(
        &p.proj,
        w,
        grads,
        &act.attn,
        &sc.d_branch,
        InputGrad::Set(&mut sc.d_attn),
    );
    attention_backward(
        s.attention(),
        &act.qkv,
        &act.probs,
        &sc.d_attn,
        &mut sc.d_qkv,
    );
    linear_backward(
        &p.qkv,
        w,
        grads,
        &act.h1,
        &sc.d_qkv,
        InputGrad::Set(&mut sc.d_norm),
    );
    let chunks1 = (chunk(0, d), chunk(1, d));
    modulated_norm_backward(&act.xhat1, &act.rstd1, &sc.d_norm, m, dm, chunks1, t, dx);
    linear_backward(
        &p.modulation,
        w,
        grads,
        silu_c,
        dm,
        InputGrad::Add(d_silu_c),
    );
}
