//! Helpers shared by the CLI integration tests: run the built `ferrite` binary and assert a
//! clean one-line failure.

use std::process::{Command, Output};

/// Runs the built binary with `args` (no `FERRITE_MODEL` from the environment).
pub fn ferrite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(args)
        .env_remove("FERRITE_MODEL")
        .output()
        .expect("run ferrite")
}

/// Asserts a clean failure whose single stderr line contains `needle`.
pub fn fails_with(args: &[&str], needle: &str) {
    let out = ferrite(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert_ne!(out.status.code(), Some(101), "{args:?} panicked: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {err}"
    );
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
}
