//! Q-learning, off-policy TD control (Sutton & Barto eq. 6.8):
//! Q(S,A) ← Q(S,A) + α[R + γ max_a Q(S',a) − Q(S,A)], with no bootstrap at termination.

use crate::q_table::QTable;
use crate::td::{Experience, TdParams, TdUpdate};
use rand::rngs::StdRng;

/// One-step Q-learning.
#[derive(Debug, Clone, Copy, Default)]
pub struct QLearning;

/// The Q-learning backup on one (s, a, r, s', terminated) tuple; shared with Dyna-Q's planning.
#[inline]
pub fn q_learning_backup(
    q: &mut QTable,
    s: usize,
    a: usize,
    r: f64,
    next: usize,
    terminated: bool,
    p: &TdParams,
) {
    let boot = if terminated {
        0.0
    } else {
        p.gamma * q.max(next)
    };
    let qsa = q.get_mut(s, a);
    *qsa += p.alpha * (r + boot - *qsa);
}

impl TdUpdate for QLearning {
    fn update(&mut self, q: &mut QTable, x: &Experience, p: &TdParams, _rng: &mut StdRng) {
        q_learning_backup(q, x.s, x.a, x.r, x.next, x.terminated, p);
    }
}
