//! The `ferrite rl` command line, driven through clap exactly as the binary does.

use clap::Parser;
use ferrite_rl::cli::{run, RlArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    rl: RlArgs,
}

fn run_args(args: &[&str]) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("rl").chain(args.iter().copied()))?;
    run(cli.rl)
}

#[test]
fn solve_train_mrp_succeed() {
    run_args(&[
        "solve",
        "--env",
        "frozenlake-4x4",
        "--algo",
        "policy-iteration",
        "--json",
    ])
    .unwrap();
    run_args(&[
        "solve",
        "--env",
        "cliffwalking-tutorial",
        "--theta",
        "0.001",
    ])
    .unwrap();
    run_args(&["solve", "--env", "frozenlake-8x8", "--slippery", "false"]).unwrap();
    run_args(&[
        "train",
        "--env",
        "cliffwalking",
        "--algo",
        "sarsa,q-learning",
        "--episodes",
        "20",
        "--json",
    ])
    .unwrap();
    run_args(&["mrp", "--json"]).unwrap();
    run_args(&["mrp", "--episodes", "50"]).unwrap();
}

#[test]
fn train_writes_png_atomically() {
    let dir = std::env::temp_dir().join(format!("ferrite-rl-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("returns.png");
    let png_arg = png.to_string_lossy().to_string();
    run_args(&[
        "train",
        "--env",
        "cliffwalking-tutorial",
        "--algo",
        "dyna-q",
        "--planning-steps",
        "0,2",
        "--episodes",
        "30",
        "--runs",
        "2",
        "--target",
        "-50",
        "--plot",
        &png_arg,
    ])
    .unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_are_reported_not_panicked() {
    let cases: &[&[&str]] = &[
        &["solve", "--env", "nope"],
        &["solve", "--map", "/nonexistent/map.txt"],
        &["solve", "--env", "frozenlake-4x4", "--gamma", "2"],
        &["solve", "--env", "frozenlake-4x4", "--theta", "-1"],
        &["train", "--env", "cliffwalking", "--episodes", "0"],
        &["train", "--env", "cliffwalking", "--epsilon", "1.5"],
        &[
            "train",
            "--env",
            "cliffwalking",
            "--n",
            "0",
            "--algo",
            "nstep-sarsa",
        ],
        &[
            "train",
            "--env",
            "cliffwalking",
            "--plot",
            "/nonexistent/dir/x.png",
            "--episodes",
            "2",
        ],
    ];
    for args in cases {
        let err = run_args(args).unwrap_err();
        let msg = format!("{err:#}");
        assert!(!msg.contains('\n'), "{args:?}: {msg}");
    }
    // Bad flags are clap errors (the binary prints their first line).
    assert!(run_args(&["solve", "--algo", "dijkstra"]).is_err());
    assert!(run_args(&["train", "--slippery", "maybe"]).is_err());
    assert!(run_args(&["frobnicate"]).is_err());
}
