//! Value iteration (Sutton & Barto §4.4, eq. 4.10), the Bellman optimality
//! backup v_{k+1}(s) = max_a Σ_{s',r} p(s',r|s,a) [r + γ v_k(s')], swept
//! synchronously until max|v_{k+1} − v_k| < θ, then a greedy policy is read off
//! (ties share probability, as in the Hands-on-RL tutorial).

use crate::mdp::{q_value, Model};
use crate::mrp::max_abs_diff;
use crate::policy::Policy;
use crate::policy_iteration::check_params;
use anyhow::{bail, Result};

/// Outcome of value iteration.
#[derive(Debug, Clone)]
pub struct ValueIterationResult {
    /// Converged v* estimate.
    pub values: Vec<f64>,
    /// Greedy policy with respect to `values`.
    pub policy: Policy,
    /// Bellman optimality sweeps performed, including the last one that met the θ test.
    /// The tutorial prints `sweeps - 1` ("rounds" that did not yet meet the test).
    pub sweeps: usize,
}

impl ValueIterationResult {
    /// The tutorial's round counter: sweeps that still changed some value by ≥ θ.
    pub fn tutorial_rounds(&self) -> usize {
        self.sweeps.saturating_sub(1)
    }
}

/// Run value iteration with discount `gamma` and threshold `theta`.
pub fn value_iteration<M: Model + ?Sized>(
    model: &M,
    gamma: f64,
    theta: f64,
) -> Result<ValueIterationResult> {
    check_params(gamma, theta)?;
    const MAX_SWEEPS: usize = 1_000_000;
    let (ns, na) = (model.num_states(), model.num_actions());
    let mut v = vec![0.0; ns];
    let mut new_v = vec![0.0; ns];
    for sweeps in 1..=MAX_SWEEPS {
        for (s, nv) in new_v.iter_mut().enumerate() {
            let mut best = f64::NEG_INFINITY;
            for a in 0..na {
                best = best.max(q_value(model, &v, gamma, s, a));
            }
            *nv = if na == 0 { 0.0 } else { best };
        }
        let diff = max_abs_diff(&new_v, &v);
        std::mem::swap(&mut v, &mut new_v);
        if diff < theta {
            let policy = Policy::greedy(model, &v, gamma);
            return Ok(ValueIterationResult {
                values: v,
                policy,
                sweeps,
            });
        }
    }
    bail!("value iteration did not converge in {MAX_SWEEPS} sweeps (gamma = {gamma})")
}
