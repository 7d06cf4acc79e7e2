//! Tabular action values Q(s,a) and the ε-greedy behaviour policy
//! (Sutton & Barto §2.2–2.3, §5.4): with probability ε a uniformly random
//! action, otherwise argmax_a Q(s,a) with ties broken uniformly at random
//! (S&B §2.2). The tutorial's `np.argmax` always takes the first maximiser, which
//! on sparse-reward tasks such as FrozenLake (all-zero rows) never leaves the
//! first action; random tie-breaking avoids that.

use rand::rngs::StdRng;
use rand::Rng;

/// A dense |S|×|A| table of action values, initialised to zero.
#[derive(Debug, Clone, PartialEq)]
pub struct QTable {
    num_actions: usize,
    values: Vec<f64>,
}

impl QTable {
    /// All-zero table.
    pub fn new(num_states: usize, num_actions: usize) -> Self {
        Self {
            num_actions,
            values: vec![0.0; num_states * num_actions],
        }
    }

    /// Number of actions.
    pub fn num_actions(&self) -> usize {
        self.num_actions
    }

    /// Q(s, a).
    #[inline]
    pub fn get(&self, s: usize, a: usize) -> f64 {
        self.values[s * self.num_actions + a]
    }

    /// Mutable Q(s, a).
    #[inline]
    pub fn get_mut(&mut self, s: usize, a: usize) -> &mut f64 {
        &mut self.values[s * self.num_actions + a]
    }

    /// The row Q(s, ·).
    #[inline]
    pub fn row(&self, s: usize) -> &[f64] {
        &self.values[s * self.num_actions..(s + 1) * self.num_actions]
    }

    /// max_a Q(s, a).
    #[inline]
    pub fn max(&self, s: usize) -> f64 {
        let row = self.row(s);
        let mut m = row[0];
        for &q in &row[1..] {
            if q > m {
                m = q;
            }
        }
        m
    }

    /// First maximising action (ties go to the lowest index).
    #[inline]
    pub fn argmax(&self, s: usize) -> usize {
        let row = self.row(s);
        let mut best = 0;
        for (a, &q) in row.iter().enumerate().skip(1) {
            if q > row[best] {
                best = a;
            }
        }
        best
    }

    /// The whole table, row-major.
    pub fn as_slice(&self) -> &[f64] {
        &self.values
    }

    /// A maximising action chosen uniformly among ties (one pass; the RNG is used only on ties).
    #[inline]
    pub fn argmax_random_tie(&self, s: usize, rng: &mut StdRng) -> usize {
        let row = self.row(s);
        let (mut best, mut ties) = (0, 1);
        for (a, &q) in row.iter().enumerate().skip(1) {
            if q > row[best] {
                best = a;
                ties = 1;
            } else if q == row[best] {
                ties += 1;
            }
        }
        if ties == 1 {
            return best;
        }
        let k = rng.gen_range(0..ties);
        let max = row[best];
        row.iter()
            .enumerate()
            .filter(|(_, &q)| q == max)
            .nth(k)
            .map_or(best, |(a, _)| a)
    }

    /// ε-greedy action selection (greedy ties broken at random).
    #[inline]
    pub fn epsilon_greedy(&self, s: usize, epsilon: f64, rng: &mut StdRng) -> usize {
        if rng.gen::<f64>() < epsilon {
            rng.gen_range(0..self.num_actions)
        } else {
            self.argmax_random_tie(s, rng)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ties_are_broken_uniformly_and_strict_max_wins() {
        let mut q = QTable::new(2, 4);
        *q.get_mut(0, 1) = -1.0; // actions 0, 2, 3 tie at 0
        *q.get_mut(1, 2) = 0.5;
        let mut rng = StdRng::seed_from_u64(0);
        let mut counts = [0usize; 4];
        for _ in 0..30_000 {
            counts[q.argmax_random_tie(0, &mut rng)] += 1;
            assert_eq!(q.argmax_random_tie(1, &mut rng), 2);
        }
        assert_eq!(counts[1], 0);
        for a in [0, 2, 3] {
            assert!(
                (counts[a] as f64 / 30_000.0 - 1.0 / 3.0).abs() < 0.02,
                "{counts:?}"
            );
        }
        assert_eq!((q.argmax(0), q.max(0), q.max(1)), (0, 0.0, 0.5));
    }

    #[test]
    fn epsilon_one_is_uniform_and_zero_is_greedy() {
        let mut q = QTable::new(1, 4);
        *q.get_mut(0, 3) = 1.0;
        let mut rng = StdRng::seed_from_u64(1);
        let mut counts = [0usize; 4];
        for _ in 0..20_000 {
            counts[q.epsilon_greedy(0, 1.0, &mut rng)] += 1;
            assert_eq!(q.epsilon_greedy(0, 0.0, &mut rng), 3);
        }
        assert!(
            counts
                .iter()
                .all(|&c| (c as f64 / 20_000.0 - 0.25).abs() < 0.02),
            "{counts:?}"
        );
    }
}
