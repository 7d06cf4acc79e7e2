//! `ferrite prune` end to end on a tiny written model, and its bad-input errors (one line,
//! non-zero exit, no panic).

use candle_core::quantized::GgmlDType;
use ferrite_llm::testing::{temp_dir, write_gguf, TinySpec};

mod common;
use common::{fails_with, ferrite};

fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(extra).copied().collect()
}

#[test]
fn prune_writes_a_loadable_model_and_refuses_bad_input() {
    let dir = temp_dir("cli-prune");
    let gguf = write_gguf(&dir.join("m.gguf"), &TinySpec::default(), GgmlDType::F32).unwrap();
    let text = dir.join("calib.txt");
    std::fs::write(&text, "the cat sat on the mat in the hat\n".repeat(40)).unwrap();
    let (m, t, out) = (
        gguf.to_str().unwrap(),
        text.to_str().unwrap(),
        dir.join("out"),
    );
    let o = out.to_str().unwrap();
    let ok = ferrite(&[
        "prune",
        "--model",
        m,
        "--method",
        "sparsegpt",
        "--nm",
        "2:4",
        "--calib",
        t,
        "--nsamples",
        "2",
        "--seqlen",
        "16",
        "--out",
        o,
        "--json",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["report"]["total_sparsity"], 0.5);
    let info = ferrite(&["info", "--model", o]);
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );

    let base = ["prune", "--model", m, "--out", o];

    fails_with(
        &with(&base, &["--sparsity", "1.5"]),
        "sparsity must be in [0, 1)",
    );
    fails_with(&with(&base, &["--nm", "2-4"]), "bad N:M");
    fails_with(&with(&base, &["--nm", "4:4"]), "0 < N < M");
    fails_with(&with(&base, &[]), "give --sparsity");
    fails_with(
        &with(
            &base,
            &[
                "--sparsity",
                "0.5",
                "--method",
                "wanda",
                "--calib",
                "/nope.txt",
            ],
        ),
        "cannot read calibration text",
    );
    fails_with(
        &with(&base, &["--sparsity", "0.5", "--format", "zip"]),
        "unknown storage format",
    );
    fails_with(
        &with(
            &base,
            &[
                "--sparsity",
                "0.5",
                "--method",
                "wanda",
                "--calib",
                t,
                "--seqlen",
                "100000",
            ],
        ),
        "calibration",
    );
    fails_with(
        &[
            "prune",
            "--model",
            "/nope.gguf",
            "--sparsity",
            "0.5",
            "--out",
            o,
        ],
        "model not found",
    );
}
