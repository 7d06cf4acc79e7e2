//! Finite Markov decision processes and the tabular model interface shared by
//! every dynamic-programming and Monte-Carlo routine in this crate.
//!
//! A model is the four-argument dynamics p(s', r | s, a) of Sutton & Barto
//! (2nd ed.) eq. (3.2), stored as explicit outcome lists — the same
//! `P[s][a] = [(prob, next, reward, terminated)]` layout gymnasium's toy-text
//! environments expose. Folding a policy into the model gives a Markov reward
//! process with P^π(s'|s) = Σ_a π(a|s) p(s'|s,a) and r^π(s) = Σ_a π(a|s) r(s,a)
//! (S&B eq. 3.14 rearranged); the action value is the Bellman expectation
//! q_π(s,a) = Σ p(s',r|s,a) [r + γ v_π(s')] (S&B eq. 3.13 / exercise 3.13).

use crate::mrp::Mrp;
use crate::policy::Policy;
use anyhow::{bail, Result};

/// One possible outcome of taking an action: gymnasium's `(prob, next_state, reward, terminated)`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Transition {
    /// Probability of this outcome.
    pub prob: f64,
    /// Index of the next state.
    pub next: usize,
    /// Reward received on this transition.
    pub reward: f64,
    /// Whether the episode ends (the next state's value is not bootstrapped).
    pub terminated: bool,
}

impl Transition {
    /// Convenience constructor.
    pub fn new(prob: f64, next: usize, reward: f64, terminated: bool) -> Self {
        Self {
            prob,
            next,
            reward,
            terminated,
        }
    }
}

/// Anything with a full tabular transition model p(s', r | s, a).
pub trait Model {
    /// Number of states |S|.
    fn num_states(&self) -> usize;
    /// Number of actions |A| (the same in every state; unavailable actions have no outcomes).
    fn num_actions(&self) -> usize;
    /// All outcomes of action `a` in state `s`; empty when the action is unavailable.
    fn transitions(&self, s: usize, a: usize) -> &[Transition];
}

/// One-step lookahead q(s,a) = Σ p [r + γ v(s') (1 - terminated)], accumulated in outcome order
/// exactly like the tutorial (so ties compare bit-for-bit).
pub fn q_value<M: Model + ?Sized>(model: &M, v: &[f64], gamma: f64, s: usize, a: usize) -> f64 {
    let mut q = 0.0;
    for t in model.transitions(s, a) {
        let cont = if t.terminated { 0.0 } else { gamma * v[t.next] };
        q += t.prob * (t.reward + cont);
    }
    q
}

/// Action values q_π(s, a) for all states and actions from state values `v` (row-major, |S|·|A|).
pub fn action_values<M: Model + ?Sized>(model: &M, v: &[f64], gamma: f64) -> Vec<f64> {
    let (ns, na) = (model.num_states(), model.num_actions());
    let mut q = Vec::with_capacity(ns * na);
    for s in 0..ns {
        for a in 0..na {
            q.push(q_value(model, v, gamma, s, a));
        }
    }
    q
}

/// Fold a policy into the model, giving the Markov reward process it induces.
/// Terminating outcomes contribute reward but no continuation, so terminal values are 0.
pub fn to_mrp<M: Model + ?Sized>(model: &M, policy: &Policy, gamma: f64) -> Result<Mrp> {
    let n = model.num_states();
    if policy.num_states() != n || policy.num_actions() != model.num_actions() {
        bail!(
            "policy is {}x{} but the model has {} states and {} actions",
            policy.num_states(),
            policy.num_actions(),
            n,
            model.num_actions()
        );
    }
    let mut p = vec![vec![0.0; n]; n];
    let mut r = vec![0.0; n];
    for (s, row) in p.iter_mut().enumerate() {
        for a in 0..model.num_actions() {
            let pi = policy.prob(s, a);
            if pi == 0.0 {
                continue;
            }
            for t in model.transitions(s, a) {
                r[s] += pi * t.prob * t.reward;
                if !t.terminated {
                    row[t.next] += pi * t.prob;
                }
            }
        }
    }
    Mrp::new(p, r, gamma)
}

/// An explicit finite MDP: a transition table plus optional state and action names.
#[derive(Debug, Clone)]
pub struct Mdp {
    num_states: usize,
    num_actions: usize,
    table: Vec<Vec<Transition>>,
    /// Human-readable state names (index = state).
    pub state_names: Vec<String>,
    /// Human-readable action names (index = action).
    pub action_names: Vec<String>,
}

impl Mdp {
    /// An MDP with no outcomes yet (every action unavailable everywhere).
    pub fn new(num_states: usize, num_actions: usize) -> Self {
        Self {
            num_states,
            num_actions,
            table: vec![Vec::new(); num_states * num_actions],
            state_names: (0..num_states).map(|s| format!("s{s}")).collect(),
            action_names: (0..num_actions).map(|a| format!("a{a}")).collect(),
        }
    }

    /// Add one outcome to (s, a). Errors on out-of-range indices or a probability outside [0, 1].
    pub fn add(&mut self, s: usize, a: usize, t: Transition) -> Result<()> {
        if s >= self.num_states || a >= self.num_actions || t.next >= self.num_states {
            bail!(
                "transition ({s}, {a}) -> {} out of range for {}x{} MDP",
                t.next,
                self.num_states,
                self.num_actions
            );
        }
        if !(0.0..=1.0).contains(&t.prob) {
            bail!("transition probability {} is not in [0, 1]", t.prob);
        }
        self.table[s * self.num_actions + a].push(t);
        Ok(())
    }

    /// Whether action `a` has any outcome in state `s`.
    pub fn available(&self, s: usize, a: usize) -> bool {
        !self.transitions(s, a).is_empty()
    }

    /// A state with no available action is terminal (absorbing, value 0).
    pub fn is_terminal(&self, s: usize) -> bool {
        (0..self.num_actions).all(|a| !self.available(s, a))
    }

    /// Copy any model into an explicit table.
    pub fn from_model<M: Model + ?Sized>(model: &M) -> Self {
        let mut mdp = Self::new(model.num_states(), model.num_actions());
        for s in 0..model.num_states() {
            for a in 0..model.num_actions() {
                mdp.table[s * mdp.num_actions + a] = model.transitions(s, a).to_vec();
            }
        }
        mdp
    }
}

impl Model for Mdp {
    fn num_states(&self) -> usize {
        self.num_states
    }
    fn num_actions(&self) -> usize {
        self.num_actions
    }
    fn transitions(&self, s: usize, a: usize) -> &[Transition] {
        &self.table[s * self.num_actions + a]
    }
}
