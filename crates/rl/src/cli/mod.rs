//! `ferrite rl …` — the command line for the RL-basics crate.
//!
//! * `solve`: policy iteration or value iteration on a named environment or a map file.
//! * `train`: Sarsa, n-step Sarsa, Q-learning or Dyna-Q, averaged over seeds, with a PNG plot.
//! * `mrp`: the Hands-on-RL chapter-3 Markov reward process / MDP examples.

/// `writeln!` into a `String` buffer (formatting into a `String` cannot fail).
macro_rules! outln {
    ($buf:expr) => {{
        $buf.push('\n');
    }};
    ($buf:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($buf, $($arg)*);
    }};
}

/// `write!` into a `String` buffer.
macro_rules! outp {
    ($buf:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = write!($buf, $($arg)*);
    }};
}

mod mrp;
mod render;
mod solve;
mod train;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

pub use mrp::MrpArgs;
pub use solve::{SolveAlgo, SolveArgs};
pub use train::{TrainAlgo, TrainArgs};

/// Arguments of `ferrite rl`.
#[derive(Debug, Args)]
pub struct RlArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RlCommand,
}

/// `ferrite rl` subcommands.
#[derive(Debug, Subcommand)]
pub enum RlCommand {
    /// Solve an environment's MDP by dynamic programming (policy or value iteration).
    Solve(SolveArgs),
    /// Learn a policy by TD control (Sarsa, n-step Sarsa, Q-learning, Dyna-Q).
    Train(TrainArgs),
    /// The tutorial's Markov reward process and MDP examples (values, MC, occupancy).
    Mrp(MrpArgs),
}

/// Which environment to build.
#[derive(Debug, Clone, Args)]
pub struct EnvArgs {
    /// Environment: cliffwalking (gymnasium's), cliffwalking-tutorial, frozenlake-4x4, frozenlake-8x8.
    #[arg(long)]
    pub env: Option<String>,
    /// Slippery dynamics (default: true for FrozenLake and maps, false for CliffWalking).
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub slippery: Option<bool>,
    /// A text map (S start, F or '.' free, H hole, G goal) with FrozenLake rules, instead of --env.
    #[arg(long, value_name = "FILE", conflicts_with = "env")]
    pub map: Option<PathBuf>,
}

impl EnvArgs {
    /// Build the environment.
    pub fn make(&self) -> Result<crate::env::TabularEnv> {
        crate::env::make(self.env.as_deref(), self.slippery, self.map.as_deref())
    }
}

/// Write `text` to stdout; a closed pipe (e.g. `| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to stdout"),
    }
}

/// Run `ferrite rl`.
pub fn run(args: RlArgs) -> Result<()> {
    match args.command {
        RlCommand::Solve(a) => solve::run(&a),
        RlCommand::Train(a) => train::run(&a),
        RlCommand::Mrp(a) => mrp::run(&a),
    }
}
