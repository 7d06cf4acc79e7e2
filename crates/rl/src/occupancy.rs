//! Occupancy measure ρ^π(s,a) = (1 − γ) Σ_t γ^t P(S_t = s, A_t = a | π, ν₀)
//! (Hands-on-RL ch. 3; Syed et al. 2008; Puterman §6.9 dual LP variables).
//!
//! Exact: the discounted state distribution solves d = (1 − γ)ν₀ + γP_πᵀd,
//! i.e. d = (1 − γ)(I − γP_πᵀ)⁻¹ν₀, and ρ(s,a) = d(s)π(a|s); terminating
//! transitions leave the chain (no action is taken after the end).
//! Sampled: replace P(S_t = s, A_t = a) by the fraction of episodes with
//! (s_t, a_t) = (s, a).

use crate::mdp::{to_mrp, Model};
use crate::monte_carlo::Episode;
use crate::policy::Policy;
use anyhow::{bail, Result};
use faer::prelude::Solve;
use faer::Mat;

/// Exact occupancy measure, row-major |S|·|A|.
pub fn exact_occupancy<M: Model + ?Sized>(
    model: &M,
    policy: &Policy,
    start: &[f64],
    gamma: f64,
) -> Result<Vec<f64>> {
    let n = model.num_states();
    if start.len() != n {
        bail!(
            "start distribution has {} entries for {n} states",
            start.len()
        );
    }
    if !(0.0..1.0).contains(&gamma) {
        bail!("the occupancy measure needs gamma in [0, 1), got {gamma}");
    }
    let mrp = to_mrp(model, policy, gamma)?;
    let a = Mat::<f64>::from_fn(n, n, |i, j| {
        let eye = if i == j { 1.0 } else { 0.0 };
        eye - gamma * mrp.p[j][i]
    });
    let b = Mat::<f64>::from_fn(n, 1, |i, _| (1.0 - gamma) * start[i]);
    let d = a.partial_piv_lu().solve(&b);
    let na = model.num_actions();
    Ok((0..n * na)
        .map(|i| d[(i / na, 0)] * policy.prob(i / na, i % na))
        .collect())
}

/// How the sampled estimate normalises the count at time step t.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalise {
    /// Divide by the number of episodes (unbiased for the definition above).
    Episodes,
    /// Divide by the number of episodes still running at step t (the tutorial's estimator).
    AliveAtStep,
}

/// Sampled estimate of ρ(s, a) from episodes that all start from ν₀.
pub fn sampled_occupancy(
    episodes: &[Episode],
    s: usize,
    a: usize,
    gamma: f64,
    how: Normalise,
) -> f64 {
    let horizon = episodes.iter().map(|e| e.len()).max().unwrap_or(0);
    let mut alive = vec![0usize; horizon];
    let mut hits = vec![0usize; horizon];
    for ep in episodes {
        for (t, step) in ep.iter().enumerate() {
            alive[t] += 1;
            if step.s == s && step.a == a {
                hits[t] += 1;
            }
        }
    }
    let mut rho = 0.0;
    let mut discount = 1.0;
    for t in 0..horizon {
        let denom = match how {
            Normalise::Episodes => episodes.len(),
            Normalise::AliveAtStep => alive[t],
        };
        if denom > 0 {
            rho += discount * hits[t] as f64 / denom as f64;
        }
        discount *= gamma;
    }
    (1.0 - gamma) * rho
}
