//! ferrite-streaming: StreamingLLM (Xiao et al. 2023, "Efficient Streaming Language Models with
//! Attention Sinks") on ferrite's KV-cache seam.
//!
//! - [`sink::SinkCache`]: `sink:S+W` (attention sinks + rolling window) and `window:W` (no
//!   sinks), with positions assigned inside the cache and an `O(S)` per-step rotation;
//! - [`recompute`]: the sliding window with re-computation, the paper's quality and speed
//!   baseline;
//! - [`curve`]: running-perplexity curves (CSV and PNG) of long streams, and [`Metered`], which
//!   records a policy's heap bytes after every step.

pub mod curve;
pub mod recompute;
pub mod sink;

pub use sink::{Rotation, SinkCache, SinkConfig, SinkShift};

use anyhow::{bail, Context, Result};
use ferrite_llm::kv_cache::{KvCache, KvGeometry};
use ferrite_llm::rope::RopeAngles;

/// Parses `sink:S+W` or `window:W`, optionally followed by `,after` (evict after attending, as
/// the reference implementation does).
pub fn parse_spec(spec: &str) -> Result<SinkConfig> {
    let bad =
        || format!("bad --kv spec `{spec}` (expected sink:S+W or window:W, optionally ,after)");
    let (body, trim_after) = match spec.strip_suffix(",after") {
        Some(body) => (body, true),
        None => (spec, false),
    };
    let (name, args) = body.split_once(':').with_context(bad)?;
    let number = |s: &str| s.trim().parse::<usize>().with_context(bad);
    let (sinks, window) = match name {
        "sink" => {
            let (s, w) = args.split_once('+').with_context(bad)?;
            (number(s)?, number(w)?)
        }
        "window" => (0, number(args)?),
        _ => bail!(bad()),
    };
    if window == 0 {
        bail!("bad --kv spec `{spec}`: the window must hold at least 1 token");
    }
    Ok(SinkConfig {
        sinks,
        window,
        trim_after,
    })
}

/// Builds the policy named by a `sink:` or `window:` spec.
pub fn build(spec: &str, geometry: &KvGeometry) -> Result<Box<dyn KvCache>> {
    Ok(Box::new(SinkCache::new(parse_spec(spec)?, geometry)?))
}

/// A policy that records its heap bytes at the start of every step: `bytes()[n]` is the
/// footprint after `n` steps.
pub struct Metered {
    inner: Box<dyn KvCache>,
    bytes: Vec<usize>,
}

impl Metered {
    /// Wraps a policy.
    pub fn new(inner: Box<dyn KvCache>) -> Self {
        Self {
            inner,
            bytes: Vec::new(),
        }
    }

    /// Heap bytes after each step so far, then the current footprint.
    pub fn bytes(&self) -> Vec<usize> {
        let mut b = self.bytes.clone();
        b.push(self.inner.heap_bytes());
        b
    }
}

impl KvCache for Metered {
    fn spec(&self) -> String {
        self.inner.spec()
    }
    fn begin_step(&mut self, n_new: usize) -> Result<Vec<usize>> {
        self.bytes.push(self.inner.heap_bytes());
        self.inner.begin_step(n_new)
    }
    fn update(
        &mut self,
        layer: usize,
        k: &candle_core::Tensor,
        v: &candle_core::Tensor,
        new_angles: &RopeAngles,
    ) -> Result<(candle_core::Tensor, candle_core::Tensor)> {
        self.inner.update(layer, k, v, new_angles)
    }
    fn attend(
        &mut self,
        layer: usize,
        q: &candle_core::Tensor,
        k: &candle_core::Tensor,
        v: &candle_core::Tensor,
        new_angles: &RopeAngles,
        dense: &mut dyn FnMut(
            &candle_core::Tensor,
            &candle_core::Tensor,
        ) -> Result<candle_core::Tensor>,
    ) -> Result<candle_core::Tensor> {
        self.inner.attend(layer, q, k, v, new_angles, dense)
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
    fn remaining(&self) -> Option<usize> {
        self.inner.remaining()
    }
    fn heap_bytes(&self) -> usize {
        self.inner.heap_bytes()
    }
    fn reset(&mut self) {
        self.bytes.clear();
        self.inner.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_garbage_is_refused() -> Result<()> {
        let c = parse_spec("sink:4+1020")?;
        assert_eq!((c.sinks, c.window, c.trim_after), (4, 1020, false));
        assert_eq!(c.spec(), "sink:4+1020");
        let c = parse_spec("window:256,after")?;
        assert_eq!((c.sinks, c.window, c.trim_after), (0, 256, true));
        assert_eq!(c.spec(), "window:256,after");
        for bad in [
            "sink",
            "sink:4",
            "sink:4+",
            "sink:x+3",
            "window:0",
            "sink:4+0",
            "win:3",
            "sink:4+4,before",
        ] {
            assert!(parse_spec(bad).is_err(), "{bad}");
        }
        Ok(())
    }
}
