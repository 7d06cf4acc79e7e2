//! Iterative policy evaluation (Sutton & Barto §4.1, eq. 4.5):
//! v_{k+1}(s) = Σ_a π(a|s) Σ_{s',r} p(s',r|s,a) [r + γ v_k(s')].
//!
//! Sweeps are synchronous (a fresh vector per sweep, the "two-array" version),
//! and stop after the first sweep whose max|v_{k+1} − v_k| < θ — the
//! Hands-on-RL tutorial's `max_diff < theta` test, so its sweep counts reproduce.

use crate::mdp::{q_value, Model};
use crate::mrp::max_abs_diff;
use crate::policy::Policy;

/// Result of an evaluation run.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// v_π estimate, one per state.
    pub values: Vec<f64>,
    /// Number of sweeps performed (including the final one that met the θ test).
    pub sweeps: usize,
    /// False when `max_sweeps` ran out before the θ test passed.
    pub converged: bool,
}

/// Evaluate `policy` starting from `v0` (pass zeros for a cold start).
pub fn evaluate_policy<M: Model + ?Sized>(
    model: &M,
    policy: &Policy,
    gamma: f64,
    theta: f64,
    v0: Vec<f64>,
    max_sweeps: usize,
) -> Evaluation {
    let (ns, na) = (model.num_states(), model.num_actions());
    let mut v = v0;
    let mut new_v = vec![0.0; ns];
    let mut sweeps = 0;
    while sweeps < max_sweeps {
        sweeps += 1;
        for (s, nv) in new_v.iter_mut().enumerate() {
            let mut acc = 0.0;
            for a in 0..na {
                acc += policy.prob(s, a) * q_value(model, &v, gamma, s, a);
            }
            *nv = acc;
        }
        let diff = max_abs_diff(&new_v, &v);
        std::mem::swap(&mut v, &mut new_v);
        if diff < theta {
            return Evaluation {
                values: v,
                sweeps,
                converged: true,
            };
        }
    }
    Evaluation {
        values: v,
        sweeps,
        converged: false,
    }
}
