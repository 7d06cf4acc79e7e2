//! The compressed KV-cache policy behind the [`KvCache`] seam, and its spec strings.
//!
//! GEAR's streaming buffer (Kang et al. 2024, §4 "streaming strategy"; KIVI's residual of `R`
//! full-precision tokens, Liu et al. 2024, Alg. 1): the newest tokens of each layer stay exact in
//! a buffer of `n_b` tokens; when a token arrives and the buffer is full, its `n_b` tokens are
//! compressed together — keys after RoPE, the KV heads side by side — into one
//! [`CompressedBlock`] that is kept until the cache is reset (or evicted by a window policy
//! through [`CompressedStore::evict_oldest_block`]).
//!
//! Attention: a decode step (one new token) attends straight from the packed store
//! ([`crate::attention`], through [`KvCache::attend`]); nothing the size of the history is
//! dequantised. A multi-token step dequantises the layer's blocks into one f32 scratch K/V shared
//! by all layers and reused across steps, and [`KvCache::update`] returns views of it, valid until
//! the next `update` on the same cache (the model consumes them within the layer). The scratch is
//! transient working memory — one layer's K and V, [`GearCache::scratch_bytes`] — reported apart
//! from the stored bytes. `FERRITE_GEAR_SCRATCH=1` sends decode steps through the scratch as
//! well (the earlier path, kept for A/B runs).
//!
//! Spec strings (`--kv`): `quant:B`, `kivi:B`, `gear:B`, each optionally followed by
//! `,key=value` overrides, or only `key=value` pairs: `bits`, `group` (0 = whole block: KCVT),
//! `outlier`, `tails` (2: both tails per stripe, 1: the widest), `rank`, `prefill_rank`, `loops`,
//! `buffer`, `exact` (`f32` or `f16` buffer), `seed`. The three names are presets of the same
//! policy:
//! - `quant:B` — KCVT backbone (keys per channel over the block, values per token over all heads);
//! - `kivi:B`  — KIVI backbone, groups of 64;
//! - `gear:B`  — KCVT for B ≥ 4, KIVI groups of 64 below, + outliers s = 2 % + rank 2 (decode) /
//!   4 (prefill), 3 power-iteration loops.
//!
//! All presets buffer `n_b = 64` tokens.

use crate::gear::{CompressedMatrix, GearConfig};
use crate::kivi::Backbone;
use crate::low_rank::LowRank;
use crate::outliers::Tails;
use crate::quantize::Head;
use anyhow::{anyhow, bail, Result};
use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Tensor};
use ferrite_llm::kv_cache::{KvCache, KvGeometry};
use ferrite_llm::rope::RopeAngles;
use half::f16;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::VecDeque;
use std::sync::Mutex;

/// A parsed compressed-cache spec.
#[derive(Debug, Clone, PartialEq)]
pub struct GearSpec {
    /// Preset name (`quant`, `kivi`, `gear`).
    pub name: String,
    /// Components of each block.
    pub config: GearConfig,
    /// Streaming buffer `n_b`: tokens kept exact and compressed together.
    pub buffer: usize,
    /// Seed of the power iteration's random start.
    pub seed: u64,
}

/// Presets accepted as spec names.
pub const PRESETS: [&str; 3] = ["quant", "kivi", "gear"];

impl GearSpec {
    /// The preset `name` at `bits` bits.
    pub fn preset(name: &str, bits: u8) -> Result<Self> {
        let kivi_group = 64;
        let (backbone, outlier, rank, prefill_rank) = match name {
            "quant" => (Backbone::kcvt(bits)?, 0.0, 0, 0),
            "kivi" => (Backbone::kivi(bits, kivi_group)?, 0.0, 0, 0),
            "gear" if bits >= 4 => (Backbone::kcvt(bits)?, 0.02, 2, 4),
            "gear" => (Backbone::kivi(bits, kivi_group)?, 0.02, 2, 4),
            _ => bail!("unknown compressed policy `{name}` (expected quant, kivi or gear)"),
        };
        Ok(Self {
            name: name.to_string(),
            config: GearConfig {
                backbone,
                outlier,
                tails: Tails::Both,
                rank,
                prefill_rank,
                loops: 3,
                exact_f16: false,
            },
            buffer: 64,
            seed: 0,
        })
    }

    /// Parses `name:B,key=value,...` (see the module docs).
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |why: String| anyhow!("bad --kv spec `{spec}`: {why}");
        let (name, args) = spec.split_once(':').unwrap_or((spec, ""));
        let mut parts: Vec<&str> = args.split(',').filter(|p| !p.is_empty()).collect();
        let mut bits = if name == "kivi" { 2 } else { 4 };
        if let Some(first) = parts.first() {
            if !first.contains('=') {
                bits = first
                    .parse()
                    .map_err(|_| bad(format!("`{first}` is not a bit width")))?;
                parts.remove(0);
            }
        }
        if let Some(b) = parts.iter().find_map(|p| p.strip_prefix("bits=")) {
            bits = b
                .parse()
                .map_err(|_| bad(format!("`{b}` is not a bit width")))?;
        }
        let mut s = Self::preset(name, bits).map_err(|e| bad(e.to_string()))?;
        let mut rank_given = false;
        let mut prefill_given = false;
        for p in parts {
            let (key, value) = p
                .split_once('=')
                .ok_or_else(|| bad(format!("`{p}` is not key=value")))?;
            let int = || -> Result<usize> {
                value
                    .parse()
                    .map_err(|_| bad(format!("{key}=`{value}` is not a whole number")))
            };
            match key {
                "bits" => {}
                "group" => s.config.backbone.group = int()?,
                "outlier" => {
                    s.config.outlier = value
                        .parse()
                        .ok()
                        .filter(|v: &f64| (0.0..0.5).contains(v))
                        .ok_or_else(|| bad(format!("outlier=`{value}` must be in [0, 0.5)")))?
                }
                "rank" => {
                    s.config.rank = int()?;
                    rank_given = true;
                }
                "prefill_rank" => {
                    s.config.prefill_rank = int()?;
                    prefill_given = true;
                }
                "tails" => {
                    s.config.tails = match value {
                        "2" => Tails::Both,
                        "1" => Tails::Widest,
                        _ => return Err(bad(format!("tails=`{value}` must be 1 or 2"))),
                    }
                }
                "exact" => {
                    s.config.exact_f16 = match value {
                        "f32" => false,
                        "f16" => true,
                        _ => return Err(bad(format!("exact=`{value}` must be f32 or f16"))),
                    }
                }
                "loops" => s.config.loops = int()?,
                "buffer" => s.buffer = int()?,
                "seed" => s.seed = int()? as u64,
                _ => return Err(bad(format!("unknown key `{key}`"))),
            }
        }
        // `rank=r` alone sets both ranks.
        if rank_given && !prefill_given {
            s.config.prefill_rank = s.config.rank;
        }
        if s.buffer == 0 {
            return Err(bad("buffer must be at least 1 token".into()));
        }
        Ok(s)
    }

    /// One [`CompressedStore`] per layer of a model of this geometry (layer `l` seeded with
    /// `seed + l`).
    pub fn stores(&self, geometry: &KvGeometry) -> Result<Vec<CompressedStore>> {
        let channels = geometry.n_kv_head * geometry.head_dim;
        (0..geometry.n_layer)
            .map(|l| {
                CompressedStore::new(
                    self.config.clone(),
                    self.buffer,
                    channels,
                    geometry.head_dim,
                    self.seed.wrapping_add(l as u64),
                )
            })
            .collect::<Result<Vec<_>>>()
            .map_err(|e| anyhow!("bad --kv spec `{}`: {e}", self.to_spec()))
    }

    /// The canonical spec string (every parameter spelled out).
    pub fn to_spec(&self) -> String {
        let c = &self.config;
        format!(
            "{}:bits={},group={},outlier={},tails={},rank={},prefill_rank={},loops={},buffer={},exact={},seed={}",
            self.name,
            c.backbone.bits,
            c.backbone.group,
            c.outlier,
            c.tails.count(),
            c.rank,
            c.prefill_rank,
            c.loops,
            self.buffer,
            if c.exact_f16 { "f16" } else { "f32" },
            self.seed
        )
    }
}

/// One compressed block of `n_b` tokens: keys and values.
#[derive(Debug, Clone)]
pub struct CompressedBlock {
    /// Keys (after RoPE).
    pub k: CompressedMatrix,
    /// Values.
    pub v: CompressedMatrix,
}

/// Bytes held by a store, by component.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryBreakdown {
    /// Packed quantisation codes.
    pub codes: usize,
    /// f16 steps and zero points.
    pub scales: usize,
    /// Outlier offsets and values.
    pub outliers: usize,
    /// Low-rank factors.
    pub low_rank: usize,
    /// The full-precision streaming buffer (allocated capacity).
    pub buffer: usize,
    /// Block records and list allocations.
    pub metadata: usize,
}

impl MemoryBreakdown {
    /// Sum of every component.
    pub fn total(&self) -> usize {
        self.codes + self.scales + self.outliers + self.low_rank + self.buffer + self.metadata
    }

    fn add(&mut self, o: &Self) {
        self.codes += o.codes;
        self.scales += o.scales;
        self.outliers += o.outliers;
        self.low_rank += o.low_rank;
        self.buffer += o.buffer;
        self.metadata += o.metadata;
    }
}

/// The exact rows of the streaming buffer, `[tokens, channels]` row-major, in f32 or f16.
#[derive(Debug)]
enum ExactRows {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl ExactRows {
    fn new(f16: bool, capacity: usize) -> Self {
        if f16 {
            ExactRows::F16(Vec::with_capacity(capacity))
        } else {
            ExactRows::F32(Vec::with_capacity(capacity))
        }
    }

    fn len(&self) -> usize {
        match self {
            ExactRows::F32(x) => x.len(),
            ExactRows::F16(x) => x.len(),
        }
    }

    fn extend(&mut self, x: &[f32]) {
        match self {
            ExactRows::F32(b) => b.extend_from_slice(x),
            ExactRows::F16(b) => b.extend(x.iter().map(|&v| f16::from_f32(v))),
        }
    }

    /// Entries `[from, from + n)` as f32.
    fn to_f32(&self, from: usize, n: usize) -> std::borrow::Cow<'_, [f32]> {
        match self {
            ExactRows::F32(b) => std::borrow::Cow::Borrowed(&b[from..from + n]),
            ExactRows::F16(b) => {
                std::borrow::Cow::Owned(b[from..from + n].iter().map(|v| v.to_f32()).collect())
            }
        }
    }

    /// Copies the channels of `head` of every buffered token (rows of `cols` entries) into
    /// `out: [tokens, head.width]`.
    fn write_head(&self, head: Head, cols: usize, out: &mut [f32]) {
        let channels = head.channels();
        let rows = self.len() / cols;
        let dst = out.chunks_exact_mut(head.width).take(rows);
        match self {
            ExactRows::F32(b) => {
                for (d, row) in dst.zip(b.chunks_exact(cols)) {
                    d.copy_from_slice(&row[channels.clone()]);
                }
            }
            ExactRows::F16(b) => {
                for (d, row) in dst.zip(b.chunks_exact(cols)) {
                    for (o, v) in d.iter_mut().zip(&row[channels.clone()]) {
                        *o = v.to_f32();
                    }
                }
            }
        }
    }

    /// Drops the first `n` entries, keeping room for `keep`.
    fn drop_front(&mut self, n: usize, keep: usize) {
        match self {
            ExactRows::F32(b) => {
                b.drain(..n);
                b.shrink_to(keep);
            }
            ExactRows::F16(b) => {
                b.drain(..n);
                b.shrink_to(keep);
            }
        }
    }

    fn clear(&mut self) {
        match self {
            ExactRows::F32(b) => b.clear(),
            ExactRows::F16(b) => b.clear(),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            ExactRows::F32(b) => 4 * b.capacity(),
            ExactRows::F16(b) => 2 * b.capacity(),
        }
    }
}

/// One layer's compressed K/V: a queue of compressed blocks, oldest first, and the exact buffer
/// of the newest tokens. Rows are tokens, columns the KV heads side by side.
#[derive(Debug)]
pub struct CompressedStore {
    config: GearConfig,
    block: usize,
    channels: usize,
    head_dim: usize,
    blocks: VecDeque<CompressedBlock>,
    k_buf: ExactRows,
    v_buf: ExactRows,
    rng: StdRng,
}

impl CompressedStore {
    /// An empty store for blocks of `block` tokens of `channels = n_kv_head · head_dim`.
    pub fn new(
        config: GearConfig,
        block: usize,
        channels: usize,
        head_dim: usize,
        seed: u64,
    ) -> Result<Self> {
        if head_dim == 0 || !channels.is_multiple_of(head_dim) {
            bail!("{channels} channels are not whole heads of {head_dim}");
        }
        config.check(block, channels, head_dim)?;
        let (k_buf, v_buf) = (
            ExactRows::new(config.exact_f16, block * channels),
            ExactRows::new(config.exact_f16, block * channels),
        );
        Ok(Self {
            config,
            block,
            channels,
            head_dim,
            blocks: VecDeque::new(),
            k_buf,
            v_buf,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// Channels per token (`n_kv_head · head_dim`).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Tokens per compressed block (`n_b`).
    pub fn block_len(&self) -> usize {
        self.block
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.blocks.len() * self.block + self.buffered()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens in the exact buffer.
    pub fn buffered(&self) -> usize {
        self.k_buf.len() / self.channels
    }

    /// Compressed blocks held.
    pub fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Appends `n` tokens of keys and values, each `[n, channels]` row-major. Whenever the
    /// buffer would exceed `n_b` tokens its oldest `n_b` are compressed into a block, with the
    /// prefill rank when `prefill` (a multi-token step), else the decode rank.
    pub fn append(&mut self, k: &[f32], v: &[f32], prefill: bool) -> Result<()> {
        if k.len() != v.len() || !k.len().is_multiple_of(self.channels) {
            bail!("keys and values must both be [tokens, {}]", self.channels);
        }
        self.k_buf.extend(k);
        self.v_buf.extend(v);
        let rank = if prefill {
            self.config.prefill_rank
        } else {
            self.config.rank
        };
        let n = self.block * self.channels;
        let mut done = 0;
        while self.k_buf.len() - done > n {
            let kb = self.k_buf.to_f32(done, n);
            let vb = self.v_buf.to_f32(done, n);
            let (c, hd) = (self.channels, self.head_dim);
            let k = CompressedMatrix::compress(
                &kb,
                self.block,
                c,
                hd,
                true,
                &self.config,
                rank,
                &mut self.rng,
            )?;
            let v = CompressedMatrix::compress(
                &vb,
                self.block,
                c,
                hd,
                false,
                &self.config,
                rank,
                &mut self.rng,
            )?;
            self.blocks.push_back(CompressedBlock { k, v });
            done += n;
        }
        if done > 0 {
            self.k_buf.drop_front(done, n);
            self.v_buf.drop_front(done, n);
        }
        Ok(())
    }

    /// Drops the oldest compressed block (the hook a window policy such as StreamingLLM evicts
    /// through); returns the tokens dropped (0 when no block is held).
    pub fn evict_oldest_block(&mut self) -> usize {
        match self.blocks.pop_front() {
            Some(_) => self.block,
            None => 0,
        }
    }

    /// Dequantises everything held into K and V `[n_kv_head, len, head_dim]` row-major,
    /// oldest token first.
    pub fn materialise(&self) -> (Vec<f32>, Vec<f32>) {
        let size = self.len() * self.channels;
        let (mut k, mut v) = (vec![0f32; size], vec![0f32; size]);
        self.materialise_into(true, &mut k, self.len(), 0);
        self.materialise_into(false, &mut v, self.len(), 0);
        (k, v)
    }

    /// Dequantises the keys (`is_key`) or values into rows `first_row..first_row + len` of
    /// `out`, a `[n_kv_head, rows, head_dim]` row-major buffer with `rows >= first_row + len`.
    pub fn materialise_into(&self, is_key: bool, out: &mut [f32], rows: usize, first_row: usize) {
        for (index, head_rows) in out.chunks_exact_mut(rows * self.head_dim).enumerate() {
            self.materialise_head(is_key, index, head_rows, first_row);
        }
    }

    /// Dequantises head `index` of the keys (`is_key`) or values into rows `first_row..` of
    /// `out: [rows, head_dim]` row-major: the work of one task of a parallel materialisation.
    pub fn materialise_head(&self, is_key: bool, index: usize, out: &mut [f32], first_row: usize) {
        let head = Head {
            index,
            width: self.head_dim,
        };
        let block_len = self.block * head.width;
        let mut rows = out[first_row * head.width..].chunks_mut(block_len);
        for (b, dst) in self.blocks.iter().zip(rows.by_ref()) {
            if is_key { &b.k } else { &b.v }.decompress_head(head, dst);
        }
        if let Some(dst) = rows.next() {
            let buf = if is_key { &self.k_buf } else { &self.v_buf };
            buf.write_head(head, self.channels, dst);
        }
    }

    /// Tiles of a head: the compressed blocks, then the exact buffer when it holds tokens.
    pub fn n_tiles(&self) -> usize {
        self.blocks.len() + usize::from(self.buffered() > 0)
    }

    /// Walks tiles `tiles` (of [`CompressedStore::n_tiles`]) of head `index` of the keys
    /// (`is_key`) or values, oldest first: each compressed block's `D̂ + S` is written into
    /// `tile` (at least `n_b · head_dim` long, small enough to stay in L1) and handed to
    /// `f(first_token, rows, low_rank)` with the block's low-rank factors for that head; the
    /// exact buffer, the last tile, comes with none.
    pub fn for_each_tile(
        &self,
        is_key: bool,
        index: usize,
        tiles: std::ops::Range<usize>,
        tile: &mut [f32],
        mut f: impl FnMut(usize, &[f32], Option<&LowRank>),
    ) {
        let head = Head {
            index,
            width: self.head_dim,
        };
        let tile = &mut tile[..self.block * head.width];
        for i in tiles {
            match self.blocks.get(i) {
                Some(b) => {
                    let lr = if is_key { &b.k } else { &b.v }.sparse_backbone_head(head, tile);
                    f(i * self.block, tile, lr);
                }
                None if i == self.blocks.len() => {
                    let buf = if is_key { &self.k_buf } else { &self.v_buf };
                    buf.write_head(head, self.channels, tile);
                    let rows = self.buffered() * head.width;
                    f(i * self.block, &tile[..rows], None);
                }
                None => {}
            }
        }
    }

    /// Bytes held, by component.
    pub fn breakdown(&self) -> MemoryBreakdown {
        let mut m = MemoryBreakdown {
            buffer: self.k_buf.heap_bytes() + self.v_buf.heap_bytes(),
            metadata: self.blocks.capacity() * std::mem::size_of::<CompressedBlock>(),
            ..Default::default()
        };
        for b in &self.blocks {
            for x in [&b.k, &b.v] {
                let [codes, scales, outliers, low_rank] = x.bytes_by_component();
                m.codes += codes;
                m.scales += scales;
                m.outliers += outliers;
                m.low_rank += low_rank;
                m.metadata +=
                    x.low_rank.capacity() * std::mem::size_of::<crate::low_rank::LowRank>();
            }
        }
        m
    }

    /// Exact heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.breakdown().total()
    }

    /// Forgets every token, keeping the buffer allocation.
    pub fn clear(&mut self) {
        self.blocks = VecDeque::new();
        self.k_buf.clear();
        self.v_buf.clear();
    }
}

/// `quant` / `kivi` / `gear`: every layer's K/V in a [`CompressedStore`], keys after RoPE at text
/// positions `0, 1, 2, ...`, up to the model's context.
#[derive(Debug)]
pub struct GearCache {
    spec: GearSpec,
    stores: Vec<CompressedStore>,
    n_kv_head: usize,
    head_dim: usize,
    positions: ferrite_llm::kv_cache::TextPositions,
    scratch: Scratch,
    /// Decode through the dequantised scratch too (`FERRITE_GEAR_SCRATCH=1`, for A/B runs).
    scratch_attention: bool,
}

impl GearCache {
    /// A cache for a model of this geometry (CPU only: blocks are dequantised on the host).
    pub fn new(spec: GearSpec, geometry: &KvGeometry) -> Result<Self> {
        if !geometry.device.is_cpu() {
            bail!("the compressed KV cache runs on the CPU only");
        }
        let stores = spec.stores(geometry)?;
        Ok(Self {
            spec,
            stores,
            n_kv_head: geometry.n_kv_head,
            head_dim: geometry.head_dim,
            positions: ferrite_llm::kv_cache::TextPositions::new(geometry.max_tokens),
            scratch: Scratch::default(),
            scratch_attention: std::env::var_os("FERRITE_GEAR_SCRATCH").is_some(),
        })
    }

    /// The parsed spec.
    pub fn gear_spec(&self) -> &GearSpec {
        &self.spec
    }

    /// The per-layer stores.
    pub fn stores(&self) -> &[CompressedStore] {
        &self.stores
    }

    /// Bytes held, by component, over all layers (metadata includes the store list).
    pub fn breakdown(&self) -> MemoryBreakdown {
        let mut m = MemoryBreakdown {
            metadata: self.stores.capacity() * std::mem::size_of::<CompressedStore>(),
            ..Default::default()
        };
        for s in &self.stores {
            m.add(&s.breakdown());
        }
        m
    }

    /// Bytes an f16 cache would hold for the same tokens: `2 · n_layer · L · n_kv_head ·
    /// head_dim · 2`.
    pub fn f16_bytes(&self) -> usize {
        2 * self.stores.len() * self.positions.len() * self.n_kv_head * self.head_dim * 2
    }

    /// GEAR's "average KV size": stored bytes over the bytes of the same cache in f16.
    pub fn average_kv_size(&self) -> f64 {
        self.heap_bytes() as f64 / self.f16_bytes().max(1) as f64
    }

    /// Appends layer `layer`'s new keys (rotated at their text positions) and values.
    fn store_new(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        angles: &RopeAngles,
    ) -> Result<()> {
        let n_layer = self.stores.len();
        let store = self
            .stores
            .get_mut(layer)
            .ok_or_else(|| anyhow!("layer {layer} out of range (model has {n_layer})"))?;
        let t = k.dim(1)?;
        store.append(&token_major(&angles.rotate(k)?)?, &token_major(v)?, t > 1)
    }

    /// Transient working memory: the f32 scratch K and V that every layer is dequantised into
    /// in turn (one layer's worth, grown in chunks of [`SCRATCH_CHUNK`] tokens). Not part of
    /// [`KvCache::heap_bytes`], which counts what is stored.
    pub fn scratch_bytes(&self) -> usize {
        self.scratch.heap_bytes()
    }
}

/// The f32 K and V `[n_kv_head, rows, head_dim]` one layer is dequantised into, reused by every
/// layer and every step, grown in chunks of [`SCRATCH_CHUNK`] rows. K and V are the two halves of
/// one `[2, n_kv_head, rows, head_dim]` tensor, so one in-place op fills both.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    kv: Option<Tensor>,
}

impl Scratch {
    /// The scratch `[2, n_kv_head, rows', head_dim]` (K then V), grown to `rows' >= rows`.
    pub(crate) fn get(
        &mut self,
        rows: usize,
        n_kv_head: usize,
        head_dim: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let cap = self.kv.as_ref().map_or(0, |kv| kv.dim(2).unwrap_or(0));
        if rows > cap || self.kv.is_none() {
            let rows = rows.div_ceil(SCRATCH_CHUNK).max(1) * SCRATCH_CHUNK;
            let shape = (2, n_kv_head, rows, head_dim);
            self.kv = Some(Tensor::zeros(shape, DType::F32, device)?);
        }
        Ok(self.kv.clone().expect("allocated above"))
    }

    /// Bytes allocated.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.kv.as_ref().map_or(0, |kv| 4 * kv.elem_count())
    }
}

/// Dequantises `store` into rows `first_row..first_row + store.len()` of the scratch K and V
/// (`kv: [2, n_kv_head, rows, head_dim]`) in place, one task per (K or V, head) on the kernel
/// pool; returns the K and V views `[n_kv_head, rows, head_dim]`.
pub(crate) fn materialise_layer(
    store: &CompressedStore,
    kv: &Tensor,
    first_row: usize,
) -> Result<(Tensor, Tensor)> {
    kv.inplace_op1(&Materialise { store, first_row })?;
    Ok((kv.get(0)?, kv.get(1)?))
}

/// Tokens added to the scratch K/V at a time.
pub const SCRATCH_CHUNK: usize = 256;

/// Writes one layer's dequantised K and V into the scratch tensor's storage in place.
struct Materialise<'a> {
    store: &'a CompressedStore,
    first_row: usize,
}

impl InplaceOp1 for Materialise<'_> {
    fn name(&self) -> &'static str {
        "gear-materialise"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else {
            return Err(candle_core::Error::Msg("gear scratch must be f32".into()));
        };
        let dims = layout.dims();
        let (heads, head_len) = (dims[0] * dims[1], dims[2] * dims[3]);
        let out = &mut data[layout.start_offset()..][..heads * head_len];
        let per_head: Vec<Mutex<&mut [f32]>> =
            out.chunks_exact_mut(head_len).map(Mutex::new).collect();
        let n_kv_head = dims[1];
        ferrite_kernels::pool::global().run(heads, &|task| {
            let mut dst = per_head[task].lock().unwrap_or_else(|e| e.into_inner());
            let (is_key, head) = (task < n_kv_head, task % n_kv_head);
            self.store
                .materialise_head(is_key, head, &mut dst, self.first_row);
        });
        Ok(())
    }
}

/// `x: [heads, t, head_dim]` as `[t, heads · head_dim]` row-major f32.
pub(crate) fn token_major(x: &Tensor) -> Result<Vec<f32>> {
    let (h, t, d) = x.dims3()?;
    let flat = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; flat.len()];
    for head in 0..h {
        for i in 0..t {
            out[i * h * d + head * d..i * h * d + (head + 1) * d]
                .copy_from_slice(&flat[(head * t + i) * d..(head * t + i + 1) * d]);
        }
    }
    Ok(out)
}

impl KvCache for GearCache {
    fn spec(&self) -> String {
        self.spec.to_spec()
    }

    fn begin_step(&mut self, n_new: usize) -> Result<Vec<usize>> {
        self.positions.append(n_new)
    }

    fn update(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        new_angles: &RopeAngles,
    ) -> Result<(Tensor, Tensor)> {
        self.store_new(layer, k, v, new_angles)?;
        let total = self.stores[layer].len();
        let kv = self
            .scratch
            .get(total, self.n_kv_head, self.head_dim, k.device())?;
        let (sk, sv) = materialise_layer(&self.stores[layer], &kv, 0)?;
        Ok((sk.narrow(1, 0, total)?, sv.narrow(1, 0, total)?))
    }

    /// One new token (decode) attends straight from the packed store
    /// ([`crate::attention::attend_decode`]); longer steps through the dequantised scratch.
    fn attend(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        new_angles: &RopeAngles,
        dense: &mut dyn FnMut(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        if q.dim(1)? != 1 || self.scratch_attention {
            let (k_all, v_all) = self.update(layer, k, v, new_angles)?;
            return dense(&k_all, &v_all);
        }
        self.store_new(layer, k, v, new_angles)?;
        crate::attention::attend_decode_tensor(&self.stores[layer], q)
    }

    fn len(&self) -> usize {
        self.positions.len()
    }

    fn capacity(&self) -> usize {
        self.positions.capacity()
    }

    fn remaining(&self) -> Option<usize> {
        Some(self.positions.remaining())
    }

    fn heap_bytes(&self) -> usize {
        self.breakdown().total()
    }

    fn reset(&mut self) {
        self.stores.iter_mut().for_each(CompressedStore::clear);
        self.positions.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_overrides_parse() -> Result<()> {
        let g = GearSpec::parse("gear:4")?;
        assert_eq!(g.config.backbone, Backbone::kcvt(4)?);
        assert_eq!((g.config.rank, g.config.prefill_rank, g.buffer), (2, 4, 64));
        let g = GearSpec::parse("gear:bits=2,group=64,rank=4,outlier=0.02,buffer=64")?;
        assert_eq!(g.config.backbone, Backbone::kivi(2, 64)?);
        assert_eq!((g.config.rank, g.config.prefill_rank), (4, 4));
        assert_eq!(
            GearSpec::parse("kivi:2")?.config.backbone,
            Backbone::kivi(2, 64)?
        );
        let q = GearSpec::parse("quant:8")?;
        assert_eq!((q.config.outlier, q.config.rank), (0.0, 0));
        // The canonical string parses back to the same spec.
        for s in ["gear:2", "quant:3", "kivi:4,buffer=32,group=32"] {
            let p = GearSpec::parse(s)?;
            assert_eq!(GearSpec::parse(&p.to_spec())?, p, "{s}");
        }
        Ok(())
    }

    #[test]
    fn bad_specs_are_one_line_errors() {
        for bad in [
            "gear:5",
            "gear:x",
            "quant:4,rank",
            "gear:4,foo=1",
            "gear:4,outlier=0.9",
            "gear:4,buffer=0",
            "gear:4,rank=-1",
            "zip:4",
        ] {
            let e = GearSpec::parse(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("bad --kv spec") && !e.contains('\n'),
                "{bad}: {e}"
            );
        }
    }
}
