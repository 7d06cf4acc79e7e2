//! `ferrite rl train`: TD control averaged over seeds, with a return-curve plot.

use super::{render, EnvArgs};
use crate::plot::{plot_returns, Series};
use crate::policy::Policy;
use crate::td::{greedy_rollout, train, Algo, TdParams, TrainConfig};
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// TD control algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrainAlgo {
    /// One-step Sarsa.
    Sarsa,
    /// n-step Sarsa (see --n).
    NstepSarsa,
    /// Q-learning.
    QLearning,
    /// Dyna-Q (see --planning-steps).
    DynaQ,
}

/// Arguments of `ferrite rl train`.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// Environment selection.
    #[command(flatten)]
    pub env: EnvArgs,
    /// Algorithm(s), comma-separated; each becomes one curve.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "q-learning")]
    pub algo: Vec<TrainAlgo>,
    /// Episodes per run.
    #[arg(long, default_value_t = 500)]
    pub episodes: usize,
    /// Seed of the first run; run k uses seed + k.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Independent runs (seeds) to average over.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// ε of the ε-greedy policy.
    #[arg(long, default_value_t = 0.1)]
    pub epsilon: f64,
    /// Step size α.
    #[arg(long, default_value_t = 0.1)]
    pub alpha: f64,
    /// Discount γ.
    #[arg(long, default_value_t = 0.9)]
    pub gamma: f64,
    /// n for n-step Sarsa.
    #[arg(long, default_value_t = 5)]
    pub n: usize,
    /// Dyna-Q planning steps per real step, comma-separated (one curve each).
    #[arg(long, value_delimiter = ',', default_value = "5")]
    pub planning_steps: Vec<usize>,
    /// Report the first episode at which the 10-episode moving average of the mean return reaches this.
    #[arg(long, allow_negative_numbers = true)]
    pub target: Option<f64>,
    /// Safety cap on steps per episode (as truncation) for environments without a time limit.
    #[arg(long, default_value_t = 100_000)]
    pub max_steps: usize,
    /// Write the mean return curves to this PNG.
    #[arg(long, value_name = "PNG")]
    pub plot: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Expand the CLI choices into concrete algorithms.
fn algos(args: &TrainArgs) -> Result<Vec<Algo>> {
    if args.n == 0 {
        bail!("--n must be at least 1");
    }
    let mut out = Vec::new();
    for a in &args.algo {
        match a {
            TrainAlgo::Sarsa => out.push(Algo::Sarsa),
            TrainAlgo::NstepSarsa => out.push(Algo::NStepSarsa { n: args.n }),
            TrainAlgo::QLearning => out.push(Algo::QLearning),
            TrainAlgo::DynaQ => out.extend(
                args.planning_steps
                    .iter()
                    .map(|&planning_steps| Algo::DynaQ { planning_steps }),
            ),
        }
    }
    Ok(out)
}

/// First index i with mean(values[i..i+w]) >= target.
fn first_reaching(values: &[f64], w: usize, target: f64) -> Option<usize> {
    values
        .windows(w)
        .position(|win| win.iter().sum::<f64>() / w as f64 >= target)
}

/// Run the subcommand.
pub fn run(args: &TrainArgs) -> Result<()> {
    if args.episodes == 0 || args.runs == 0 {
        bail!("--episodes and --runs must be at least 1");
    }
    let base = args.env.make()?;
    let params = TdParams {
        epsilon: args.epsilon,
        alpha: args.alpha,
        gamma: args.gamma,
    };
    params.validate()?;
    let rollout_cap = base.max_episode_steps.unwrap_or(1000);
    let mut curves = Vec::new();
    let mut reports = Vec::new();
    for algo in algos(args)? {
        let mut mean = vec![0.0; args.episodes];
        let (mut greedy, mut reached, mut steps) = (Vec::new(), Vec::new(), 0);
        let mut first_policy = None;
        let t0 = Instant::now();
        for run in 0..args.runs {
            let seed = args.seed + run as u64;
            let mut env = base.clone();
            let cfg = TrainConfig {
                params,
                episodes: args.episodes,
                seed,
                max_steps: args.max_steps,
            };
            let r = train(&mut env, algo, &cfg)?;
            for (m, g) in mean.iter_mut().zip(&r.returns) {
                *m += g / args.runs as f64;
            }
            steps += r.steps;
            let roll = greedy_rollout(&mut env, &r.q, seed, rollout_cap);
            greedy.push(roll.ret);
            reached.push(roll.terminated);
            first_policy
                .get_or_insert_with(|| Policy::greedy_from_q(r.q.as_slice(), r.q.num_actions()));
        }
        let seconds = t0.elapsed().as_secs_f64();
        let last = &mean[mean.len().saturating_sub(10)..];
        let last10 = last.iter().sum::<f64>() / last.len() as f64;
        let greedy_mean = greedy.iter().sum::<f64>() / greedy.len() as f64;
        let reach_at = args
            .target
            .and_then(|t| first_reaching(&mean, 10.min(mean.len()), t));
        reports.push((
            algo,
            last10,
            greedy_mean,
            greedy.clone(),
            reached.clone(),
            reach_at,
            steps,
            seconds,
            first_policy,
        ));
        curves.push(Series {
            label: algo.label(),
            values: mean,
        });
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "{} on {} (mean of {} runs)",
            labels(&curves),
            base.name,
            args.runs
        );
        plot_returns(path, &title, &curves)?;
    }
    if args.json {
        let series: Vec<_> = reports
            .iter()
            .zip(&curves)
            .map(
                |((algo, last10, gmean, greedy, reached, at, steps, secs, _), c)| {
                    json!({
                        "algo": algo.label(),
                        "mean_returns": c.values,
                        "last10_mean_return": last10,
                        "greedy_return_mean": gmean,
                        "greedy_returns": greedy,
                        "greedy_reached_goal": reached,
                        "target_reached_at_episode": at,
                        "env_steps": steps,
                        "seconds": secs,
                    })
                },
            )
            .collect();
        let out = json!({
            "env": base.name,
            "episodes": args.episodes,
            "runs": args.runs,
            "seed": args.seed,
            "epsilon": args.epsilon,
            "alpha": args.alpha,
            "gamma": args.gamma,
            "target": args.target,
            "series": series,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{}: {} episodes x {} runs (seeds {}..{}), epsilon {}, alpha {}, gamma {}",
        base.name,
        args.episodes,
        args.runs,
        args.seed,
        args.seed + args.runs as u64 - 1,
        args.epsilon,
        args.alpha,
        args.gamma
    );
    for (algo, last10, gmean, greedy, reached, at, steps, secs, policy) in &reports {
        let ok = reached.iter().filter(|&&r| r).count();
        println!("== {}", algo.label());
        println!("  mean return of the last 10 episodes: {last10:.2}");
        println!(
            "  greedy policy return: mean {gmean:.2} over {} runs ({ok} reached a terminal state); per run: {:?}",
            greedy.len(),
            greedy
        );
        if let Some(t) = args.target {
            match at {
                Some(e) => println!("  10-episode mean return first >= {t} at episode {e}"),
                None => println!("  10-episode mean return never reached {t}"),
            }
        }
        println!("  {steps} environment steps in {secs:.3} s");
        if let Some(p) = policy {
            println!("  greedy policy of the first run:");
            for line in render::policy_grid(&base.layout, p).lines() {
                println!("    {line}");
            }
        }
    }
    if let Some(path) = &args.plot {
        println!("plot written to {}", path.display());
    }
    Ok(())
}

fn labels(curves: &[Series]) -> String {
    if curves.len() == 1 {
        curves[0].label.clone()
    } else {
        "TD control".into()
    }
}
