//! Sequential layer-wise pruning (SparseGPT §3 and Fig. 2; the reference's
//! `llama_sequential --true-sequential`): the calibration segments flow through the model one
//! block at a time, through blocks already pruned. Inside a block the pass stops at each of
//! the four inputs of its linear layers ([`LinearInput`]): the inputs of every segment are
//! accumulated into one Gram matrix, the layers reading that input (q/k/v, o, gate/up, down)
//! are pruned, and only then does the pass continue, so each layer is calibrated on the
//! outputs of the layers pruned before it. One forward per block in total.
//!
//! Without calibration (magnitude pruning) every layer is pruned in place.

use crate::calibration::Calibration;
use crate::hessian::Gram;
use crate::matrix::Matrix;
use crate::pattern::Sparsity;
use crate::pruner::{InputStats, PruneNotes, Pruner};
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use ferrite_llm::kv_cache::{FullCache, KvCache};
use ferrite_llm::linear::Linear;
use ferrite_llm::llama::{Block, BlockPass, LinearInput};
use ferrite_llm::Llama;
use std::time::Instant;

/// The seven linear layers of a llama block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerName {
    /// `self_attn.q_proj`.
    QProj,
    /// `self_attn.k_proj`.
    KProj,
    /// `self_attn.v_proj`.
    VProj,
    /// `self_attn.o_proj`.
    OProj,
    /// `mlp.gate_proj`.
    GateProj,
    /// `mlp.up_proj`.
    UpProj,
    /// `mlp.down_proj`.
    DownProj,
}

impl LayerName {
    /// All seven, in forward order.
    pub const ALL: [Self; 7] = [
        Self::QProj,
        Self::KProj,
        Self::VProj,
        Self::OProj,
        Self::GateProj,
        Self::UpProj,
        Self::DownProj,
    ];

    /// transformers' name inside a block (`self_attn.q_proj`).
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::QProj => "self_attn.q_proj",
            Self::KProj => "self_attn.k_proj",
            Self::VProj => "self_attn.v_proj",
            Self::OProj => "self_attn.o_proj",
            Self::GateProj => "mlp.gate_proj",
            Self::UpProj => "mlp.up_proj",
            Self::DownProj => "mlp.down_proj",
        }
    }

    /// The layers that read `input`.
    pub fn reading(input: LinearInput) -> &'static [Self] {
        match input {
            LinearInput::Attention => &[Self::QProj, Self::KProj, Self::VProj],
            LinearInput::AttentionOutput => &[Self::OProj],
            LinearInput::Mlp => &[Self::GateProj, Self::UpProj],
            LinearInput::MlpHidden => &[Self::DownProj],
        }
    }

    /// The layer in `block`.
    pub fn linear(self, block: &Block) -> &Linear {
        match self {
            Self::QProj => &block.attn.q,
            Self::KProj => &block.attn.k,
            Self::VProj => &block.attn.v,
            Self::OProj => &block.attn.o,
            Self::GateProj => &block.mlp.gate,
            Self::UpProj => &block.mlp.up,
            Self::DownProj => &block.mlp.down,
        }
    }

    /// The layer in `block`, mutably.
    pub fn linear_mut(self, block: &mut Block) -> &mut Linear {
        match self {
            Self::QProj => &mut block.attn.q,
            Self::KProj => &mut block.attn.k,
            Self::VProj => &mut block.attn.v,
            Self::OProj => &mut block.attn.o,
            Self::GateProj => &mut block.mlp.gate,
            Self::UpProj => &mut block.mlp.up,
            Self::DownProj => &mut block.mlp.down,
        }
    }
}

/// What happened to one linear layer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerReport {
    /// Block index.
    pub block: usize,
    /// Which layer.
    pub layer: LayerName,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Exact zeros after pruning.
    pub zeros: usize,
    /// `zeros / (rows · cols)`.
    pub sparsity: f64,
    /// `‖WX − ŴX‖²_F` over the calibration tokens (calibrated runs only).
    pub error: Option<f64>,
    /// `‖WX − ŴX‖² / ‖WX‖²`.
    pub relative_error: Option<f64>,
    /// Method-specific notes (SparseGPT's OBS loss and damping).
    #[serde(flatten)]
    pub notes: PruneNotes,
    /// Seconds spent pruning this layer (mask, updates, error).
    pub seconds: f64,
}

/// The calibration a run used.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CalibrationSummary {
    /// Segments.
    pub segments: usize,
    /// Tokens per segment.
    pub segment_len: usize,
    /// Sampling seed.
    pub seed: u64,
}

/// The outcome of pruning a model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PruneReport {
    /// Method name.
    pub method: String,
    /// Pattern (`50%`, `2:4`).
    pub sparsity: String,
    /// Calibration, when used.
    pub calibration: Option<CalibrationSummary>,
    /// Every linear layer, in order.
    pub layers: Vec<LayerReport>,
    /// Seconds per block (forward, statistics, pruning).
    pub block_seconds: Vec<f64>,
    /// Total seconds.
    pub seconds: f64,
    /// Where the time went.
    pub phases: PhaseSeconds,
    /// Zeros over all pruned layers / their weights.
    pub total_sparsity: f64,
}

/// Seconds spent in each phase of a run, summed over blocks.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PhaseSeconds {
    /// Running the calibration segments through the blocks (embedding included).
    pub forward: f64,
    /// Accumulating the Gram matrices `Σ x xᵀ`.
    pub statistics: f64,
    /// Pruning: Hessian factor, mask, updates (everything in the [`Pruner`]).
    pub prune: f64,
    /// Computing the per-layer reconstruction errors of the report.
    pub error: f64,
}

/// Progress of a run, reported after each unit of work.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Block being pruned.
    pub block: usize,
    /// Blocks in the model.
    pub n_blocks: usize,
    /// Units done in this block.
    pub done: usize,
    /// Units in each block.
    pub per_block: usize,
    /// What is being done (`q/k/v inputs`, `pruning gate_proj`).
    pub what: String,
}

fn input_label(input: LinearInput) -> &'static str {
    match input {
        LinearInput::Attention => "q/k/v",
        LinearInput::AttentionOutput => "o",
        LinearInput::Mlp => "gate/up",
        LinearInput::MlpHidden => "down",
    }
}

/// Prunes every linear layer of every block of `model` (embedding, final norm and output head
/// are kept) to `sparsity` with `pruner`, sequentially on `calibration` when given.
pub fn prune_model(
    model: &mut Llama,
    pruner: &dyn Pruner,
    sparsity: Sparsity,
    calibration: Option<&Calibration>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<PruneReport> {
    let t0 = Instant::now();
    if pruner.needs_calibration() && calibration.is_none() {
        bail!("{} needs calibration data", pruner.name());
    }
    let n_blocks = model.blocks.len();
    let mut layers = Vec::new();
    let mut block_seconds = Vec::new();
    let mut phases = PhaseSeconds::default();
    match calibration {
        None => {
            for l in 0..n_blocks {
                let tb = Instant::now();
                for (i, &name) in LayerName::ALL.iter().enumerate() {
                    progress(&Progress {
                        block: l,
                        n_blocks,
                        done: i,
                        per_block: LayerName::ALL.len(),
                        what: format!("pruning {}", name.hf_name()),
                    });
                    layers.push(prune_layer(
                        model,
                        l,
                        name,
                        pruner,
                        sparsity,
                        None,
                        &mut phases,
                    )?);
                }
                block_seconds.push(tb.elapsed().as_secs_f64());
            }
        }
        Some(calib) => {
            check_calibration(model, calib)?;
            let device = model.device().clone();
            let positions: Vec<usize> = (0..calib.segment_len).collect();
            let angles = model.rope.angles(&positions)?;
            let tf = Instant::now();
            let mut hidden = calib
                .segments
                .iter()
                .map(|s| model.embedding.forward(s, &device))
                .collect::<Result<Vec<Tensor>>>()?;
            phases.forward += tf.elapsed().as_secs_f64();
            let n_seg = hidden.len();
            let per_block = LinearInput::ALL.len() * n_seg;
            for l in 0..n_blocks {
                let tb = Instant::now();
                let mut passes: Vec<BlockPass> = hidden
                    .iter()
                    .map(|x| model.blocks[l].begin_pass(x))
                    .collect::<Result<_>>()?;
                for (stage, input) in LinearInput::ALL.into_iter().enumerate() {
                    let ts = Instant::now();
                    let dim = passes[0].input().dim(1)?;
                    let mut gram = Gram::new(dim);
                    for p in &passes {
                        gram.add_tensor(p.input()).with_context(|| {
                            format!("block {l}, input of {}", input_label(input))
                        })?;
                    }
                    let stats = InputStats::new(gram);
                    phases.statistics += ts.elapsed().as_secs_f64();
                    for &name in LayerName::reading(input) {
                        progress(&Progress {
                            block: l,
                            n_blocks,
                            done: stage * n_seg,
                            per_block,
                            what: format!("pruning {}", name.hf_name()),
                        });
                        layers.push(prune_layer(
                            model,
                            l,
                            name,
                            pruner,
                            sparsity,
                            Some(&stats),
                            &mut phases,
                        )?);
                    }
                    let tf = Instant::now();
                    let block = &model.blocks[l];
                    let mut advanced = Vec::with_capacity(n_seg);
                    for (s, p) in passes.into_iter().enumerate() {
                        let mut cache = FullCache::new(&model.kv_geometry());
                        cache.begin_step(calib.segment_len)?;
                        advanced.push(block.advance(p, l, &angles, &mut cache)?);
                        progress(&Progress {
                            block: l,
                            n_blocks,
                            done: stage * n_seg + s + 1,
                            per_block,
                            what: format!("{} inputs", input_label(input)),
                        });
                    }
                    passes = advanced;
                    phases.forward += tf.elapsed().as_secs_f64();
                }
                hidden = passes
                    .into_iter()
                    .map(BlockPass::into_output)
                    .collect::<Result<_>>()?;
                block_seconds.push(tb.elapsed().as_secs_f64());
            }
        }
    }
    let (zeros, total) = layers
        .iter()
        .fold((0, 0), |(z, t), r| (z + r.zeros, t + r.rows * r.cols));
    Ok(PruneReport {
        method: pruner.name().to_string(),
        sparsity: sparsity.label(),
        calibration: calibration.map(|c| CalibrationSummary {
            segments: c.segments.len(),
            segment_len: c.segment_len,
            seed: c.seed,
        }),
        layers,
        block_seconds,
        seconds: t0.elapsed().as_secs_f64(),
        phases,
        total_sparsity: zeros as f64 / total.max(1) as f64,
    })
}

fn check_calibration(model: &Llama, calib: &Calibration) -> Result<()> {
    if calib.segments.is_empty() {
        bail!("calibration has no segments");
    }
    if calib.segment_len > model.config.context_length {
        bail!(
            "calibration segments of {} tokens exceed the model's context of {}",
            calib.segment_len,
            model.config.context_length
        );
    }
    let vocab = model.config.vocab_size;
    if let Some(&bad) = calib
        .segments
        .iter()
        .flatten()
        .find(|&&t| t as usize >= vocab)
    {
        bail!("calibration token id {bad} is outside the vocabulary of {vocab}");
    }
    if calib.segments.iter().any(|s| s.len() != calib.segment_len) {
        bail!("calibration segments differ in length");
    }
    Ok(())
}

/// Prunes one layer of block `l` and writes it back as a dense f32 weight.
fn prune_layer(
    model: &mut Llama,
    l: usize,
    name: LayerName,
    pruner: &dyn Pruner,
    sparsity: Sparsity,
    stats: Option<&InputStats>,
    phases: &mut PhaseSeconds,
) -> Result<LayerReport> {
    let t0 = Instant::now();
    let what = || format!("block {l} {}", name.hf_name());
    let dense = Matrix::from_tensor(&name.linear(&model.blocks[l]).to_dense()?)?;
    dense.check_finite(&what())?;
    let mut w = dense.clone();
    let notes = pruner.prune(&mut w, stats, sparsity).with_context(what)?;
    w.check_finite(&format!("pruned {}", what()))?;
    phases.prune += t0.elapsed().as_secs_f64();
    let te = Instant::now();
    let (error, relative_error) = match stats {
        Some(s) => {
            let delta: Vec<f32> = dense.data.iter().zip(&w.data).map(|(a, b)| a - b).collect();
            let error = s.gram.output_energy(&delta, w.rows);
            let energy = s.gram.output_energy(&dense.data, w.rows);
            (Some(error), Some(error / energy.max(f64::MIN_POSITIVE)))
        }
        None => (None, None),
    };
    phases.error += te.elapsed().as_secs_f64();
    let zeros = w.zeros();
    let report = LayerReport {
        block: l,
        layer: name,
        rows: w.rows,
        cols: w.cols,
        zeros,
        sparsity: zeros as f64 / (w.rows * w.cols) as f64,
        error,
        relative_error,
        notes,
        seconds: t0.elapsed().as_secs_f64(),
    };
    *name.linear_mut(&mut model.blocks[l]) = Linear::dense(w.to_tensor(model.device())?)?;
    Ok(report)
}
