//! `ferrite diffusion` end to end on the installed Fashion-MNIST (a 3-step run on 64 images):
//! train, resume, sample a grid PNG, info; and bad input gets one line of error, never a panic.

use std::path::PathBuf;
use std::process::{Command, Output};

fn ferrite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["--threads", "2"])
        .args(args)
        .output()
        .expect("run ferrite")
}

fn ok(args: &[&str]) -> String {
    let out = ferrite(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails_with(args: &[&str], needle: &str) {
    let out = ferrite(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {err}"
    );
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrite-diffusion-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn train_resume_sample_and_info() {
    let dir = temp_dir();
    let ck = dir.join("tiny.safetensors");
    let ck = ck.to_str().unwrap();
    let tiny = [
        "--train-images",
        "64",
        "--batch-size",
        "8",
        "--checkpoint",
        ck,
        "--quiet",
        "--json",
    ];
    let run = |steps: &str, resume: bool| -> serde_json::Value {
        let mut args = vec!["diffusion", "train", "--steps", steps];
        args.extend(tiny);
        if resume {
            args.push("--resume");
        }
        serde_json::from_str(&ok(&args)).unwrap()
    };
    let first = run("2", false);
    assert_eq!(first["step"], 2);
    let resumed = run("3", true);
    assert_eq!(resumed["step"], 3);
    assert_eq!(resumed["steps_this_session"], 1);
    assert!(std::path::Path::new(resumed["loss_plot"].as_str().unwrap()).exists());

    let grid = dir.join("grid.png");
    let out = ok(&[
        "diffusion",
        "sample",
        "--checkpoint",
        ck,
        "--per-class",
        "2",
        "--steps",
        "2",
        "--guidance-scale",
        "2",
        "--out",
        grid.to_str().unwrap(),
        "--quiet",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["images"], 20);
    let png = std::fs::read(&grid).unwrap();
    assert_eq!(&png[1..4], b"PNG");

    let info = ok(&["diffusion", "info", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["designs"].as_array().unwrap().len(), 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_one_line() {
    let dir = temp_dir();
    fails_with(
        &[
            "diffusion",
            "train",
            "--data",
            "/nonexistent",
            "--steps",
            "1",
        ],
        "dataset-fashion-mnist",
    );
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    fails_with(
        &[
            "diffusion",
            "sample",
            "--checkpoint",
            junk.to_str().unwrap(),
        ],
        "checkpoint",
    );
    fails_with(
        &[
            "diffusion",
            "sample",
            "--checkpoint",
            dir.join("missing").to_str().unwrap(),
        ],
        "cannot read checkpoint",
    );
    fails_with(
        &["diffusion", "info", "--preset", "cpu-huge"],
        "unknown DiT preset",
    );
    fails_with(
        &["diffusion", "train", "--patch-size", "5", "--steps", "1"],
        "patch size",
    );
    fails_with(&["diffusion", "sample", "--sampler", "plms"], "plms");
}
