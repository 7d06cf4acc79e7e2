//! ferrite-gear: KV-cache compression for ferrite's runtime.
//!
//! GEAR (Kang et al. 2024) stores each block of K/V as a bit-packed quantised backbone, sparse
//! outliers and a low-rank approximation of the residual; KIVI (Liu et al. 2024) is the backbone
//! alone with per-channel keys and per-token values. Both are one policy here,
//! [`policy::GearCache`], parameterised by its components:
//! - [`pack`]: bit packing of 2/3/4/8-bit codes;
//! - [`quantize`]: group-wise uniform asymmetric quantisation;
//! - [`kivi`]: the backbone (KIVI groups or GEAR's KCVT);
//! - [`outliers`]: the sparse outliers;
//! - [`low_rank`]: power iteration + QR for the residual;
//! - [`gear`]: the composition of one block;
//! - [`attention`]: decode attention read straight from the packed store;
//! - [`policy`]: the streaming store, the [`ferrite_llm::KvCache`] implementation and spec strings;
//! - [`streaming`]: StreamingLLM's attention sinks over a compressed window (`sink:S+W/gear:B`).

pub mod attention;
pub mod gear;
pub mod kivi;
pub mod low_rank;
pub mod outliers;
pub mod pack;
pub mod policy;
pub mod quantize;
pub mod streaming;

pub use gear::GearConfig;
pub use policy::{CompressedStore, GearCache, GearSpec, MemoryBreakdown, PRESETS};
pub use streaming::SinkGearCache;

use anyhow::Result;
use ferrite_llm::{KvCache, KvGeometry};

/// Builds the compressed policy named by `spec` (`quant:4`, `kivi:2`, `gear:4`,
/// `gear:bits=2,group=64,rank=4,outlier=0.02,buffer=64`, ...), or its composition with a sink
/// window, `sink:S+W/gear:...` / `window:W/gear:...`.
pub fn build(spec: &str, geometry: &KvGeometry) -> Result<Box<dyn KvCache>> {
    if spec.contains('/') {
        let (window, store) = streaming::parse_spec(spec)?;
        return Ok(Box::new(SinkGearCache::new(window, store, geometry)?));
    }
    Ok(Box::new(GearCache::new(GearSpec::parse(spec)?, geometry)?))
}
