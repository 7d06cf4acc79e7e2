//! `ferrite`: the command-line face of the ferrite libraries. Each subcommand is a thin layer
//! that parses flags, calls a library and prints text or `--json`.

mod commands;
mod common;
mod kv_spec;

use clap::{Parser, Subcommand};

/// Memory-lean LLM inference, pruning, diffusion and RL, in Rust.
#[derive(Parser)]
#[command(name = "ferrite", version, about, long_about = None)]
struct Cli {
    /// Worker threads for tensor kernels (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's architecture, sizes, tensor types and KV bytes per token.
    Info(commands::info::InfoArgs),
    /// Generate a continuation of a prompt, streaming tokens to stdout.
    Generate(commands::generate::GenerateArgs),
    /// Multi-round chat on stdin (ChatML), keeping the history in the KV cache.
    Chat(commands::chat::ChatArgs),
    /// Perplexity of a text, chunked or streaming through a KV-cache policy.
    Ppl(commands::ppl::PplArgs),
    /// One-shot pruning (SparseGPT, Wanda, magnitude), written as an HF directory.
    Prune(commands::prune::PruneArgs),
    /// Throughput benchmark: prompt processing and decode tokens/s, peak RSS.
    Bench(commands::bench::BenchArgs),
    /// OpenAI-compatible HTTP server: chat/completions with streaming, sessions, per-request KV.
    Serve(commands::serve::ServeArgs),
    /// RL basics: Markov reward processes, dynamic programming, Monte Carlo and TD control.
    Rl(ferrite_rl::cli::RlArgs),
    /// Attention rank collapse: residual per layer for SAN / SAN+skip / SAN+MLP / full, paths, Theorem 2.2 check.
    Rank(ferrite_rank::cli::RankArgs),
    /// Diffusion transformers on Fashion-MNIST: train, sample, eval (classifier-feature FID), info.
    Diffusion(commands::diffusion::DiffusionArgs),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            let _ = e.print();
            return;
        }
        Err(e) => {
            // One line: clap's first line names the bad flag or value.
            let msg = e.to_string();
            eprintln!(
                "{}",
                msg.lines().next().unwrap_or("error: invalid arguments")
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = common::set_threads(cli.threads) {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
    let result = match cli.command {
        Command::Info(a) => commands::info::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::Chat(a) => commands::chat::run(a),
        Command::Ppl(a) => commands::ppl::run(a),
        Command::Prune(a) => commands::prune::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Serve(a) => commands::serve::run(a),
        Command::Rl(a) => ferrite_rl::cli::run(a),
        Command::Rank(a) => ferrite_rank::cli::run(a),
        Command::Diffusion(a) => commands::diffusion::run(a),
    };
    if let Err(e) = result {
        // One line: the chain of contexts, outermost first.
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}
