//! The surgery's full variant reproduces the runtime's forward pass on a tiny written model, so
//! the other variants cut the same computation.

use anyhow::Result;
use candle_core::quantized::GgmlDType;
use ferrite_llm::testing::{temp_dir, write_gguf, TinySpec};
use ferrite_llm::{load_model, ComputeDType, FullCache};
use ferrite_rank::surgery::{Net, Variant};

#[test]
fn full_variant_matches_the_runtime() -> Result<()> {
    let dir = temp_dir("rank-parity");
    let path = write_gguf(&dir.join("tiny.gguf"), &TinySpec::default(), GgmlDType::F32)?;
    let loaded = load_model(&path, ComputeDType::F32)?;
    let model = &loaded.model;
    let ids: Vec<u32> = (0..20).map(|i| (i * 7 % 200 + 3) as u32).collect();
    let mut cache = FullCache::new(&model.kv_geometry());
    let want = model.forward_hidden(&ids, &mut cache)?;
    let net = Net::from_llama(model)?;
    let x0 = model.embedding.forward(&ids, model.device())?;
    let trace = net.forward(&x0, Variant::Full, true)?;
    let got = model.norm.forward(trace.hidden.last().expect("layers"))?;
    let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(diff < 1e-4, "max |diff| = {diff}");
    assert_eq!(trace.attention.len(), 2);
    assert_eq!(trace.attention[0].dims(), &[4, 20, 20]);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
