//! `ferrite rl train`: TD control averaged over seeds, with a return-curve plot.

use super::{emit, render, EnvArgs};
use crate::env::TabularEnv;
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
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub epsilon: f64,
    /// Step size α.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub alpha: f64,
    /// Discount γ.
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
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

/// Everything measured for one algorithm over all runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeriesReport {
    /// Algorithm label.
    pub algo: String,
    /// Mean (over runs) undiscounted return per episode.
    pub mean_returns: Vec<f64>,
    /// Mean of the last 10 entries of `mean_returns`.
    pub last10_mean_return: f64,
    /// Return of the greedy policy of each run (capped roll-out).
    pub greedy_returns: Vec<f64>,
    /// Whether each run's greedy roll-out terminated.
    pub greedy_reached_terminal: Vec<bool>,
    /// (return, number of runs) pairs, sorted by return.
    pub greedy_return_counts: Vec<(f64, usize)>,
    /// Greedy path (states) of the first run.
    pub first_run_greedy_path: Vec<usize>,
    /// First episode whose 10-episode window of `mean_returns` reaches `--target`.
    pub target_reached_at_episode: Option<usize>,
    /// Total environment steps.
    pub env_steps: usize,
    /// Wall time of all runs (training + roll-outs).
    pub seconds: f64,
    #[serde(skip)]
    first_policy: Option<Policy>,
}

/// Train `algo` for all runs and summarise.
fn measure(
    args: &TrainArgs,
    base: &TabularEnv,
    algo: Algo,
    params: TdParams,
) -> Result<SeriesReport> {
    let rollout_cap = base.max_episode_steps.unwrap_or(1000);
    let mut mean = vec![0.0; args.episodes];
    let (mut greedy, mut reached, mut steps) = (Vec::new(), Vec::new(), 0);
    let (mut first_policy, mut first_path) = (None, None);
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
        first_path.get_or_insert(roll.path);
        first_policy
            .get_or_insert_with(|| Policy::greedy_from_q(r.q.as_slice(), r.q.num_actions()));
    }
    let seconds = t0.elapsed().as_secs_f64();
    let last = &mean[mean.len().saturating_sub(10)..];
    let last10_mean_return = last.iter().sum::<f64>() / last.len() as f64;
    let mut counts: Vec<(f64, usize)> = Vec::new();
    for &g in &greedy {
        match counts.iter_mut().find(|(v, _)| *v == g) {
            Some((_, c)) => *c += 1,
            None => counts.push((g, 1)),
        }
    }
    counts.sort_by(|a, b| b.0.total_cmp(&a.0));
    let target_reached_at_episode = args
        .target
        .and_then(|t| first_reaching(&mean, 10.min(mean.len()), t));
    Ok(SeriesReport {
        algo: algo.label(),
        mean_returns: mean,
        last10_mean_return,
        greedy_returns: greedy,
        greedy_reached_terminal: reached,
        greedy_return_counts: counts,
        first_run_greedy_path: first_path.unwrap_or_default(),
        target_reached_at_episode,
        env_steps: steps,
        seconds,
        first_policy,
    })
}

/// Run the subcommand.
pub fn run(args: &TrainArgs) -> Result<()> {
    let mut buf = String::new();
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
    let reports = algos(args)?
        .into_iter()
        .map(|algo| measure(args, &base, algo, params))
        .collect::<Result<Vec<_>>>()?;
    if let Some(path) = &args.plot {
        let curves: Vec<Series> = reports
            .iter()
            .map(|r| Series {
                label: r.algo.clone(),
                values: r.mean_returns.clone(),
            })
            .collect();
        let what = match reports.as_slice() {
            [one] => one.algo.clone(),
            many if many.iter().all(|r| r.algo.starts_with("dyna-q")) => "Dyna-Q".to_string(),
            _ => "TD control".to_string(),
        };
        let title = format!("{what} on {} (mean of {} runs)", base.name, args.runs);
        plot_returns(path, &title, &curves)?;
    }
    if args.json {
        let doc = json!({
            "env": base.name,
            "episodes": args.episodes,
            "runs": args.runs,
            "seed": args.seed,
            "epsilon": args.epsilon,
            "alpha": args.alpha,
            "gamma": args.gamma,
            "target": args.target,
            "plot": args.plot,
            "series": reports,
        });
        outln!(buf, "{}", serde_json::to_string_pretty(&doc)?);
        return emit(&buf);
    }
    outln!(
        buf,
        "{}: {} episodes x {} runs (seeds {}..={}), epsilon {}, alpha {}, gamma {}",
        base.name,
        args.episodes,
        args.runs,
        args.seed,
        args.seed + args.runs as u64 - 1,
        args.epsilon,
        args.alpha,
        args.gamma
    );
    for r in &reports {
        print_report(&mut buf, args, &base, r);
    }
    if let Some(path) = &args.plot {
        outln!(buf, "plot written to {}", path.display());
    }
    emit(&buf)
}

fn print_report(buf: &mut String, args: &TrainArgs, base: &TabularEnv, r: &SeriesReport) {
    let ok = r.greedy_reached_terminal.iter().filter(|&&x| x).count();
    let counts: Vec<String> = r
        .greedy_return_counts
        .iter()
        .map(|(g, c)| format!("{g} x{c}"))
        .collect();
    outln!(buf, "== {}", r.algo);
    outln!(
        buf,
        "  mean return of the last 10 episodes: {:.2}",
        r.last10_mean_return
    );
    outln!(
        buf,
        "  greedy-policy return per run: {} ({ok}/{} runs reach a terminal state)",
        counts.join(", "),
        r.greedy_returns.len()
    );
    if let Some(t) = args.target {
        match r.target_reached_at_episode {
            Some(e) => outln!(buf, "  10-episode mean return first >= {t} at episode {e}"),
            None => outln!(buf, "  10-episode mean return never reached {t}"),
        }
    }
    outln!(
        buf,
        "  {} environment steps in {:.3} s",
        r.env_steps,
        r.seconds
    );
    let path: Vec<String> = r
        .first_run_greedy_path
        .iter()
        .take(40)
        .map(|s| s.to_string())
        .collect();
    let more = if r.first_run_greedy_path.len() > 40 {
        " ..."
    } else {
        ""
    };
    outln!(
        buf,
        "  greedy path of the first run: {}{more}",
        path.join(" ")
    );
    if let Some(p) = &r.first_policy {
        outln!(buf, "  greedy policy of the first run:");
        for line in render::policy_grid(&base.layout, p).lines() {
            outln!(buf, "    {line}");
        }
    }
}
