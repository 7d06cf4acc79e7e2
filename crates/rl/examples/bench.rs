//! Timing harness behind the "Benchmarks" table of docs/rl.md:
//! Q-learning for 500 episodes on CliffWalking (tutorial variant and gymnasium's) with
//! ε = 0.1, α = 0.1, γ = 0.9, and value iteration on FrozenLake 8x8 (θ = 1e-5, γ = 0.9).
//! Each figure is the median (and minimum) over `REPS` repetitions with different seeds.
//!
//! `cargo run --release -p ferrite-rl --example bench [-- REPS]`

use ferrite_rl::env::{cliff_walking, frozen_lake};
use ferrite_rl::td::{train, Algo, TdParams, TrainConfig};
use ferrite_rl::value_iteration::value_iteration;
use std::time::Instant;

fn stats(mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], xs[0])
}

fn main() -> anyhow::Result<()> {
    let reps: usize = match std::env::args().nth(1) {
        Some(s) => s
            .parse()
            .map_err(|e| anyhow::anyhow!("REPS must be a number: {e}"))?,
        None => 200,
    };
    let params = TdParams {
        epsilon: 0.1,
        alpha: 0.1,
        gamma: 0.9,
    };
    for (label, env) in [
        ("tutorial CliffWalking", cliff_walking::tutorial()?),
        (
            "gymnasium CliffWalking-v1",
            cliff_walking::gymnasium(false)?,
        ),
    ] {
        let mut times = Vec::with_capacity(reps);
        let mut steps = 0;
        for seed in 0..reps as u64 {
            let mut env = env.clone();
            let cfg = TrainConfig {
                params,
                episodes: 500,
                seed,
                max_steps: 100_000,
            };
            let t0 = Instant::now();
            let r = train(&mut env, Algo::QLearning, &cfg)?;
            times.push(t0.elapsed().as_secs_f64());
            steps += r.steps;
        }
        let (med, min) = stats(times);
        println!(
            "rust q-learning 500 episodes, {label}: median {:.3} ms (min {:.3} ms), {} steps/run on average",
            med * 1e3,
            min * 1e3,
            steps / reps
        );
    }
    let env = frozen_lake::named("8x8", true)?;
    let mut times = Vec::with_capacity(reps);
    let mut last = None;
    for _ in 0..reps {
        let t0 = Instant::now();
        let r = value_iteration(&env, 0.9, 1e-5)?;
        times.push(t0.elapsed().as_secs_f64());
        last = Some(r);
    }
    let (med, min) = stats(times);
    if let Some(r) = last {
        println!(
            "rust value iteration FrozenLake 8x8 (theta 1e-5, gamma 0.9): median {:.4} ms (min {:.4} ms), {} rounds, V[0] = {:.6}",
            med * 1e3,
            min * 1e3,
            r.tutorial_rounds(),
            r.values[0]
        );
    }
    Ok(())
}
