//! `ferrite rl mrp`: the tutorial's chapter-3 examples end to end.

use super::emit;
use crate::mdp::{action_values, to_mrp};
use crate::monte_carlo::{mc_evaluate, sample_episodes, Visit};
use crate::occupancy::{exact_occupancy, sampled_occupancy, Normalise};
use crate::tutorial;
use anyhow::Result;
use clap::Args;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

/// Arguments of `ferrite rl mrp`.
#[derive(Debug, Clone, Args)]
pub struct MrpArgs {
    /// Seed for the Monte-Carlo samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampled episodes for Monte-Carlo evaluation and the occupancy estimate.
    #[arg(long, default_value_t = 1000)]
    pub episodes: usize,
    /// Maximum steps per sampled episode for Monte-Carlo evaluation.
    #[arg(long, default_value_t = 20)]
    pub max_steps: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn fmt(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
    format!("[{}]", parts.join(", "))
}

/// Run the subcommand.
pub fn run(args: &MrpArgs) -> Result<()> {
    let mut buf = String::new();
    let mrp = tutorial::example_mrp()?;
    let chain_return = mrp.chain_return(&[0, 1, 2, 5], 0);
    let analytic = mrp.analytic_values()?;
    let (iterative, sweeps) = mrp.iterative_values(1e-10, 100_000);

    let gamma = 0.5;
    let mdp = tutorial::example_mdp()?;
    let pi1 = tutorial::policy_1(&mdp);
    let pi2 = tutorial::policy_2();
    let mdp_values = to_mrp(&mdp, &pi1, gamma)?.analytic_values()?;
    let q = action_values(&mdp, &mdp_values, gamma);
    let mut rng = StdRng::seed_from_u64(args.seed);
    let start = tutorial::mdp_start();
    let episodes = sample_episodes(&mdp, &pi1, &start, args.max_steps, args.episodes, &mut rng);
    let every = mc_evaluate(&episodes, 5, gamma, Visit::Every).values;
    let first = mc_evaluate(&episodes, 5, gamma, Visit::First).values;

    // Occupancy of (s4, random) under both policies, as in the tutorial.
    let (s4, random) = (3, 6);
    let mut occ = Vec::new();
    for (name, pi) in [("policy 1", &pi1), ("policy 2", &pi2)] {
        let exact = exact_occupancy(&mdp, pi, &start, gamma)?[s4 * 7 + random];
        let eps = sample_episodes(&mdp, pi, &start, 1000, args.episodes, &mut rng);
        let sampled = sampled_occupancy(&eps, s4, random, gamma, Normalise::Episodes);
        let alive = sampled_occupancy(&eps, s4, random, gamma, Normalise::AliveAtStep);
        occ.push((name, exact, sampled, alive));
    }

    if args.json {
        let doc = json!({
            "mrp": {
                "gamma": mrp.gamma, "rewards": mrp.r,
                "chain_s1_s2_s3_s6_return": chain_return,
                "values_analytic": analytic,
                "values_iterative": iterative, "iterative_sweeps": sweeps,
            },
            "mdp": {
                "gamma": gamma,
                "values_policy_1": mdp_values,
                "action_values_policy_1": q,
                "mc_every_visit": every, "mc_first_visit": first,
                "mc_episodes": args.episodes, "seed": args.seed,
                "occupancy_s4_random": occ.iter().map(|(n, e, s, a)| json!({
                    "policy": n, "exact": e, "sampled": s, "sampled_tutorial_estimator": a
                })).collect::<Vec<_>>(),
            }
        });
        outln!(buf, "{}", serde_json::to_string_pretty(&doc)?);
        return emit(&buf);
    }
    outln!(
        buf,
        "Markov reward process (6 states, gamma = {}, R = {:?})",
        mrp.gamma,
        mrp.r
    );
    outln!(buf, "  return of s1-s2-s3-s6: {chain_return}");
    outln!(buf, "  V analytic  (I - gamma P)^-1 R: {}", fmt(&analytic));
    outln!(
        buf,
        "  V iterative ({sweeps} sweeps):      {}",
        fmt(&iterative)
    );
    outln!(
        buf,
        "MDP (5 states, gamma = {gamma}) under the uniform policy 1"
    );
    outln!(buf, "  V via MRP folding: {}", fmt(&mdp_values));
    let names = &mdp.action_names;
    for s in 0..4 {
        let qs: Vec<String> = (0..7)
            .filter(|&a| mdp.available(s, a))
            .map(|a| format!("Q(s{}, {}) = {:.4}", s + 1, names[a], q[s * 7 + a]))
            .collect();
        outln!(buf, "  {}", qs.join(", "));
    }
    outln!(
        buf,
        "  MC every-visit ({} episodes, seed {}): {}",
        args.episodes,
        args.seed,
        fmt(&every)
    );
    outln!(
        buf,
        "  MC first-visit ({} episodes, seed {}): {}",
        args.episodes,
        args.seed,
        fmt(&first)
    );
    for (name, exact, sampled, alive) in occ {
        outln!(
            buf,
            "  occupancy rho(s4, random) under {name}: exact {exact:.4}, sampled {sampled:.4} \
             (tutorial's alive-normalised estimator {alive:.4})"
        );
    }
    emit(&buf)
}
