//! StreamingLLM (Xiao et al. 2023, §3.2) over a GEAR-compressed window: `sink:S+W/gear:...`
//! keeps the `S` attention sinks exact and the `W` newest tokens in a [`CompressedStore`], so a
//! stream can run forever in a fraction of the memory of `sink:S+W`.
//!
//! **Whole-block eviction, token-exact window.** The store holds a contiguous run of text tokens,
//! compressed `n_b` at a time. Attention sees exactly what `sink:S+W` sees — the sinks and the `W`
//! newest tokens — but storage is freed a whole compressed block at a time: rows of the oldest
//! block that have left the window stay stored (dead) until the whole block has, and are then
//! dropped with [`CompressedStore::evict_oldest_block`]. The store therefore holds between `W`
//! and `W + n_b − 1` tokens once full, and its bytes cycle within one block's worth.
//!
//! **Positions (the problem of docs/gear.md).** GEAR stores keys after RoPE at their text
//! positions. Inside the window the text is contiguous, so window keys rotated at text positions
//! and a query rotated at its text position give exactly the in-cache distances StreamingLLM
//! assigns; eviction changes none of them. Only the sinks must move to sit just before the window:
//! once the window is full they sit a constant distance `D_j = S + W − 1 − j` before the newest
//! token, which is [`SinkShift`] — the same `O(S)` rotation `sink:S+W` uses, shared, not copied.
//! The sinks are kept exact (f32, before RoPE) for that rotation.
//!
//! **While the text fits** (at most `S + W` tokens, nothing evicted) the store holds every token
//! from position 0 and attention reads all of it, sinks included, from the store: the policy is
//! then the plain compressed cache step for step. From the first eviction on, the sinks come from
//! their exact copy (the store's compressed rows of those tokens are dead by then).
//!
//! Layout of the scratch a layer is dequantised into: the store's rows start at row `S`, so the
//! sinks can always be written into the `S` rows just before the first live row (over reserved or
//! dead rows) and the attended K/V is one contiguous view `[S + W]`.

use crate::policy::{materialise_layer, token_major, CompressedStore, GearSpec, Scratch};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use ferrite_llm::kv_cache::{KvCache, KvGeometry};
use ferrite_llm::rope::RopeAngles;
use ferrite_streaming::{SinkConfig, SinkShift};

/// One layer's exact sinks: keys before RoPE, values, and the shifted keys `R(-D_j) k_j`.
#[derive(Debug)]
struct ExactSinks {
    k_raw: Tensor,
    v: Tensor,
    k_shifted: Option<Tensor>,
}

/// `sink:S+W/gear:...`: attention sinks kept exact in front of a compressed window.
#[derive(Debug)]
pub struct SinkGearCache {
    window: SinkConfig,
    spec: GearSpec,
    stores: Vec<CompressedStore>,
    sinks: Vec<Option<ExactSinks>>,
    shift: SinkShift,
    n_kv_head: usize,
    head_dim: usize,
    device: Device,
    /// Tokens ever appended, and the first text position of the step in progress.
    seen: usize,
    step_start: Option<usize>,
    scratch: Scratch,
}

impl SinkGearCache {
    /// The composition of a sink window (evicting before attending) with a compressed store.
    pub fn new(window: SinkConfig, spec: GearSpec, geometry: &KvGeometry) -> Result<Self> {
        if !geometry.device.is_cpu() {
            bail!("the compressed KV cache runs on the CPU only");
        }
        if window.trim_after {
            bail!(
                "{}/{}: ,after is not supported over a compressed store",
                window.spec(),
                spec.name
            );
        }
        if window.window < spec.buffer {
            bail!(
                "{}: the window of {} tokens must hold at least one block of {} (buffer)",
                window.spec(),
                window.window,
                spec.buffer
            );
        }
        let held = window.sinks + window.window;
        if held > geometry.max_tokens {
            bail!(
                "{} holds {held} tokens, more than the model's context of {}",
                window.spec(),
                geometry.max_tokens
            );
        }
        Ok(Self {
            window,
            stores: spec.stores(geometry)?,
            spec,
            sinks: (0..geometry.n_layer).map(|_| None).collect(),
            shift: SinkShift::new(window.sinks, held, geometry.head_dim, &geometry.device),
            n_kv_head: geometry.n_kv_head,
            head_dim: geometry.head_dim,
            device: geometry.device.clone(),
            seen: 0,
            step_start: None,
            scratch: Scratch::default(),
        })
    }

    /// The per-layer stores of the window.
    pub fn stores(&self) -> &[CompressedStore] {
        &self.stores
    }

    /// Whether any window token has been evicted (the sinks are then read from their exact copy).
    pub fn evicting(&self) -> bool {
        self.seen > self.window.sinks + self.window.window
    }

    /// Text position of the oldest window token attended to.
    fn window_start(&self) -> usize {
        self.seen - self.window.window
    }

    /// Bytes an f16 cache of the tokens attended to would hold.
    pub fn f16_bytes(&self) -> usize {
        2 * self.stores.len() * self.len() * self.n_kv_head * self.head_dim * 2
    }

    /// Transient scratch K/V bytes (not part of [`KvCache::heap_bytes`]).
    pub fn scratch_bytes(&self) -> usize {
        self.scratch.heap_bytes()
    }

    /// Copies the new tokens that are sinks (text positions below `S`) into the exact copy.
    fn keep_sinks(&mut self, layer: usize, k: &Tensor, v: &Tensor, start: usize) -> Result<()> {
        let s = self.window.sinks;
        if start >= s {
            return Ok(());
        }
        let n = (s - start).min(k.dim(1)?);
        let (h, d) = (self.n_kv_head, self.head_dim);
        if self.sinks[layer].is_none() {
            let zeros = || Tensor::zeros((h, s, d), DType::F32, &self.device);
            self.sinks[layer] = Some(ExactSinks {
                k_raw: zeros()?,
                v: zeros()?,
                k_shifted: None,
            });
        }
        let sinks = self.sinks[layer].as_ref().context("allocated above")?;
        sinks.k_raw.slice_set(
            &k.narrow(1, 0, n)?.to_dtype(DType::F32)?.contiguous()?,
            1,
            start,
        )?;
        sinks.v.slice_set(
            &v.narrow(1, 0, n)?.to_dtype(DType::F32)?.contiguous()?,
            1,
            start,
        )?;
        Ok(())
    }

    /// Stores layer `layer`'s new tokens of the step in progress: the sinks among them exactly,
    /// all of them (keys rotated at their text positions) in the compressed window, then drops
    /// every compressed block whose tokens have all left the window.
    fn store_new(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        new_angles: &RopeAngles,
    ) -> Result<()> {
        let start = self.step_start.context("update called before begin_step")?;
        let n_layer = self.stores.len();
        if layer >= n_layer {
            bail!("layer {layer} out of range (model has {n_layer})");
        }
        let t = k.dim(1)?;
        if start + t != self.seen {
            bail!(
                "update of layer {layer} with {t} tokens does not match the step of {} tokens",
                self.seen - start
            );
        }
        self.keep_sinks(layer, k, v, start)?;
        self.shift.capture(new_angles)?;
        let k_rot = token_major(&new_angles.rotate(k)?)?;
        let evicting = self.evicting();
        let store = &mut self.stores[layer];
        store.append(&k_rot, &token_major(v)?, t > 1)?;
        if evicting {
            let (w0, n_b) = (self.seen - self.window.window, store.block_len());
            while store.n_blocks() > 0 && self.seen - store.len() + n_b <= w0 {
                store.evict_oldest_block();
            }
        }
        Ok(())
    }
}

impl KvCache for SinkGearCache {
    fn spec(&self) -> String {
        format!("{}/{}", self.window.spec(), self.spec.to_spec())
    }

    fn begin_step(&mut self, n_new: usize) -> Result<Vec<usize>> {
        if n_new == 0 {
            bail!("no tokens to append");
        }
        let new_sinks = n_new.min(self.window.sinks.saturating_sub(self.seen));
        if n_new - new_sinks > self.window.window {
            bail!(
                "{n_new} new tokens do not fit {}: at most {} can be appended at once",
                self.spec(),
                self.window.window + new_sinks
            );
        }
        let start = self.seen;
        self.seen += n_new;
        self.step_start = Some(start);
        Ok((start..self.seen).collect())
    }

    fn update(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        new_angles: &RopeAngles,
    ) -> Result<(Tensor, Tensor)> {
        self.store_new(layer, k, v, new_angles)?;
        let s = self.window.sinks;
        let evicting = self.evicting();
        let stored = self.stores[layer].len();
        let first_text = self.seen - stored;
        let kv = self
            .scratch
            .get(s + stored, self.n_kv_head, self.head_dim, &self.device)?;
        let (sk, sv) = materialise_layer(&self.stores[layer], &kv, s)?;
        if !evicting {
            return Ok((sk.narrow(1, s, stored)?, sv.narrow(1, s, stored)?));
        }
        // Sinks just before the first live row, which sits at scratch row S + (w0 - first_text).
        let at = self.window_start() - first_text;
        if s > 0 {
            let sinks = self.sinks[layer]
                .as_mut()
                .ok_or_else(|| anyhow!("the sinks of layer {layer} were never stored"))?;
            if sinks.k_shifted.is_none() {
                sinks.k_shifted = Some(self.shift.shift(&sinks.k_raw)?);
            }
            let shifted = sinks.k_shifted.as_ref().context("computed above")?;
            sk.slice_set(&SinkShift::rotate_to_newest(shifted, new_angles)?, 1, at)?;
            sv.slice_set(&sinks.v, 1, at)?;
        }
        let len = s + self.window.window;
        Ok((sk.narrow(1, at, len)?, sv.narrow(1, at, len)?))
    }

    /// While nothing has been evicted the composition is the plain store, so a decode step
    /// attends straight from its packed codes as [`crate::GearCache`] does; once evicting (sinks
    /// in front of a partly dead oldest block) it goes through the dequantised scratch.
    fn attend(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        new_angles: &RopeAngles,
        dense: &mut dyn FnMut(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        if q.dim(1)? != 1 || self.evicting() {
            let (k_all, v_all) = self.update(layer, k, v, new_angles)?;
            return dense(&k_all, &v_all);
        }
        self.store_new(layer, k, v, new_angles)?;
        crate::attention::attend_decode_tensor(&self.stores[layer], q)
    }

    fn len(&self) -> usize {
        self.seen.min(self.window.sinks + self.window.window)
    }

    fn capacity(&self) -> usize {
        self.window.sinks + self.window.window
    }

    fn heap_bytes(&self) -> usize {
        let tensor = |t: &Tensor| t.elem_count() * 4;
        let sinks: usize = self
            .sinks
            .iter()
            .flatten()
            .map(|x| tensor(&x.k_raw) + tensor(&x.v) + x.k_shifted.as_ref().map_or(0, tensor))
            .sum();
        self.stores
            .iter()
            .map(CompressedStore::heap_bytes)
            .sum::<usize>()
            + sinks
            + self.shift.heap_bytes()
    }

    fn reset(&mut self) {
        self.stores.iter_mut().for_each(CompressedStore::clear);
        self.sinks.iter_mut().for_each(|x| *x = None);
        self.shift.reset();
        self.seen = 0;
        self.step_start = None;
    }
}

/// Parses `sink:S+W/STORE` or `window:W/STORE` with `STORE` a compressed spec (`gear:4`, ...).
pub fn parse_spec(spec: &str) -> Result<(SinkConfig, GearSpec)> {
    let (window, store) = spec
        .split_once('/')
        .ok_or_else(|| anyhow!("bad --kv spec `{spec}` (expected sink:S+W/gear:B)"))?;
    let window = ferrite_streaming::parse_spec(window)?;
    let store = GearSpec::parse(store)?;
    Ok((window, store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composed_specs_parse_and_bad_ones_are_refused() -> Result<()> {
        let (w, g) = parse_spec("sink:4+2044/gear:4,rank=1")?;
        assert_eq!((w.sinks, w.window), (4, 2044));
        assert_eq!((g.name.as_str(), g.config.rank), ("gear", 1));
        let geometry = KvGeometry {
            n_layer: 1,
            n_kv_head: 1,
            head_dim: 8,
            max_tokens: 4096,
            device: Device::Cpu,
        };
        for bad in [
            "sink:4+2044",
            "sink:4+2044/",
            "sink:4+x/gear:4",
            "sink:4+2044/gear:9",
            "sink:4+2044,after/gear:4",
            "sink:4+32/gear:4",
            "sink:4+8000/gear:4",
        ] {
            let e = parse_spec(bad).and_then(|(w, g)| SinkGearCache::new(w, g, &geometry));
            let e = e.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(!e.is_empty() && !e.contains('\n'), "{bad}: {e}");
        }
        Ok(())
    }
}
