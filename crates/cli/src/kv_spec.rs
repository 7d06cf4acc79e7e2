//! Parses `--kv` spec strings into cache policies. Each policy crate adds its prefix here.

use anyhow::{bail, Result};
use ferrite_llm::{FullCache, KvCache, KvGeometry};

/// Builds the cache policy named by `spec` (`full`, ...). `WINDOW/STORE` composes a sink window
/// with a compressed store (`sink:4+2044/gear:4`).
pub fn build(spec: &str, geometry: &KvGeometry) -> Result<Box<dyn KvCache>> {
    if spec.contains('/') {
        return ferrite_gear::build(spec, geometry);
    }
    let (name, _args) = spec.split_once(':').unwrap_or((spec, ""));
    match name {
        "full" if !spec.contains(':') => Ok(Box::new(FullCache::new(geometry))),
        "sink" | "window" => ferrite_streaming::build(spec, geometry),
        "quant" | "kivi" | "gear" => ferrite_gear::build(spec, geometry),
        _ => bail!("bad --kv spec `{spec}` (known policies: full)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn geometry() -> KvGeometry {
        KvGeometry {
            n_layer: 1,
            n_kv_head: 1,
            head_dim: 2,
            max_tokens: 16,
            device: candle_core::Device::Cpu,
        }
    }

    #[test]
    fn full_parses_and_garbage_is_refused() {
        assert_eq!(build("full", &geometry()).unwrap().spec(), "full");
        for bad in ["", "ful", "full:3", "sink:x"] {
            assert!(build(bad, &geometry()).is_err(), "{bad}");
        }
    }
}
