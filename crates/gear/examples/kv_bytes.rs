//! Exact bytes of a compressed cache holding N tokens appended one at a time (as in `ferrite ppl
//! --stream`), for SmolLM2-135M's geometry (30 layers, 3 KV heads of 64), by component. The sizes
//! of codes, scales, outliers (a fixed count per stripe) and factors do not depend on the data, so
//! random K/V give the same bytes as the model's.
//!
//! `cargo run --release -p ferrite-gear --example kv_bytes -- 4095 gear:4 'gear:4,tails=1,rank=0,exact=f16'`

use anyhow::{Context, Result};
use ferrite_gear::{CompressedStore, GearSpec, MemoryBreakdown};
use rand::{Rng, SeedableRng};

const N_LAYER: usize = 30;
const CHANNELS: usize = 3 * 64;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let tokens: usize = args
        .next()
        .context("usage: kv_bytes TOKENS SPEC...")?
        .parse()
        .context("TOKENS must be a whole number")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let x: Vec<f32> = (0..tokens * CHANNELS)
        .map(|_| rng.gen_range(-2.0f32..2.0))
        .collect();
    let f16 = 2 * N_LAYER * tokens * CHANNELS * 2;
    println!("tokens\tspec\tkv_bytes\tavg_kv_size_vs_f16\tcodes\tscales\toutliers\tlow_rank\tbuffer\tmetadata\tblocks_only_vs_f16");
    for spec in args {
        let s = GearSpec::parse(&spec)?;
        // Every layer holds the same structure; one layer's store times N_LAYER.
        let mut store = CompressedStore::new(s.config.clone(), s.buffer, CHANNELS, 64, 0)?;
        for row in x.chunks(CHANNELS) {
            store.append(row, row, false)?;
        }
        let b = store.breakdown();
        let m = MemoryBreakdown {
            codes: b.codes * N_LAYER,
            scales: b.scales * N_LAYER,
            outliers: b.outliers * N_LAYER,
            low_rank: b.low_rank * N_LAYER,
            buffer: b.buffer * N_LAYER,
            // The cache's list of per-layer stores, as `GearCache` counts it.
            metadata: (b.metadata + std::mem::size_of::<CompressedStore>()) * N_LAYER,
        };
        let in_blocks = store.n_blocks() * s.buffer;
        let blocks_f16 = (2 * N_LAYER * in_blocks * CHANNELS * 2).max(1);
        println!(
            "{tokens}\t{spec}\t{}\t{:.4}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.4}",
            m.total(),
            m.total() as f64 / f16 as f64,
            m.codes,
            m.scales,
            m.outliers,
            m.low_rank,
            m.buffer,
            m.metadata,
            (m.total() - m.buffer) as f64 / blocks_f16 as f64
        );
    }
    Ok(())
}
