//! `ferrite ppl --stream --kv sink:S+W/gear:B` streams past a tiny model's context at bounded
//! bytes, through the CLI.

use candle_core::quantized::GgmlDType;
use ferrite_llm::testing::{temp_dir, write_gguf, TinySpec};
use std::process::Command;

#[test]
fn ppl_streams_past_the_context_over_a_compressed_window() {
    let dir = temp_dir("cli-sink-gear");
    let model = write_gguf(&dir.join("m.gguf"), &TinySpec::default(), GgmlDType::F32).unwrap();
    let text = dir.join("t.txt");
    std::fs::write(&text, "the cat sat on the mat; ".repeat(40)).unwrap();
    let run = |kv: &str| -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
            .args(["ppl", "--stream", "--json", "--model"])
            .arg(&model)
            .arg("--text")
            .arg(&text)
            .args(["--max-tokens", "500", "--kv", kv])
            .output()
            .expect("run ferrite");
        assert!(
            out.status.success(),
            "{kv}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let composed = run("sink:4+60/gear:4,buffer=16");
    let exact = run("sink:4+60");
    // The tiny model's context is 128 tokens.
    assert_eq!(composed["tokens_scored"], 499);
    let ppl = composed["ppl"].as_f64().unwrap();
    assert!(ppl.is_finite() && ppl > 1.0, "{ppl}");
    let spec = composed["kv_policy"].as_str().unwrap();
    assert!(spec.starts_with("sink:4+60/gear:bits=4"), "{spec}");
    let (bytes, exact_bytes) = (
        composed["kv_bytes_peak"].as_u64().unwrap(),
        exact["kv_bytes_peak"].as_u64().unwrap(),
    );
    assert!(bytes < exact_bytes, "{bytes} vs {exact_bytes}");
}
