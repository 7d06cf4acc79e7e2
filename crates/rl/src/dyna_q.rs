//! Tabular Dyna-Q (Sutton & Barto §8.2): after each real step, a Q-learning
//! update (eq. 6.8), then record Model(S,A) ← (R, S') and perform n planning
//! updates on (s, a) pairs drawn uniformly from those seen so far
//! (deterministic last-outcome model, as in the book and Hands-on-RL ch. 6).

use crate::q_learning::q_learning_backup;
use crate::q_table::QTable;
use crate::td::{Experience, TdParams, TdUpdate};
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::HashMap;

/// Dyna-Q with `planning_steps` simulated updates per real step.
#[derive(Debug, Clone)]
pub struct DynaQ {
    planning_steps: usize,
    index: HashMap<(usize, usize), usize>,
    model: Vec<(usize, usize, f64, usize, bool)>,
}

impl DynaQ {
    /// A Dyna-Q rule with an empty model.
    pub fn new(planning_steps: usize) -> Self {
        Self {
            planning_steps,
            index: HashMap::new(),
            model: Vec::new(),
        }
    }

    /// Number of (s, a) pairs in the learned model.
    pub fn model_size(&self) -> usize {
        self.model.len()
    }
}

impl TdUpdate for DynaQ {
    fn update(&mut self, q: &mut QTable, x: &Experience, p: &TdParams, rng: &mut StdRng) {
        q_learning_backup(q, x.s, x.a, x.r, x.next, x.terminated, p);
        let entry = (x.s, x.a, x.r, x.next, x.terminated);
        match self.index.get(&(x.s, x.a)) {
            Some(&i) => self.model[i] = entry,
            None => {
                self.index.insert((x.s, x.a), self.model.len());
                self.model.push(entry);
            }
        }
        for _ in 0..self.planning_steps {
            let (s, a, r, next, term) = self.model[rng.gen_range(0..self.model.len())];
            q_learning_backup(q, s, a, r, next, term, p);
        }
    }
}
