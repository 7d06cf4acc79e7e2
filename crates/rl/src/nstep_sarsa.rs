//! n-step Sarsa (Sutton & Barto §7.2, eqs. 7.4–7.5):
//! G_{t:t+n} = R_{t+1} + γR_{t+2} + … + γ^{n−1}R_{t+n} + γ^n Q(S_{t+n}, A_{t+n}),
//! Q(S_t,A_t) ← Q(S_t,A_t) + α[G_{t:t+n} − Q(S_t,A_t)].
//! At the end of an episode the remaining (shorter) returns are flushed, with no
//! bootstrap after termination and a bootstrap from Q(S_T, A_T) after truncation.

use crate::q_table::QTable;
use crate::td::{Experience, TdParams, TdUpdate};
use rand::rngs::StdRng;
use std::collections::VecDeque;

/// n-step Sarsa with its buffer of the last n (s, a, r).
#[derive(Debug, Clone)]
pub struct NStepSarsa {
    n: usize,
    buffer: VecDeque<(usize, usize, f64)>,
}

impl NStepSarsa {
    /// n-step Sarsa; `n` is clamped to at least 1.
    pub fn new(n: usize) -> Self {
        Self {
            n: n.max(1),
            buffer: VecDeque::with_capacity(n.max(1)),
        }
    }

    /// Update the oldest buffered pair with its return plus γ^k · `boot`, then drop it.
    fn update_front(&mut self, q: &mut QTable, boot: f64, p: &TdParams) {
        let mut g = boot;
        for &(_, _, r) in self.buffer.iter().rev() {
            g = r + p.gamma * g;
        }
        if let Some((s, a, _)) = self.buffer.pop_front() {
            let qsa = q.get_mut(s, a);
            *qsa += p.alpha * (g - *qsa);
        }
    }
}

impl TdUpdate for NStepSarsa {
    fn on_policy(&self) -> bool {
        true
    }

    fn update(&mut self, q: &mut QTable, x: &Experience, p: &TdParams, _rng: &mut StdRng) {
        self.buffer.push_back((x.s, x.a, x.r));
        let boot = match (x.terminated, x.next_action) {
            (false, Some(a2)) => q.get(x.next, a2),
            _ => 0.0,
        };
        if x.terminated || x.truncated {
            while !self.buffer.is_empty() {
                self.update_front(q, boot, p);
            }
        } else if self.buffer.len() == self.n {
            self.update_front(q, boot, p);
        }
    }
}
