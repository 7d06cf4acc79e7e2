//! Policy iteration (Sutton & Barto §4.3): alternate iterative policy
//! evaluation (eq. 4.5) and greedy policy improvement π'(s) = argmax_a q_π(s,a)
//! (eq. 4.9) until the policy is stable.
//!
//! Matches the Hands-on-RL tutorial: start from the uniform random policy and
//! zero values, keep the values between evaluations (warm start), share
//! probability equally among tied maximising actions, and stop when the
//! improved policy equals the previous one exactly.

use crate::mdp::Model;
use crate::policy::Policy;
use crate::policy_evaluation::evaluate_policy;
use anyhow::{bail, Result};

/// Outcome of policy iteration.
#[derive(Debug, Clone)]
pub struct PolicyIterationResult {
    /// Final state values v_π*.
    pub values: Vec<f64>,
    /// Final (greedy, tie-sharing) policy.
    pub policy: Policy,
    /// Evaluation sweeps performed in each round of policy evaluation.
    pub evaluation_sweeps: Vec<usize>,
}

/// Run policy iteration with discount `gamma` and evaluation threshold `theta`.
pub fn policy_iteration<M: Model + ?Sized>(
    model: &M,
    gamma: f64,
    theta: f64,
) -> Result<PolicyIterationResult> {
    check_params(gamma, theta)?;
    const MAX_ROUNDS: usize = 10_000;
    const MAX_SWEEPS: usize = 1_000_000;
    let mut policy = Policy::uniform(model.num_states(), model.num_actions());
    let mut values = vec![0.0; model.num_states()];
    let mut evaluation_sweeps = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let eval = evaluate_policy(model, &policy, gamma, theta, values, MAX_SWEEPS);
        if !eval.converged {
            bail!("policy evaluation did not converge in {MAX_SWEEPS} sweeps (gamma = {gamma})");
        }
        evaluation_sweeps.push(eval.sweeps);
        values = eval.values;
        let improved = Policy::greedy(model, &values, gamma);
        if improved == policy {
            return Ok(PolicyIterationResult {
                values,
                policy,
                evaluation_sweeps,
            });
        }
        policy = improved;
    }
    bail!("policy iteration did not stabilise in {MAX_ROUNDS} rounds")
}

/// Shared parameter validation for the DP solvers.
pub(crate) fn check_params(gamma: f64, theta: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&gamma) {
        bail!("gamma must be in [0, 1], got {gamma}");
    }
    if !(theta > 0.0 && theta.is_finite()) {
        bail!("theta must be a positive number, got {theta}");
    }
    Ok(())
}
