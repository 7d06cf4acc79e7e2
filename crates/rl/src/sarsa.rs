//! Sarsa, on-policy TD control (Sutton & Barto eq. 6.7):
//! Q(S,A) ← Q(S,A) + α[R + γQ(S',A') − Q(S,A)], with Q(S',·) = 0 at termination.

use crate::q_table::QTable;
use crate::td::{Experience, TdParams, TdUpdate};
use rand::rngs::StdRng;

/// One-step Sarsa.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sarsa;

impl TdUpdate for Sarsa {
    fn on_policy(&self) -> bool {
        true
    }

    fn update(&mut self, q: &mut QTable, x: &Experience, p: &TdParams, _rng: &mut StdRng) {
        let boot = match (x.terminated, x.next_action) {
            (false, Some(a2)) => p.gamma * q.get(x.next, a2),
            _ => 0.0,
        };
        let qsa = q.get_mut(x.s, x.a);
        *qsa += p.alpha * (x.r + boot - *qsa);
    }
}
