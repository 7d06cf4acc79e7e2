//! The whole adaLN-Zero DiT for one worker's share of a batch: embeddings, blocks, final layer
//! and the ε-prediction loss (DDPM eq. 14, `L_simple = mean ‖ε − ε_θ‖²`), forward then backward.

use super::block::{
    block_backward, block_forward, BlockActivations, BlockParams, BlockScratch, Dims,
};
use super::layout::{Chunk, LinearParams, ParamLayout};
use super::ops::*;
use crate::config::{DitConfig, FREQUENCY_EMBEDDING_SIZE};
use anyhow::Result;
use std::ops::Range;

/// Every weight of the model as views into the flat layout.
#[derive(Debug, Clone)]
pub(crate) struct ModelParams {
    patch: LinearParams,
    t_fc1: LinearParams,
    t_fc2: LinearParams,
    label_table: Range<usize>,
    blocks: Vec<BlockParams>,
    final_modulation: LinearParams,
    final_linear: LinearParams,
}

/// Static sizes of the model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub channels: usize,
    pub size: usize,
    pub patch: usize,
    pub grid: usize,
    pub d: usize,
    pub mlp: usize,
    pub heads: usize,
    pub classes_with_null: usize,
}

impl Geometry {
    pub fn of(cfg: &DitConfig) -> Self {
        Self {
            channels: cfg.in_channels,
            size: cfg.input_size,
            patch: cfg.patch_size,
            grid: cfg.grid_size(),
            d: cfg.hidden_size,
            mlp: cfg.mlp_hidden(),
            heads: cfg.num_heads,
            classes_with_null: cfg.num_classes + usize::from(cfg.has_null_class()),
        }
    }

    pub fn tokens(&self) -> usize {
        self.grid * self.grid
    }

    fn patch_width(&self) -> usize {
        self.channels * self.patch * self.patch
    }

    pub fn pixels(&self) -> usize {
        self.channels * self.size * self.size
    }

    fn dims(&self, samples: usize) -> Dims {
        Dims {
            samples,
            tokens: self.tokens(),
            d: self.d,
            mlp: self.mlp,
            heads: self.heads,
        }
    }

    /// Pixel index (within a sample) of token `tok`, feature `f` of a patch laid out
    /// `(c, i, j)` (patchify: the conv weight's order) or `(i, j, c)` (the final layer's).
    fn pixel(&self, tok: usize, f: usize, channel_last: bool) -> usize {
        let p = self.patch;
        let (c, i, j) = if channel_last {
            (
                f % self.channels,
                f / self.channels / p,
                f / self.channels % p,
            )
        } else {
            (f / (p * p), f / p % p, f % p)
        };
        let (gi, gj) = (tok / self.grid, tok % self.grid);
        (c * self.size + gi * p + i) * self.size + gj * p + j
    }
}

impl ModelParams {
    pub fn find(layout: &ParamLayout, g: &Geometry, depth: usize) -> Result<Self> {
        let d = g.d;
        Ok(Self {
            patch: LinearParams::find(layout, "x_embedder.proj", d, g.patch_width())?,
            t_fc1: LinearParams::find(layout, "t_embedder.mlp.0", d, FREQUENCY_EMBEDDING_SIZE)?,
            t_fc2: LinearParams::find(layout, "t_embedder.mlp.2", d, d)?,
            label_table: layout
                .range("y_embedder.embedding_table.weight", g.classes_with_null * d)?,
            blocks: (0..depth)
                .map(|i| BlockParams::find(layout, i, d, g.mlp))
                .collect::<Result<_>>()?,
            final_modulation: LinearParams::find(
                layout,
                "final_layer.adaLN_modulation.1",
                2 * d,
                d,
            )?,
            final_linear: LinearParams::find(layout, "final_layer.linear", g.patch_width(), d)?,
        })
    }
}

/// The model's inputs for one worker's samples.
pub(crate) struct Inputs<'a> {
    /// `x_t`, `[b, C, H, W]`.
    pub x_t: &'a [f32],
    /// Timestep features `[b, 256]`.
    pub freq: &'a [f32],
    /// Labels, the null class where dropped.
    pub labels: &'a [u32],
    /// Fixed sin-cos position embedding `[T, D]`.
    pub pos: &'a [f32],
}

/// What the loss compares the output with.
pub(crate) struct Target<'a> {
    /// The regression target ε, `[b, C, H, W]`.
    pub eps: &'a [f32],
    /// Elements the loss is averaged over (the whole batch's pixels).
    pub loss_elements: usize,
}

/// Buffers of one worker, sized for `samples`, reused every step.
pub(crate) struct Worker {
    pub samples: usize,
    dims: Dims,
    patches: Vec<f32>,
    x: Vec<f32>,
    t_hidden: Vec<f32>,
    t_act: Vec<f32>,
    c: Vec<f32>,
    silu_c: Vec<f32>,
    blocks: Vec<BlockActivations>,
    final_modulation: Vec<f32>,
    final_xhat: Vec<f32>,
    final_rstd: Vec<f32>,
    final_h: Vec<f32>,
    out: Vec<f32>,
    scratch: BlockScratch,
    d_out: Vec<f32>,
    d_final_h: Vec<f32>,
    d_final_modulation: Vec<f32>,
    dx: Vec<f32>,
    d_silu_c: Vec<f32>,
    d_c: Vec<f32>,
    d_t_act: Vec<f32>,
    d_t_hidden: Vec<f32>,
    /// This worker's gradient (the flat layout).
    pub grads: Vec<f32>,
    /// Σ (ε_θ − ε)² over this worker's pixels.
    pub sse: f64,
}

impl Worker {
    /// Buffers for `samples`; `params` gradient slots (0 for a forward-only worker).
    pub fn new(g: &Geometry, depth: usize, samples: usize, params: usize) -> Self {
        let dims = g.dims(samples);
        let (r, d, b) = (samples * g.tokens(), g.d, samples);
        let out = r * g.patch_width();
        Self {
            samples,
            dims,
            patches: vec![0.0; out],
            x: vec![0.0; r * d],
            t_hidden: vec![0.0; b * d],
            t_act: vec![0.0; b * d],
            c: vec![0.0; b * d],
            silu_c: vec![0.0; b * d],
            blocks: (0..depth).map(|_| BlockActivations::new(dims)).collect(),
            final_modulation: vec![0.0; b * 2 * d],
            final_xhat: vec![0.0; r * d],
            final_rstd: vec![0.0; r],
            final_h: vec![0.0; r * d],
            out: vec![0.0; out],
            scratch: BlockScratch::new(dims),
            d_out: vec![0.0; out],
            d_final_h: vec![0.0; r * d],
            d_final_modulation: vec![0.0; b * 2 * d],
            dx: vec![0.0; r * d],
            d_silu_c: vec![0.0; b * d],
            d_c: vec![0.0; b * d],
            d_t_act: vec![0.0; b * d],
            d_t_hidden: vec![0.0; b * d],
            grads: vec![0.0; params],
            sse: 0.0,
        }
    }

    /// Forward and backward of `inp`: sets `sse` and `grads` (∂ of the whole batch's mean loss;
    /// every weight's gradient is written by its layer's backward, the label table's here).
    pub fn run(&mut self, p: &ModelParams, g: &Geometry, w: &[f32], inp: &Inputs, y: &Target) {
        self.forward(p, g, w, inp);
        self.loss_gradient(g, y);
        self.grads[p.label_table.clone()].fill(0.0);
        self.backward(p, g, w, inp);
    }

    /// The forward pass alone: writes `ε_θ(x_t, t, y)` (unpatchified, `[b, C, H, W]`) to `eps`.
    pub fn predict(
        &mut self,
        p: &ModelParams,
        g: &Geometry,
        w: &[f32],
        inp: &Inputs,
        eps: &mut [f32],
    ) {
        self.forward(p, g, w, inp);
        let (t, pw, px) = (g.tokens(), g.patch_width(), g.pixels());
        for (r, out) in self.out.chunks_exact(pw).enumerate() {
            let image = &mut eps[r / t * px..][..px];
            for (f, &o) in out.iter().enumerate() {
                image[g.pixel(r % t, f, true)] = o;
            }
        }
    }

    fn forward(&mut self, p: &ModelParams, g: &Geometry, w: &[f32], inp: &Inputs) {
        let (t, d, pw, px) = (g.tokens(), g.d, g.patch_width(), g.pixels());
        for (r, patch) in self.patches.chunks_exact_mut(pw).enumerate() {
            let image = &inp.x_t[r / t * px..][..px];
            for (f, v) in patch.iter_mut().enumerate() {
                *v = image[g.pixel(r % t, f, false)];
            }
        }
        linear_forward(&p.patch, w, &self.patches, &mut self.x);
        for (row, pos) in self
            .x
            .chunks_exact_mut(d)
            .zip(inp.pos.chunks_exact(d).cycle())
        {
            for (v, e) in row.iter_mut().zip(pos) {
                *v += e;
            }
        }
        linear_forward(&p.t_fc1, w, inp.freq, &mut self.t_hidden);
        silu_forward(&self.t_hidden, &mut self.t_act);
        linear_forward(&p.t_fc2, w, &self.t_act, &mut self.c);
        let table = &w[p.label_table.clone()];
        for (c, &y) in self.c.chunks_exact_mut(d).zip(inp.labels) {
            for (v, e) in c.iter_mut().zip(&table[y as usize * d..][..d]) {
                *v += e;
            }
        }
        silu_forward(&self.c, &mut self.silu_c);
        for (bp, act) in p.blocks.iter().zip(&mut self.blocks) {
            block_forward(bp, w, self.dims, &self.silu_c, &mut self.x, act);
        }
        linear_forward(
            &p.final_modulation,
            w,
            &self.silu_c,
            &mut self.final_modulation,
        );
        let saved = NormSaved {
            xhat: &mut self.final_xhat,
            rstd: &mut self.final_rstd,
        };
        let chunks = (Chunk::nth(0, 2, d), Chunk::nth(1, 2, d));
        modulated_norm_forward(
            &self.x,
            &self.final_modulation,
            chunks,
            t,
            saved,
            &mut self.final_h,
        );
        linear_forward(&p.final_linear, w, &self.final_h, &mut self.out);
    }

    /// Unpatchify + `L_simple`: the squared error and `∂L/∂out = 2 (ε_θ − ε) / N`.
    fn loss_gradient(&mut self, g: &Geometry, y: &Target) {
        let (t, pw, px) = (g.tokens(), g.patch_width(), g.pixels());
        let scale = 2.0 / y.loss_elements as f32;
        self.sse = 0.0;
        let rows = self
            .out
            .chunks_exact(pw)
            .zip(self.d_out.chunks_exact_mut(pw));
        for (r, (out, d_out)) in rows.enumerate() {
            let target = &y.eps[r / t * px..][..px];
            for (f, (&o, d_o)) in out.iter().zip(d_out).enumerate() {
                let diff = o - target[g.pixel(r % t, f, true)];
                self.sse += (diff * diff) as f64;
                *d_o = scale * diff;
            }
        }
    }

    fn backward(&mut self, p: &ModelParams, g: &Geometry, w: &[f32], inp: &Inputs) {
        let (t, d) = (g.tokens(), g.d);
        let grads = &mut self.grads;
        let d_h = InputGrad::Set(&mut self.d_final_h);
        linear_backward(&p.final_linear, w, grads, &self.final_h, &self.d_out, d_h);
        self.d_final_modulation.fill(0.0);
        self.dx.fill(0.0);
        let chunks = (Chunk::nth(0, 2, d), Chunk::nth(1, 2, d));
        modulated_norm_backward(
            &self.final_xhat,
            &self.final_rstd,
            &self.d_final_h,
            &self.final_modulation,
            &mut self.d_final_modulation,
            chunks,
            t,
            &mut self.dx,
        );
        let d_silu = InputGrad::Set(&mut self.d_silu_c);
        linear_backward(
            &p.final_modulation,
            w,
            grads,
            &self.silu_c,
            &self.d_final_modulation,
            d_silu,
        );
        for (bp, act) in p.blocks.iter().zip(&self.blocks).rev() {
            block_backward(
                bp,
                w,
                grads,
                self.dims,
                &self.silu_c,
                act,
                &mut self.dx,
                &mut self.d_silu_c,
                &mut self.scratch,
            );
        }
        linear_backward(&p.patch, w, grads, &self.patches, &self.dx, InputGrad::Skip);
        silu_backward(&self.c, &self.d_silu_c, &mut self.d_c);
        let table = &mut grads[p.label_table.clone()];
        for (dc, &y) in self.d_c.chunks_exact(d).zip(inp.labels) {
            for (g, v) in table[y as usize * d..][..d].iter_mut().zip(dc) {
                *g += v;
            }
        }
        let d_act = InputGrad::Set(&mut self.d_t_act);
        linear_backward(&p.t_fc2, w, grads, &self.t_act, &self.d_c, d_act);
        silu_backward(&self.t_hidden, &self.d_t_act, &mut self.d_t_hidden);
        linear_backward(
            &p.t_fc1,
            w,
            grads,
            inp.freq,
            &self.d_t_hidden,
            InputGrad::Skip,
        );
    }
}
