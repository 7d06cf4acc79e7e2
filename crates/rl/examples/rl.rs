//! Stand-alone front end for `ferrite rl` until the main binary wires it in:
//! `cargo run --release -p ferrite-rl --example rl -- solve --env frozenlake-4x4`.

use clap::Parser;
use ferrite_rl::cli::{run, RlArgs};

#[derive(Parser)]
#[command(name = "rl", about = "ferrite RL basics")]
struct Cli {
    #[command(flatten)]
    rl: RlArgs,
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            let _ = e.print();
            return;
        }
        Err(e) => {
            let msg = e.to_string();
            eprintln!("{}", msg.lines().next().unwrap_or("invalid arguments"));
            std::process::exit(2);
        }
    };
    if let Err(e) = run(cli.rl) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
