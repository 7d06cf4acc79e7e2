//! Stochastic tabular policies π(a|s) (Sutton & Barto §3.5) and greedy policy
//! improvement π'(s) ∈ argmax_a q(s,a) (S&B eq. 4.9), with ties sharing the
//! probability equally as in the Hands-on-RL tutorial's `policy_improvement`.

use crate::mdp::{q_value, Model};

/// A table of action probabilities, one row per state.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    num_actions: usize,
    probs: Vec<f64>,
}

impl Policy {
    /// The uniform random policy over all `num_actions` actions in every state.
    pub fn uniform(num_states: usize, num_actions: usize) -> Self {
        let p = 1.0 / num_actions as f64;
        Self {
            num_actions,
            probs: vec![p; num_states * num_actions],
        }
    }

    /// Uniform over the actions that have outcomes in each state (terminal states get all zeros).
    pub fn uniform_available<M: Model + ?Sized>(model: &M) -> Self {
        let na = model.num_actions();
        let mut probs = vec![0.0; model.num_states() * na];
        for s in 0..model.num_states() {
            let avail: Vec<usize> = (0..na)
                .filter(|&a| !model.transitions(s, a).is_empty())
                .collect();
            for &a in &avail {
                probs[s * na + a] = 1.0 / avail.len() as f64;
            }
        }
        Self {
            num_actions: na,
            probs,
        }
    }

    /// Build from explicit rows; returns `None` if rows are ragged or empty.
    pub fn from_rows(rows: Vec<Vec<f64>>) -> Option<Self> {
        let na = rows.first()?.len();
        if na == 0 || rows.iter().any(|r| r.len() != na) {
            return None;
        }
        Some(Self {
            num_actions: na,
            probs: rows.concat(),
        })
    }

    /// Number of states.
    pub fn num_states(&self) -> usize {
        self.probs.len().checked_div(self.num_actions).unwrap_or(0)
    }

    /// Number of actions.
    pub fn num_actions(&self) -> usize {
        self.num_actions
    }

    /// π(a|s).
    pub fn prob(&self, s: usize, a: usize) -> f64 {
        self.probs[s * self.num_actions + a]
    }

    /// The probability row of state `s`.
    pub fn row(&self, s: usize) -> &[f64] {
        &self.probs[s * self.num_actions..(s + 1) * self.num_actions]
    }

    /// Actions with non-zero probability in state `s`.
    pub fn support(&self, s: usize) -> Vec<usize> {
        (0..self.num_actions)
            .filter(|&a| self.prob(s, a) > 0.0)
            .collect()
    }

    /// Greedy policy w.r.t. one-step lookahead on `v`; all maximising actions share probability
    /// equally (exact float equality, as the tutorial does).
    pub fn greedy<M: Model + ?Sized>(model: &M, v: &[f64], gamma: f64) -> Self {
        let na = model.num_actions();
        let mut probs = Vec::with_capacity(model.num_states() * na);
        let mut q = vec![0.0; na];
        for s in 0..model.num_states() {
            for (a, qa) in q.iter_mut().enumerate() {
                *qa = q_value(model, v, gamma, s, a);
            }
            probs.extend(greedy_row(&q));
        }
        Self {
            num_actions: na,
            probs,
        }
    }

    /// Greedy policy from a row-major action-value table (|S|·|A|).
    pub fn greedy_from_q(q: &[f64], num_actions: usize) -> Self {
        Self {
            num_actions,
            probs: q.chunks(num_actions).flat_map(greedy_row).collect(),
        }
    }
}

/// Equal probability on every maximising entry of `q`.
fn greedy_row(q: &[f64]) -> Vec<f64> {
    let max = q.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let count = q.iter().filter(|&&x| x == max).count().max(1);
    q.iter()
        .map(|&x| if x == max { 1.0 / count as f64 } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_rows_share_ties() {
        let p = Policy::greedy_from_q(&[1.0, 3.0, 3.0, 0.0, 0.0, 0.0], 3);
        assert_eq!(p.row(0), &[0.0, 0.5, 0.5]);
        assert_eq!(p.row(1), &[1.0 / 3.0; 3]);
        assert_eq!(p.support(0), vec![1, 2]);
        assert!(Policy::from_rows(vec![vec![0.5, 0.5], vec![1.0]]).is_none());
        assert!(Policy::from_rows(vec![]).is_none());
    }
}
