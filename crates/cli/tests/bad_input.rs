//! Bad input gets a one-line error and a non-zero exit, never a panic.

use candle_core::quantized::GgmlDType;
use ferrite_llm::testing::{temp_dir, write_gguf, write_gguf_with, TinySpec};
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{fails_with, ferrite};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `ferrite chat` on `model` with `-n max_tokens`, feeding `input` on stdin.
fn chat(model: &Path, max_tokens: &str, input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["chat", "--model", s(model), "-n", max_tokens])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn bad_model_files() {
    let dir = temp_dir("cli-bad-model");
    fails_with(
        &["info", "--model", s(&dir.join("nope.gguf"))],
        "model not found",
    );
    let junk = dir.join("junk.gguf");
    std::fs::write(&junk, b"PK\x03\x04 definitely a zip").unwrap();
    fails_with(&["info", "--model", s(&junk)], "not a GGUF file");
    let good = write_gguf(
        &dir.join("good.gguf"),
        &TinySpec::default(),
        GgmlDType::Q8_0,
    )
    .unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() * 3 / 4]).unwrap();
    fails_with(&["info", "--model", s(&cut)], "truncated");
    let arch = write_gguf_with(
        &dir.join("mamba.gguf"),
        &TinySpec::default(),
        GgmlDType::F32,
        "mamba",
    )
    .unwrap();
    fails_with(
        &["generate", "--model", s(&arch), "-p", "hi"],
        "unsupported architecture `mamba`",
    );
}

#[test]
fn bad_text_prompt_and_flags() {
    let dir = temp_dir("cli-bad-input");
    let spec = TinySpec {
        context: 32,
        ..Default::default()
    };
    let model = write_gguf(&dir.join("m.gguf"), &spec, GgmlDType::F32).unwrap();
    let m = s(&model);
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "  \n").unwrap();
    fails_with(&["ppl", "--model", m, "--text", s(&empty)], "is empty");
    fails_with(
        &["ppl", "--model", m, "--text", s(&dir.join("missing.txt"))],
        "cannot read text",
    );
    let long = "the cat sat on the mat ".repeat(20);
    fails_with(
        &["generate", "--model", m, "-p", &long],
        "more than the context",
    );
    fails_with(
        &["generate", "--model", m, "-p", "hi", "--kv", "bogus:1"],
        "bad --kv spec",
    );
    fails_with(
        &["generate", "--model", m, "-p", "hi", "--temperature", "nan"],
        "--temperature",
    );
    fails_with(
        &["generate", "--model", m, "-p", "hi", "--dtype", "int3"],
        "--dtype",
    );
    fails_with(
        &["generate", "--model", m, "-p", "hi", "--threads", "0"],
        "--threads",
    );
    fails_with(
        &["ppl", "--model", m, "--text", s(&empty), "--ctx", "x"],
        "--ctx",
    );
}

#[test]
fn generate_json_reports_speed_and_kv_bytes() {
    let dir = temp_dir("cli-generate");
    let model = write_gguf(&dir.join("m.gguf"), &TinySpec::default(), GgmlDType::Q8_0).unwrap();
    let out = ferrite(&[
        "generate",
        "--model",
        s(&model),
        "-p",
        "the cat",
        "-n",
        "5",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["generated_tokens"].as_u64().unwrap() <= 5);
    assert!(v["kv_bytes_peak"].as_u64().unwrap() > 0);
    assert_eq!(v["kv_policy"], "full");
}

#[test]
fn chat_keeps_history_across_rounds() {
    let dir = temp_dir("cli-chat");
    let model = write_gguf(
        &dir.join("m.gguf"),
        &TinySpec {
            context: 256,
            ..Default::default()
        },
        GgmlDType::Q8_0,
    )
    .unwrap();
    let out = chat(&model, "4", b"hello\nthe cat\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let cached: Vec<usize> = err
        .lines()
        .filter_map(|l| l.split("KV cache ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(cached.len(), 2, "{err}");
    assert!(
        cached[1] > cached[0],
        "second round must extend the first: {cached:?}"
    );
}

#[test]
fn chat_says_when_the_context_is_full() {
    let dir = temp_dir("cli-chat-full");
    let model = write_gguf(
        &dir.join("m.gguf"),
        &TinySpec {
            context: 48,
            ..Default::default()
        },
        GgmlDType::Q8_0,
    )
    .unwrap();
    let out = chat(&model, "8", "the cat sat\n".repeat(6).as_bytes());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("context is full"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
