//! The attention-sink KV cache of StreamingLLM (Xiao et al. 2023, "Efficient Streaming
//! Language Models with Attention Sinks", §3.2 and Fig. 4): keep the KV of the first `S` tokens
//! (the attention sinks) plus a rolling window of the `W` most recent tokens; each new token
//! beyond `S + W` evicts the oldest non-sink token. With `S = 0` this is the plain window
//! attention the paper shows failing (Fig. 1b).
//!
//! **Positions inside the cache (§3.2).** Attention is computed as if the cached tokens sat at
//! consecutive positions `0..L`: a cache holding text tokens `[0,1,2,3,6,7,8]` decodes token 9
//! at position 7 with its keys at positions `0..6`. RoPE scores depend only on the difference of
//! positions, so this module realises those positions without re-rotating the cache:
//! - window keys are rotated once, at their text position, when they arrive; the query is
//!   rotated at its text position. Inside the window the text is contiguous, so every
//!   query-key distance equals the in-cache distance, and eviction changes none of them;
//! - only the `S` sink keys must move (they must sit just before the window). Sink `j` belongs
//!   at text position `evicted + j`; once the cache is full it sits a constant in-cache distance
//!   `D_j = S + W - 1 - j` before the newest token, so it is stored pre-shifted as
//!   `R(-D_j) k_j` and rotated each step with the newest token's own angles:
//!   `R(p) R(-D_j) k_j = R(p - D_j) k_j`. That is `O(S)` work per step instead of `O(S + W)`.
//!
//! `R(-D_j)` is read from the model's own RoPE tables: when position `D_j` arrives, the cache
//! rotates an identity matrix with that step's angles, which yields the rotation matrix exactly
//! as the model applies it (no RoPE parameters are needed beyond what the [`KvCache`] seam
//! hands over). [`Rotation::Naive`] is the textbook scheme instead — keys cached before RoPE
//! and the whole cache rotated to `0..L` every step — kept to verify and to measure against.
//!
//! Storage is a ring buffer: `S` sink slots, then `W` window slots overwritten oldest-first, so
//! eviction moves no memory. A single-token step attends over the slots in ring order (the
//! softmax-weighted sum is invariant to permuting key/value rows together, and one query needs
//! no causal mask); a multi-token step returns the rows in text order so that the model's causal
//! mask, which expects the new tokens last, stays right.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use ferrite_llm::kv_cache::{KvCache, KvGeometry};
use ferrite_llm::rope::{Rope, RopeAngles};

/// What a sink cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkConfig {
    /// Attention sinks: the first tokens of the stream, never evicted.
    pub sinks: usize,
    /// Rolling window of the most recent tokens.
    pub window: usize,
    /// Evict after attending, as mit-han-lab/streaming-llm does: a step then attends over up to
    /// `sinks + window + 1` entries. The default (`false`) evicts for space before attending, so
    /// a step never attends over more than `sinks + window`.
    pub trim_after: bool,
}

impl SinkConfig {
    /// Window slots actually stored: one more when trimming after attending (evicting that one
    /// extra entry before the next step is the same computation, token for token).
    fn ring(&self) -> usize {
        self.window + usize::from(self.trim_after)
    }

    /// The spec string: `sink:S+W`, `window:W`, with `,after` for trim-after.
    pub fn spec(&self) -> String {
        let base = if self.sinks == 0 {
            format!("window:{}", self.window)
        } else {
            format!("sink:{}+{}", self.sinks, self.window)
        };
        if self.trim_after {
            format!("{base},after")
        } else {
            base
        }
    }
}

/// How cached keys get their in-cache positions.
#[derive(Debug, Clone)]
pub enum Rotation {
    /// Window keys rotated once at their text position, sinks re-rotated each step (`O(S)`).
    Incremental,
    /// Keys stored before RoPE, the whole cache rotated to `0..L` each step (`O(S + W)`), as the
    /// reference implementation does. Needs the model's RoPE.
    Naive(Rope),
}

/// One layer's storage: slots `0..S` hold the sinks, slots `S..S+ring` the window ring.
#[derive(Debug)]
struct LayerStore {
    k: Tensor,
    v: Tensor,
    /// Sink keys before RoPE (incremental rotation only).
    sink_raw: Option<Tensor>,
    /// Sink keys shifted back by their in-cache distance, `R(-D_j) k_j` (incremental rotation
    /// only), and whether they have been computed (at the first eviction).
    sink_shifted: Option<Tensor>,
    shifted_ready: bool,
}

/// What `begin_step` decided for the step in progress.
#[derive(Debug, Clone)]
struct Step {
    /// New tokens that become sinks, and the first sink slot they fill.
    n_sink: usize,
    sink_start: usize,
    /// New tokens that enter the window, and the ring index the first one goes to.
    n_win: usize,
    win_slot: usize,
}

/// `sink:S+W` / `window:W`: the StreamingLLM cache (see the module docs).
#[derive(Debug)]
pub struct SinkCache {
    config: SinkConfig,
    rotation: Rotation,
    n_layer: usize,
    n_kv_head: usize,
    head_dim: usize,
    device: Device,
    layers: Vec<Option<LayerStore>>,
    /// The sinks' rotations `R(-D_j)` (incremental rotation).
    shift: SinkShift,
    sinks_held: usize,
    /// Ring index of the oldest window entry, and window entries held.
    head: usize,
    win_len: usize,
    /// Tokens ever appended, and window tokens ever evicted.
    seen: usize,
    evicted: usize,
    step: Option<Step>,
}

impl SinkCache {
    /// A cache for a model of this geometry, rotating incrementally.
    pub fn new(config: SinkConfig, geometry: &KvGeometry) -> Result<Self> {
        Self::with_rotation(config, geometry, Rotation::Incremental)
    }

    /// A cache with the given rotation scheme.
    pub fn with_rotation(
        config: SinkConfig,
        geometry: &KvGeometry,
        rotation: Rotation,
    ) -> Result<Self> {
        if config.window == 0 {
            bail!("{}: the window must hold at least 1 token", config.spec());
        }
        let held = config.sinks + config.ring();
        if held > geometry.max_tokens {
            bail!(
                "{} holds {held} tokens, more than the model's context of {}",
                config.spec(),
                geometry.max_tokens
            );
        }
        Ok(Self {
            config,
            rotation,
            n_layer: geometry.n_layer,
            n_kv_head: geometry.n_kv_head,
            head_dim: geometry.head_dim,
            device: geometry.device.clone(),
            layers: (0..geometry.n_layer).map(|_| None).collect(),
            shift: SinkShift::new(config.sinks, held, geometry.head_dim, &geometry.device),
            sinks_held: 0,
            head: 0,
            win_len: 0,
            seen: 0,
            evicted: 0,
            step: None,
        })
    }

    /// The policy's parameters.
    pub fn config(&self) -> SinkConfig {
        self.config
    }

    /// Text positions (0-based offsets in the stream) of the tokens held, in cache order:
    /// sinks first, then the window oldest-first.
    pub fn text_positions(&self) -> Vec<usize> {
        let first_window = self.config.sinks + self.evicted;
        (0..self.sinks_held)
            .chain(first_window..first_window + self.win_len)
            .collect()
    }

    /// Tokens evicted so far.
    pub fn evicted(&self) -> usize {
        self.evicted
    }

    fn ring(&self) -> usize {
        self.config.ring()
    }

    /// Storage slot of each held token in cache order (sinks, then window oldest-first).
    fn ordered_slots(&self) -> Vec<u32> {
        let s = self.config.sinks;
        let ring = self.ring();
        (0..self.sinks_held)
            .chain((0..self.win_len).map(|r| s + (self.head + r) % ring))
            .map(|slot| slot as u32)
            .collect()
    }

    /// In-cache position of every occupied slot, in slot order (`0..len`).
    fn slot_positions(&self) -> Vec<usize> {
        let mut pos = vec![0; self.len()];
        for (rank, &slot) in self.ordered_slots().iter().enumerate() {
            pos[slot as usize] = rank;
        }
        pos
    }

    fn allocate(&self) -> Result<LayerStore> {
        let slots = self.config.sinks + self.ring();
        let zeros =
            |n: usize| Tensor::zeros((self.n_kv_head, n, self.head_dim), DType::F32, &self.device);
        let incremental = matches!(self.rotation, Rotation::Incremental);
        let sinks = || -> Result<Option<Tensor>> {
            Ok(if incremental && self.config.sinks > 0 {
                Some(zeros(self.config.sinks)?)
            } else {
                None
            })
        };
        Ok(LayerStore {
            k: zeros(slots)?,
            v: zeros(slots)?,
            sink_raw: sinks()?,
            sink_shifted: sinks()?,
            shifted_ready: false,
        })
    }
}

/// Writes rows `[from, from + n)` of `src` into `dst` at slot `at` along dim 1.
fn write_rows(dst: &Tensor, src: &Tensor, from: usize, n: usize, at: usize) -> Result<()> {
    if n > 0 {
        dst.slice_set(&src.narrow(1, from, n)?.contiguous()?, 1, at)?;
    }
    Ok(())
}

/// The `O(S)` sink rotation of the module docs, for any cache that keeps its `S` sinks exact in
/// front of a window whose newest token sits at in-cache position `held - 1`: sink `j` sits the
/// constant distance `D_j = held - 1 - j` before it, is stored as `R(-D_j) k_j` ([`Self::shift`])
/// and is rotated each step with the newest token's own angles ([`Self::rotate_to_newest`]).
/// The rotations `R(-D_j)` are captured from the model's own angles as positions `D_j` go by
/// ([`Self::capture`]), before the window first evicts. Shared by [`SinkCache`] and the
/// compressed window of `ferrite-gear`.
#[derive(Debug, Clone)]
pub struct SinkShift {
    sinks: usize,
    held: usize,
    head_dim: usize,
    device: Device,
    /// `R(-D_j)` for each sink `j`, as right-multipliers of row vectors
    /// `[S, head_dim, head_dim]`, and which of them have been captured.
    unshift: Option<Tensor>,
    ready: Vec<bool>,
}

impl SinkShift {
    /// Rotations for `sinks` sinks in front of a window, `held` tokens in all once full.
    pub fn new(sinks: usize, held: usize, head_dim: usize, device: &Device) -> Self {
        Self {
            sinks,
            held,
            head_dim,
            device: device.clone(),
            unshift: None,
            ready: vec![false; sinks],
        }
    }

    /// Records `R(-D_j)` for every sink `j` whose in-cache distance `D_j` is among this step's
    /// positions, by rotating an identity matrix with the step's own angles.
    pub fn capture(&mut self, angles: &RopeAngles) -> Result<()> {
        let (s, d) = (self.sinks, self.head_dim);
        if s == 0 {
            return Ok(());
        }
        if self.unshift.is_none() {
            self.unshift = Some(Tensor::zeros((s, d, d), DType::F32, &self.device)?);
        }
        let wanted: Vec<(usize, usize)> = angles
            .positions()
            .iter()
            .enumerate()
            .filter_map(|(row, &p)| {
                let j = (self.held - 1).checked_sub(p)?;
                (j < s && !self.ready[j]).then_some((row, j))
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let t = angles.positions().len();
        let eye = Tensor::eye(d, DType::F32, &self.device)?
            .reshape((d, 1, d))?
            .broadcast_as((d, t, d))?
            .contiguous()?;
        // Row i of the rotated identity is e_i R(p)ᵀ (row-vector form); its transpose undoes it.
        let rotated = angles.rotate(&eye)?;
        let unshift = self.unshift.as_ref().context("allocated above")?;
        for (row, j) in wanted {
            let y = rotated.narrow(1, row, 1)?.squeeze(1)?;
            unshift.slice_set(&y.t()?.contiguous()?.unsqueeze(0)?, 0, j)?;
            self.ready[j] = true;
        }
        Ok(())
    }

    /// Sink keys before RoPE `raw: [n_kv_head, S, head_dim]` shifted back by their in-cache
    /// distance, `R(-D_j) k_j`.
    pub fn shift(&self, raw: &Tensor) -> Result<Tensor> {
        let unshift = match &self.unshift {
            Some(u) if self.ready.iter().all(|&r| r) => u,
            _ => bail!("sink rotations were not captured before the first eviction"),
        };
        // [S, h, d] x [S, d, d]: each sink through its own rotation.
        let shifted = raw.transpose(0, 1)?.contiguous()?.matmul(unshift)?;
        Ok(shifted.transpose(0, 1)?.contiguous()?)
    }

    /// Shifted sinks `[n_kv_head, S, head_dim]` rotated with the angles of the step's newest
    /// (last) token: `R(p_last) R(-D_j) k_j`.
    pub fn rotate_to_newest(shifted: &Tensor, angles: &RopeAngles) -> Result<Tensor> {
        let (h, s, d) = shifted.dims3()?;
        let t = angles.positions().len();
        let x = shifted
            .reshape((h * s, 1, d))?
            .broadcast_as((h * s, t, d))?
            .contiguous()?;
        Ok(angles.rotate(&x)?.narrow(1, t - 1, 1)?.reshape((h, s, d))?)
    }

    /// Bytes of the captured rotations.
    pub fn heap_bytes(&self) -> usize {
        self.unshift.as_ref().map_or(0, |u| u.elem_count() * 4)
    }

    /// Forgets the captured rotations.
    pub fn reset(&mut self) {
        self.unshift = None;
        self.ready.iter_mut().for_each(|r| *r = false);
    }
}

impl KvCache for SinkCache {
    fn spec(&self) -> String {
        match self.rotation {
            Rotation::Incremental => self.config.spec(),
            Rotation::Naive(_) => format!("{},naive", self.config.spec()),
        }
    }

    fn begin_step(&mut self, n_new: usize) -> Result<Vec<usize>> {
        if n_new == 0 {
            bail!("no tokens to append");
        }
        let ring = self.ring();
        let n_sink = n_new.min(self.config.sinks - self.sinks_held);
        let n_win = n_new - n_sink;
        if n_win > ring {
            bail!(
                "{} new tokens do not fit {}: at most {} can be appended at once",
                n_new,
                self.config.spec(),
                ring + self.config.sinks - self.sinks_held
            );
        }
        // Evict for space: the oldest window entries go, as many as the new tokens need.
        let evict = (self.win_len + n_win).saturating_sub(ring);
        self.head = (self.head + evict) % ring;
        self.win_len -= evict;
        self.evicted += evict;
        let in_cache = self.sinks_held + self.win_len;
        let positions = match self.rotation {
            Rotation::Incremental => (self.seen..self.seen + n_new).collect(),
            Rotation::Naive(_) => (in_cache..in_cache + n_new).collect(),
        };
        self.step = Some(Step {
            n_sink,
            sink_start: self.sinks_held,
            n_win,
            win_slot: (self.head + self.win_len) % ring,
        });
        self.seen += n_new;
        self.sinks_held += n_sink;
        self.win_len += n_win;
        Ok(positions)
    }

    fn update(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        new_angles: &RopeAngles,
    ) -> Result<(Tensor, Tensor)> {
        let step = self
            .step
            .clone()
            .context("update called before begin_step")?;
        let t = k.dim(1)?;
        if t != step.n_sink + step.n_win || layer >= self.n_layer {
            bail!(
                "update of layer {layer} with {t} tokens does not match the step of {} tokens",
                step.n_sink + step.n_win
            );
        }
        if self.layers[layer].is_none() {
            self.layers[layer] = Some(self.allocate()?);
        }
        let incremental = matches!(self.rotation, Rotation::Incremental);
        if incremental {
            self.shift.capture(new_angles)?;
        }
        let (s, ring) = (self.config.sinks, self.ring());
        let k = k.to_dtype(DType::F32)?;
        let v = v.to_dtype(DType::F32)?;
        let k_stored = if incremental {
            new_angles.rotate(&k)?
        } else {
            k.clone()
        };
        let store = self.layers[layer].as_ref().context("allocated above")?;
        // New sinks (only at the very start of the stream).
        if let Some(raw) = &store.sink_raw {
            write_rows(raw, &k, 0, step.n_sink, step.sink_start)?;
        }
        write_rows(&store.k, &k_stored, 0, step.n_sink, step.sink_start)?;
        write_rows(&store.v, &v, 0, step.n_sink, step.sink_start)?;
        // New window entries, wrapping around the ring.
        let first = step.n_win.min(ring - step.win_slot);
        for (from, n, slot) in [
            (step.n_sink, first, step.win_slot),
            (step.n_sink + first, step.n_win - first, 0),
        ] {
            write_rows(&store.k, &k_stored, from, n, s + slot)?;
            write_rows(&store.v, &v, from, n, s + slot)?;
        }
        // Sinks move to sit just before the window: R(p_last) R(-D_j) k_j.
        if incremental && s > 0 && self.evicted > 0 {
            if !store.shifted_ready {
                let raw = store
                    .sink_raw
                    .as_ref()
                    .context("sink keys before RoPE are missing")?;
                let shifted = self.shift.shift(raw)?;
                let st = self.layers[layer].as_mut().context("allocated above")?;
                st.sink_shifted
                    .as_ref()
                    .context("allocated with the layer")?
                    .slice_set(&shifted, 1, 0)?;
                st.shifted_ready = true;
            }
            let store = self.layers[layer].as_ref().context("allocated above")?;
            let shifted = store.sink_shifted.as_ref().context("computed above")?;
            store
                .k
                .slice_set(&SinkShift::rotate_to_newest(shifted, new_angles)?, 1, 0)?;
        }
        let store = self.layers[layer].as_ref().context("allocated above")?;
        let len = self.len();
        let mut k_all = store.k.narrow(1, 0, len)?;
        let mut v_all = store.v.narrow(1, 0, len)?;
        if let Rotation::Naive(rope) = &self.rotation {
            k_all = rope.rotate(&k_all, &self.slot_positions())?;
        }
        // Several new tokens: text order, so the causal mask (new tokens last) holds.
        if t > 1 && self.head != 0 {
            let order = Tensor::new(self.ordered_slots(), &self.device)?;
            k_all = k_all.index_select(&order, 1)?;
            v_all = v_all.index_select(&order, 1)?;
        }
        Ok((k_all, v_all))
    }

    fn len(&self) -> usize {
        self.sinks_held + self.win_len
    }

    fn capacity(&self) -> usize {
        self.config.sinks + self.ring()
    }

    fn heap_bytes(&self) -> usize {
        let tensor = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let layers: usize = self
            .layers
            .iter()
            .flatten()
            .map(|l| {
                tensor(&l.k)
                    + tensor(&l.v)
                    + l.sink_raw.as_ref().map_or(0, tensor)
                    + l.sink_shifted.as_ref().map_or(0, tensor)
            })
            .sum();
        layers + self.shift.heap_bytes()
    }

    fn reset(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.shift.reset();
        self.sinks_held = 0;
        self.head = 0;
        self.win_len = 0;
        self.seen = 0;
        self.evicted = 0;
        self.step = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_llm::config::RopeStyle;

    const D: usize = 4;

    fn geometry() -> KvGeometry {
        KvGeometry {
            n_layer: 2,
            n_kv_head: 1,
            head_dim: D,
            max_tokens: 64,
            device: Device::Cpu,
        }
    }

    fn rope() -> Rope {
        Rope::new(10_000.0, D, RopeStyle::Interleaved, &Device::Cpu)
    }

    fn config(sinks: usize, window: usize) -> SinkConfig {
        SinkConfig {
            sinks,
            window,
            trim_after: false,
        }
    }

    /// A key for text token `i` (distinct per token) and a value carrying `i`.
    fn kv(tokens: std::ops::Range<usize>) -> Result<(Tensor, Tensor)> {
        let t = tokens.len();
        let k: Vec<f32> = tokens
            .clone()
            .flat_map(|i| (0..D).map(move |c| ((i * 7 + c * 3) % 11) as f32 - 5.0))
            .collect();
        let v: Vec<f32> = tokens.flat_map(|i| [i as f32; D]).collect();
        Ok((
            Tensor::from_vec(k, (1, t, D), &Device::Cpu)?,
            Tensor::from_vec(v, (1, t, D), &Device::Cpu)?,
        ))
    }

    /// Appends text tokens `range` to every layer; returns the positions and layer 0's K, V.
    fn append(
        cache: &mut SinkCache,
        range: std::ops::Range<usize>,
    ) -> Result<(Vec<usize>, Tensor, Tensor)> {
        let pos = cache.begin_step(range.len())?;
        let angles = rope().angles(&pos)?;
        let (k, v) = kv(range)?;
        let mut out = None;
        for layer in 0..2 {
            let kv = cache.update(layer, &k, &v, &angles)?;
            out.get_or_insert(kv);
        }
        let (k_all, v_all) = out.context("two layers")?;
        Ok((pos, k_all, v_all))
    }

    /// Text token held in each returned row (read back from the values).
    fn tokens_of(v: &Tensor) -> Result<Vec<usize>> {
        Ok(v.narrow(2, 0, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|x| x as usize)
            .collect())
    }

    #[test]
    fn evicts_the_oldest_non_sink_token_one_at_a_time() -> Result<()> {
        let mut cache = SinkCache::new(config(4, 3), &geometry())?;
        for i in 0..9 {
            let (_, _, v) = append(&mut cache, i..i + 1)?;
            let mut held = tokens_of(&v)?;
            held.sort();
            let expect: Vec<usize> = (0..=i.min(3))
                .chain(4.max(i.saturating_sub(2))..=i)
                .collect();
            let expect: Vec<usize> = {
                let mut e = expect;
                e.dedup();
                e
            };
            assert_eq!(held, expect, "after token {i}");
            assert_eq!(cache.text_positions(), expect);
        }
        assert_eq!(cache.text_positions(), vec![0, 1, 2, 3, 6, 7, 8]);
        assert_eq!((cache.len(), cache.capacity(), cache.evicted()), (7, 7, 2));
        Ok(())
    }

    #[test]
    fn positions_are_assigned_inside_the_cache() -> Result<()> {
        // Window 4: after evicting 5 for space the cache holds [0,1,2,3,6,7,8], and token 9 is
        // decoded at position 7 with those keys at 0..6. The naive scheme says so literally;
        // the incremental one must give the same scores in its own frame.
        let mut naive =
            SinkCache::with_rotation(config(4, 4), &geometry(), Rotation::Naive(rope()))?;
        let mut fast = SinkCache::new(config(4, 4), &geometry())?;
        for i in 0..9 {
            append(&mut naive, i..i + 1)?;
            append(&mut fast, i..i + 1)?;
        }
        let (pos_naive, k_naive, v_naive) = append(&mut naive, 9..10)?;
        let (pos_fast, k_fast, v_fast) = append(&mut fast, 9..10)?;
        assert_eq!(pos_naive, vec![7]);
        assert_eq!(pos_fast, vec![9]);
        assert_eq!(naive.text_positions(), vec![0, 1, 2, 3, 6, 7, 8, 9]);
        let q = Tensor::new(&[[[0.3f32, -1.2, 0.8, 0.5]]], &Device::Cpu)?;
        let scores = |pos: &[usize], k: &Tensor, v: &Tensor| -> Result<Vec<(usize, f32)>> {
            let q = rope().rotate(&q, pos)?;
            let s = q.matmul(&k.t()?)?.flatten_all()?.to_vec1::<f32>()?;
            let mut s: Vec<(usize, f32)> = tokens_of(v)?.into_iter().zip(s).collect();
            s.sort_by_key(|x| x.0);
            Ok(s)
        };
        // The naive keys really are at 0..6 in text order (slot order is a permutation).
        let want = scores(&pos_naive, &k_naive, &v_naive)?;
        let got = scores(&pos_fast, &k_fast, &v_fast)?;
        assert_eq!(want.len(), 8);
        for ((ta, a), (tb, b)) in want.iter().zip(&got) {
            assert_eq!(ta, tb);
            assert!((a - b).abs() < 1e-4, "token {ta}: {a} vs {b}");
        }
        Ok(())
    }

    #[test]
    fn multi_token_appends_evict_for_space_and_keep_text_order() -> Result<()> {
        let mut cache = SinkCache::new(config(2, 5), &geometry())?;
        append(&mut cache, 0..4)?;
        let (pos, _, v) = append(&mut cache, 4..8)?;
        assert_eq!(pos, vec![4, 5, 6, 7]);
        assert_eq!(tokens_of(&v)?, vec![0, 1, 3, 4, 5, 6, 7]);
        let (_, _, v) = append(&mut cache, 8..11)?;
        assert_eq!(tokens_of(&v)?, vec![0, 1, 6, 7, 8, 9, 10]);
        let err = cache.begin_step(6).unwrap_err().to_string();
        assert!(err.contains("do not fit"), "{err}");
        Ok(())
    }

    #[test]
    fn trim_after_attends_over_one_more_entry() -> Result<()> {
        let cfg = SinkConfig {
            trim_after: true,
            ..config(4, 3)
        };
        let mut cache = SinkCache::new(cfg, &geometry())?;
        for i in 0..20 {
            let (_, _, v) = append(&mut cache, i..i + 1)?;
            assert_eq!(v.dim(1)?, (i + 1).min(8));
        }
        assert_eq!(cache.spec(), "sink:4+3,after");
        Ok(())
    }

    #[test]
    fn bytes_are_constant_once_the_cache_is_full() -> Result<()> {
        let mut cache = SinkCache::new(config(4, 12), &geometry())?;
        let mut seen = Vec::new();
        for i in 0..200 {
            append(&mut cache, i..i + 1)?;
            seen.push(cache.heap_bytes());
        }
        assert!(seen[16..].iter().all(|&b| b == seen[16]), "{seen:?}");
        // K and V: 2 layers x 16 slots x 4 floats, sinks before RoPE and shifted: 2 x 2 x 4 x 4,
        // four captured 4x4 rotations.
        assert_eq!(seen[16], (2 * 2 * 16 * D + 2 * 2 * 4 * D + 4 * D * D) * 4);
        cache.reset();
        assert_eq!((cache.heap_bytes(), cache.len()), (0, 0));
        Ok(())
    }

    #[test]
    fn refuses_caches_larger_than_the_context() {
        let err = SinkCache::new(config(4, 61), &geometry())
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than the model's context"), "{err}");
    }
}
