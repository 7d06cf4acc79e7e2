//! `ferrite rank` without building the whole CLI: `cargo run --release -p ferrite-rank --example
//! rank -- <flags>` takes the same flags.

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ferrite_rank::cli::RankArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = ferrite_rank::cli::run(cli.args) {
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}
