//! Environments behind one gymnasium-style trait.
//!
//! Every environment here is a *tabular* one: it owns its full transition
//! table p(s', r | s, a) (Sutton & Barto eq. 3.2) — exactly gymnasium's
//! toy-text `P[s][a]` — and `step` samples an outcome from that same table,
//! the way gymnasium's `categorical_sample` does. So the dynamics the learners
//! experience and the model the DP solvers use can never disagree.

pub mod cliff_walking;
pub mod frozen_lake;
pub mod grid_map;

use crate::mdp::{Model, Transition};
use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

/// Result of one environment step (gymnasium's `(obs, reward, terminated, truncated)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Observation (state index) after the step.
    pub obs: usize,
    /// Reward for the step.
    pub reward: f64,
    /// The episode reached a terminal state.
    pub terminated: bool,
    /// The episode was cut by the time limit (not a terminal state: bootstrap from `obs`).
    pub truncated: bool,
}

/// A discrete environment with gymnasium's reset/step interface plus its full model.
pub trait Env: Model {
    /// Start a new episode; `Some(seed)` reseeds the environment's RNG (gymnasium semantics).
    fn reset(&mut self, seed: Option<u64>) -> usize;
    /// Take `action` in the current state.
    fn step(&mut self, action: usize) -> Step;
}

/// What a grid cell is, for printing policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// Start cell.
    Start,
    /// Ordinary cell.
    Free,
    /// Hole / cliff: entering it is bad.
    Hazard,
    /// Goal cell.
    Goal,
}

/// Grid geometry and labels used for display.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Rows.
    pub nrow: usize,
    /// Columns.
    pub ncol: usize,
    /// Cell kind per state (row-major).
    pub cells: Vec<Cell>,
    /// One arrow per action index, e.g. `['<', 'v', '>', '^']` for FrozenLake.
    pub arrows: Vec<char>,
}

/// A tabular environment: transition table, start distribution, time limit, RNG.
#[derive(Debug, Clone)]
pub struct TabularEnv {
    /// Name the environment was made with.
    pub name: String,
    num_states: usize,
    num_actions: usize,
    table: Vec<Vec<Transition>>,
    start: Vec<f64>,
    /// gymnasium's `TimeLimit` (`max_episode_steps`), if any.
    pub max_episode_steps: Option<usize>,
    /// Display geometry.
    pub layout: Layout,
    state: usize,
    elapsed: usize,
    rng: StdRng,
}

impl TabularEnv {
    /// Build from a row-major `[s][a]` table. Validates indices and that each outcome list sums to 1.
    pub fn new(
        name: &str,
        num_actions: usize,
        table: Vec<Vec<Transition>>,
        start: Vec<f64>,
        max_episode_steps: Option<usize>,
        layout: Layout,
    ) -> Result<Self> {
        let num_states = start.len();
        if num_states == 0 || num_actions == 0 {
            bail!("{name}: an environment needs at least one state and one action");
        }
        if table.len() != num_states * num_actions {
            bail!(
                "{name}: table has {} entries, want {}",
                table.len(),
                num_states * num_actions
            );
        }
        for (i, outs) in table.iter().enumerate() {
            let sum: f64 = outs.iter().map(|t| t.prob).sum();
            if (sum - 1.0).abs() > 1e-9 || outs.iter().any(|t| t.next >= num_states) {
                bail!(
                    "{name}: bad outcome list for (s={}, a={})",
                    i / num_actions,
                    i % num_actions
                );
            }
        }
        if (start.iter().sum::<f64>() - 1.0).abs() > 1e-9 {
            bail!("{name}: start distribution does not sum to 1");
        }
        Ok(Self {
            name: name.to_string(),
            num_states,
            num_actions,
            table,
            start,
            max_episode_steps,
            layout,
            state: 0,
            elapsed: 0,
            rng: StdRng::seed_from_u64(0),
        })
    }

    /// Current state.
    pub fn state(&self) -> usize {
        self.state
    }

    /// The start-state distribution.
    pub fn start_distribution(&self) -> &[f64] {
        &self.start
    }
}

/// gymnasium's `categorical_sample`: first index whose cumulative probability exceeds u ~ U[0,1).
fn categorical(probs: impl Iterator<Item = f64>, rng: &mut StdRng) -> usize {
    let u: f64 = rng.gen();
    let mut acc = 0.0;
    let mut last = 0;
    for (i, p) in probs.enumerate() {
        acc += p;
        last = i;
        if acc > u {
            return i;
        }
    }
    last
}

impl Model for TabularEnv {
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

impl Env for TabularEnv {
    fn reset(&mut self, seed: Option<u64>) -> usize {
        if let Some(seed) = seed {
            self.rng = StdRng::seed_from_u64(seed);
        }
        self.state = categorical(self.start.iter().copied(), &mut self.rng);
        self.elapsed = 0;
        self.state
    }

    fn step(&mut self, action: usize) -> Step {
        let outs = &self.table[self.state * self.num_actions + action];
        let t = if outs.len() == 1 {
            outs[0]
        } else {
            outs[categorical(outs.iter().map(|t| t.prob), &mut self.rng)]
        };
        self.state = t.next;
        self.elapsed += 1;
        let truncated = !t.terminated && self.max_episode_steps.is_some_and(|m| self.elapsed >= m);
        Step {
            obs: t.next,
            reward: t.reward,
            terminated: t.terminated,
            truncated,
        }
    }
}

/// Environment names accepted by [`make`].
pub const ENV_NAMES: &[&str] = &[
    "cliffwalking",
    "cliffwalking-tutorial",
    "frozenlake-4x4",
    "frozenlake-8x8",
];

/// Build an environment by name, or from a text map file (FrozenLake rules, time limit 100) when
/// `map` is given. `slippery = None` keeps each environment's gymnasium default
/// (FrozenLake and maps slippery, CliffWalking not).
pub fn make(name: Option<&str>, slippery: Option<bool>, map: Option<&Path>) -> Result<TabularEnv> {
    if let Some(path) = map {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read map file {}", path.display()))?;
        let grid = grid_map::GridMap::parse(&text)
            .with_context(|| format!("bad map file {}", path.display()))?;
        let name = path.display().to_string();
        return frozen_lake::from_grid(&grid, slippery.unwrap_or(true), Some(100), &name);
    }
    match name.unwrap_or("") {
        "cliffwalking" => cliff_walking::gymnasium(slippery.unwrap_or(false)),
        "cliffwalking-tutorial" if slippery == Some(true) => {
            bail!("cliffwalking-tutorial has no slippery variant")
        }
        "cliffwalking-tutorial" => cliff_walking::tutorial(),
        "frozenlake-4x4" => frozen_lake::named("4x4", slippery.unwrap_or(true)),
        "frozenlake-8x8" => frozen_lake::named("8x8", slippery.unwrap_or(true)),
        "" => bail!(
            "no environment given: use --env {} or --map FILE",
            ENV_NAMES.join("|")
        ),
        other => bail!(
            "unknown environment '{other}' (expected one of: {})",
            ENV_NAMES.join(", ")
        ),
    }
}
