//! The KV-cache seam: one trait that every cache policy implements.
//!
//! The model never touches cached tensors directly. For each forward pass it asks the policy
//! for the RoPE positions of the new tokens ([`KvCache::begin_step`]), then hands each layer's
//! new keys **before RoPE** and values to [`KvCache::update`] and attends over what comes back.
//! That single contract lets a policy
//! - assign positions inside the cache (StreamingLLM: positions are cache slots, not text
//!   offsets), because it decides both the query positions and how stored keys are rotated;
//! - keep its storage compressed (GEAR, KIVI) and return dequantised K/V for attention, or
//!   attend straight from what it stores ([`KvCache::attend`]);
//! - account for every byte it holds ([`KvCache::heap_bytes`]).

use crate::rope::RopeAngles;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

/// Shape of the K/V a model produces: what a policy needs to allocate storage.
#[derive(Debug, Clone)]
pub struct KvGeometry {
    /// Decoder blocks.
    pub n_layer: usize,
    /// Key/value heads per block.
    pub n_kv_head: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Tokens the model may attend over at once (its context length).
    pub max_tokens: usize,
    /// Device of the tensors.
    pub device: Device,
}

/// A KV-cache policy.
pub trait KvCache: Send {
    /// The spec string that recreates this policy (`full`, `sink:4+1020`, ...).
    fn spec(&self) -> String;

    /// Prepares to append `n_new` tokens to every layer: evicts whatever the policy must to make
    /// room and returns the RoPE positions of the new tokens. Errors when the tokens cannot fit.
    fn begin_step(&mut self, n_new: usize) -> Result<Vec<usize>>;

    /// Stores layer `layer`'s new keys (before RoPE) and values, both `[n_kv_head, t, head_dim]`,
    /// and returns K and V `[n_kv_head, L, head_dim]` over every token this layer may attend to,
    /// the `t` new ones last. Returned keys are rotated into the frame of `new_angles` (the
    /// angles of the positions from `begin_step`), which the model also uses for the queries.
    fn update(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        new_angles: &RopeAngles,
    ) -> Result<(Tensor, Tensor)>;

    /// Stores layer `layer`'s new keys and values like [`KvCache::update`] and returns the
    /// attention output `[t, n_head·head_dim]` of the queries `q: [n_head, t, head_dim]` (rotated
    /// with `new_angles`) over every token this layer may attend to. The default hands the K/V
    /// from `update` to `dense`, the model's own attention; a policy that holds no f32 K/V (a
    /// compressed store) overrides it to attend from what it stores.
    fn attend(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        new_angles: &RopeAngles,
        dense: &mut dyn FnMut(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let _ = q;
        let (k_all, v_all) = self.update(layer, k, v, new_angles)?;
        dense(&k_all, &v_all)
    }

    /// Tokens currently held (per layer).
    fn len(&self) -> usize;

    /// Whether no token is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most tokens the policy holds at once.
    fn capacity(&self) -> usize;

    /// Tokens that can still be appended before the policy refuses, or `None` when it streams
    /// forever (it evicts instead of refusing).
    fn remaining(&self) -> Option<usize> {
        None
    }

    /// Exact heap bytes of everything stored: tensors, codes, scales, indices, buffers.
    fn heap_bytes(&self) -> usize;

    /// Forgets every token.
    fn reset(&mut self);
}

/// Text positions of a policy that never evicts: token `i` sits at position `i`, up to the
/// model's context. Full and compressed stores share it for `begin_step`, `len`, `capacity`
/// and `remaining`.
#[derive(Debug, Clone)]
pub struct TextPositions {
    next: usize,
    max_tokens: usize,
}

impl TextPositions {
    /// No token yet, at most `max_tokens`.
    pub fn new(max_tokens: usize) -> Self {
        Self {
            next: 0,
            max_tokens,
        }
    }

    /// The next `n_new` positions; refuses to go past the context (the context is full).
    pub fn append(&mut self, n_new: usize) -> Result<Vec<usize>> {
        if self.next + n_new > self.max_tokens {
            bail!(
                "context is full: {} cached + {n_new} new tokens exceed the context of {} tokens",
                self.next,
                self.max_tokens
            );
        }
        let start = self.next;
        self.next += n_new;
        Ok((start..start + n_new).collect())
    }

    /// Tokens placed so far.
    pub fn len(&self) -> usize {
        self.next
    }

    /// Whether no token is placed.
    pub fn is_empty(&self) -> bool {
        self.next == 0
    }

    /// The context length.
    pub fn capacity(&self) -> usize {
        self.max_tokens
    }

    /// Tokens that still fit.
    pub fn remaining(&self) -> usize {
        self.max_tokens - self.next
    }

    /// Back to position 0.
    pub fn reset(&mut self) {
        self.next = 0;
    }
}

/// Growable `[n_kv_head, capacity, head_dim]` f32 buffer, extended in whole chunks so that
/// appending a token is an in-place write (no `cat` of the whole history every step).
#[derive(Debug)]
pub struct ChunkedBuffer {
    data: Option<Tensor>,
    len: usize,
    chunk: usize,
}

impl ChunkedBuffer {
    /// An empty buffer that grows `chunk` tokens at a time.
    pub fn new(chunk: usize) -> Self {
        Self {
            data: None,
            len: 0,
            chunk: chunk.max(1),
        }
    }

    /// Appends `x: [heads, t, dim]` and returns the view of all `len` rows.
    pub fn append(&mut self, x: &Tensor) -> Result<Tensor> {
        let (heads, t, dim) = x.dims3()?;
        let needed = self.len + t;
        let cap = self.data.as_ref().map_or(0, |d| d.dim(1).unwrap_or(0));
        if needed > cap {
            let new_cap = needed.div_ceil(self.chunk) * self.chunk;
            let grown = Tensor::zeros((heads, new_cap, dim), DType::F32, x.device())?;
            if let Some(old) = &self.data {
                if self.len > 0 {
                    grown.slice_set(&old.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                }
            }
            self.data = Some(grown);
        }
        let data = self.data.as_ref().expect("allocated above");
        data.slice_set(&x.to_dtype(DType::F32)?.contiguous()?, 1, self.len)?;
        self.len = needed;
        Ok(data.narrow(1, 0, self.len)?)
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `len` rows held, if any.
    pub fn view(&self) -> Result<Option<Tensor>> {
        match &self.data {
            Some(d) if self.len > 0 => Ok(Some(d.narrow(1, 0, self.len)?)),
            _ => Ok(None),
        }
    }

    /// Allocated bytes (capacity, not just the rows used).
    pub fn heap_bytes(&self) -> usize {
        self.data.as_ref().map_or(0, |d| d.elem_count() * 4)
    }

    /// Drops the rows but keeps the allocation.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops the allocation too.
    pub fn free(&mut self) {
        self.len = 0;
        self.data = None;
    }
}

/// `full`: keeps every token up to the model's context, keys stored after RoPE at their text
/// positions `0, 1, 2, ...`, f32, preallocated in chunks.
#[derive(Debug)]
pub struct FullCache {
    keys: Vec<ChunkedBuffer>,
    values: Vec<ChunkedBuffer>,
    positions: TextPositions,
}

/// Tokens added to a [`FullCache`] layer's allocation at a time.
pub const FULL_CACHE_CHUNK: usize = 256;

impl FullCache {
    /// A cache for a model of this geometry.
    pub fn new(geometry: &KvGeometry) -> Self {
        let buffers = || {
            (0..geometry.n_layer)
                .map(|_| ChunkedBuffer::new(FULL_CACHE_CHUNK))
                .collect()
        };
        Self {
            keys: buffers(),
            values: buffers(),
            positions: TextPositions::new(geometry.max_tokens),
        }
    }
}

impl KvCache for FullCache {
    fn spec(&self) -> String {
        "full".into()
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
        let k = new_angles.rotate(k)?;
        Ok((self.keys[layer].append(&k)?, self.values[layer].append(v)?))
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
        self.keys
            .iter()
            .chain(&self.values)
            .map(ChunkedBuffer::heap_bytes)
            .sum()
    }

    fn reset(&mut self) {
        self.keys.iter_mut().for_each(ChunkedBuffer::free);
        self.values.iter_mut().for_each(ChunkedBuffer::free);
        self.positions.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RopeStyle;
    use crate::rope::Rope;

    fn geometry(max_tokens: usize) -> KvGeometry {
        KvGeometry {
            n_layer: 2,
            n_kv_head: 2,
            head_dim: 4,
            max_tokens,
            device: Device::Cpu,
        }
    }

    #[test]
    fn full_cache_grows_in_chunks_and_keeps_order() -> Result<()> {
        let g = geometry(1000);
        let rope = Rope::new(10_000.0, 4, RopeStyle::Interleaved, &Device::Cpu);
        let mut cache = FullCache::new(&g);
        let mut total = 0;
        for (step, t) in [3usize, 1, 300].into_iter().enumerate() {
            let pos = cache.begin_step(t)?;
            assert_eq!(pos, (total..total + t).collect::<Vec<_>>());
            let angles = rope.angles(&pos)?;
            for layer in 0..2 {
                let v = Tensor::full(step as f32, (2, t, 4), &Device::Cpu)?;
                let (k_all, v_all) = cache.update(layer, &v, &v, &angles)?;
                assert_eq!(k_all.dims3()?, (2, total + t, 4));
                let last = v_all.narrow(1, total, t)?.flatten_all()?.to_vec1::<f32>()?;
                assert!(last.iter().all(|&x| x == step as f32));
            }
            total += t;
        }
        assert_eq!(cache.len(), 304);
        // two layers, K and V, 512 rows allocated (chunks of 256), 2 heads x 4 dims x 4 bytes.
        assert_eq!(cache.heap_bytes(), 2 * 2 * 512 * 2 * 4 * 4);
        Ok(())
    }

    #[test]
    fn full_cache_refuses_to_overflow_the_context() {
        let mut cache = FullCache::new(&geometry(8));
        assert!(cache.begin_step(8).is_ok());
        let err = cache.begin_step(1).unwrap_err().to_string();
        assert!(err.contains("context is full"), "{err}");
    }
}
