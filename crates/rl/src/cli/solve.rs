//! `ferrite rl solve`: dynamic programming on an environment's model.

use super::{emit, render, EnvArgs};
use crate::policy_iteration::policy_iteration;
use crate::value_iteration::value_iteration;
use anyhow::Result;
use clap::{Args, ValueEnum};
use serde_json::json;

/// DP algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SolveAlgo {
    /// Policy evaluation + greedy improvement until stable.
    PolicyIteration,
    /// Bellman optimality sweeps.
    ValueIteration,
}

/// Arguments of `ferrite rl solve`.
#[derive(Debug, Clone, Args)]
pub struct SolveArgs {
    /// Environment selection.
    #[command(flatten)]
    pub env: EnvArgs,
    /// Algorithm.
    #[arg(long, value_enum, default_value = "value-iteration")]
    pub algo: SolveAlgo,
    /// Discount factor γ.
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    pub gamma: f64,
    /// Convergence threshold θ (stop after the first sweep with max|ΔV| < θ).
    #[arg(long, default_value_t = 1e-5, allow_negative_numbers = true)]
    pub theta: f64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Run the subcommand.
pub fn run(args: &SolveArgs) -> Result<()> {
    let mut buf = String::new();
    let env = args.env.make()?;
    let layout = &env.layout;
    let (values, policy, sweeps_text, sweeps_json) = match args.algo {
        SolveAlgo::PolicyIteration => {
            let r = policy_iteration(&env, args.gamma, args.theta)?;
            let list: Vec<String> = r.evaluation_sweeps.iter().map(|s| s.to_string()).collect();
            let text = format!(
                "policy iteration: {} rounds, evaluation sweeps per round: {}",
                r.evaluation_sweeps.len(),
                list.join(", ")
            );
            let js = json!({ "evaluation_sweeps": r.evaluation_sweeps });
            (r.values, r.policy, text, js)
        }
        SolveAlgo::ValueIteration => {
            let r = value_iteration(&env, args.gamma, args.theta)?;
            let text = format!(
                "value iteration: {} sweeps ({} rounds by the tutorial's counter, which omits the final sweep)",
                r.sweeps,
                r.tutorial_rounds()
            );
            let js = json!({ "sweeps": r.sweeps, "tutorial_rounds": r.tutorial_rounds() });
            (r.values, r.policy, text, js)
        }
    };
    if args.json {
        let arrows: Vec<String> = (0..values.len())
            .map(|s| render::arrows(layout, &policy, s))
            .collect();
        let doc = json!({
            "env": env.name,
            "algo": args.algo.to_possible_value().map(|v| v.get_name().to_string()),
            "gamma": args.gamma,
            "theta": args.theta,
            "nrow": layout.nrow,
            "ncol": layout.ncol,
            "action_arrows": layout.arrows.iter().collect::<String>(),
            "values": values,
            "policy": arrows,
            "stats": sweeps_json,
        });
        outln!(buf, "{}", serde_json::to_string_pretty(&doc)?);
    } else {
        outln!(
            buf,
            "{} (gamma = {}, theta = {})",
            env.name,
            args.gamma,
            args.theta
        );
        outln!(buf, "{sweeps_text}");
        outln!(buf, "state values:");
        outp!(buf, "{}", render::value_grid(layout, &values));
        outln!(
            buf,
            "policy (actions {}):",
            layout.arrows.iter().collect::<String>()
        );
        outp!(buf, "{}", render::policy_grid(layout, &policy));
    }
    emit(&buf)
}
