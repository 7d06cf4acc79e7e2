//! Prints ferrite's runtime figures beside `shared/reference/smollm2-hamlet.json` (REPRO.md):
//! tokenizer ids, top-10 logits of the reference prompt and the greedy continuation, on both
//! compute paths. usage: `cargo run --release -p ferrite-llm --example parity [MODEL] [REFERENCE]`
use anyhow::{Context, Result};
use ferrite_llm::sampling::argmax;
use ferrite_llm::{load_model, ComputeDType, FullCache};
use serde_json::{json, Value};

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().map_or(vec![], |a| {
        a.iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect()
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model = args
        .get(1)
        .map_or("models/SmolLM2-135M-Instruct.Q4_1.gguf", |s| s.as_str());
    let refp = args
        .get(2)
        .map_or("../shared/reference/smollm2-hamlet.json", |s| s.as_str());
    let r: Value = serde_json::from_str(&std::fs::read_to_string(refp).context("reference")?)?;
    let mut out = serde_json::Map::new();
    for dtype in [ComputeDType::F32, ComputeDType::Quantized] {
        let m = load_model(model.as_ref(), dtype)?;
        let probes = r["probe_ids"].as_object().context("probe_ids")?;
        let probes_ok = probes.iter().all(|(text, want)| {
            m.tokenizer
                .encode(text)
                .map(|got| got == ids(want))
                .unwrap_or(false)
        });
        let prompt = ids(&r["prompt_ids"]);
        let mut cache = FullCache::new(&m.model.kv_geometry());
        let logits = m.model.forward_last(&prompt, &mut cache)?;
        let top10 = r["prompt_top10"].as_array().context("prompt_top10")?;
        let top10_max_diff = top10
            .iter()
            .map(|p| {
                let id = p[0].as_u64().unwrap_or(0) as usize;
                (logits[id] as f64 - p[1].as_f64().unwrap_or(0.0)).abs()
            })
            .fold(0.0, f64::max);
        let want = ids(&r["greedy32_ids"]);
        let mut got = vec![argmax(&logits)];
        while got.len() < want.len() {
            got.push(argmax(
                &m.model.forward_last(&got[got.len() - 1..], &mut cache)?,
            ));
        }
        let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        out.insert(
            dtype.to_string(),
            json!({
                "probe_ids_identical": probes_ok,
                "top10_max_abs_logit_diff": top10_max_diff,
                "greedy_identical_prefix": same,
                "greedy_len": want.len(),
                "greedy_text": m.tokenizer.decode(&got)?,
            }),
        );
    }
    println!("{}", serde_json::to_string_pretty(&Value::Object(out))?);
    Ok(())
}
