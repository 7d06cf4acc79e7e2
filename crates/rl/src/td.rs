//! One tabular temporal-difference control loop (Sutton & Barto ch. 6–8),
//! parameterised by the update rule.
//!
//! Every rule implements [`TdUpdate`]; the single episode loop in [`train`]
//! picks ε-greedy actions, steps the environment, and hands each experience
//! (S_t, A_t, R_{t+1}, S_{t+1}, and A_{t+1} for on-policy rules) to the rule. On-policy rules get the
//! next action chosen *before* their update (Sarsa's A_{t+1}); off-policy rules
//! update first and the next action is chosen from the updated table, as in
//! the tutorial. A terminating step never bootstraps; a truncated one does.

use crate::dyna_q::DynaQ;
use crate::env::Env;
use crate::nstep_sarsa::NStepSarsa;
use crate::q_learning::QLearning;
use crate::q_table::QTable;
use crate::sarsa::Sarsa;
use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Step size, exploration and discount shared by all rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TdParams {
    /// ε of the ε-greedy behaviour policy.
    pub epsilon: f64,
    /// Step size α.
    pub alpha: f64,
    /// Discount γ.
    pub gamma: f64,
}

impl TdParams {
    /// Check ranges: ε, α, γ in [0, 1].
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("epsilon", self.epsilon),
            ("alpha", self.alpha),
            ("gamma", self.gamma),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{name} must be in [0, 1], got {v}");
            }
        }
        Ok(())
    }
}

/// One transition as seen by an update rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Experience {
    /// S_t.
    pub s: usize,
    /// A_t.
    pub a: usize,
    /// R_{t+1}.
    pub r: f64,
    /// S_{t+1}.
    pub next: usize,
    /// A_{t+1}, present for on-policy rules.
    pub next_action: Option<usize>,
    /// S_{t+1} is terminal: do not bootstrap.
    pub terminated: bool,
    /// The episode was cut by a time limit after this step (bootstrap, then stop).
    pub truncated: bool,
}

/// A tabular TD update rule.
pub trait TdUpdate {
    /// Whether the rule needs A_{t+1} (chosen before the update).
    fn on_policy(&self) -> bool {
        false
    }
    /// Apply the rule to one experience.
    fn update(&mut self, q: &mut QTable, x: &Experience, p: &TdParams, rng: &mut StdRng);
}

/// The available control algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    /// One-step Sarsa.
    Sarsa,
    /// n-step Sarsa.
    NStepSarsa {
        /// Number of steps n ≥ 1.
        n: usize,
    },
    /// One-step Q-learning.
    QLearning,
    /// Dyna-Q with a number of planning steps per real step.
    DynaQ {
        /// Planning updates per real step.
        planning_steps: usize,
    },
}

impl Algo {
    /// A fresh update rule (rules with state, e.g. n-step buffers or Dyna's model, start empty).
    pub fn build(&self) -> Box<dyn TdUpdate> {
        match *self {
            Algo::Sarsa => Box::new(Sarsa),
            Algo::NStepSarsa { n } => Box::new(NStepSarsa::new(n)),
            Algo::QLearning => Box::new(QLearning),
            Algo::DynaQ { planning_steps } => Box::new(DynaQ::new(planning_steps)),
        }
    }

    /// Display name, e.g. `dyna-q (20 planning steps)`.
    pub fn label(&self) -> String {
        match *self {
            Algo::Sarsa => "sarsa".into(),
            Algo::NStepSarsa { n } => format!("{n}-step sarsa"),
            Algo::QLearning => "q-learning".into(),
            Algo::DynaQ { planning_steps } => format!("dyna-q ({planning_steps} planning steps)"),
        }
    }
}

/// Training settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    /// ε, α, γ.
    pub params: TdParams,
    /// Number of episodes.
    pub episodes: usize,
    /// Seed for the environment and the agent.
    pub seed: u64,
    /// Safety cap on steps per episode (treated as truncation) for environments without a time limit.
    pub max_steps: usize,
}

/// What training produced.
#[derive(Debug, Clone)]
pub struct TrainResult {
    /// Learned action values.
    pub q: QTable,
    /// Undiscounted return of each episode.
    pub returns: Vec<f64>,
    /// Total environment steps.
    pub steps: usize,
}

/// Train `algo` on `env` for `cfg.episodes` episodes.
pub fn train<E: Env + ?Sized>(env: &mut E, algo: Algo, cfg: &TrainConfig) -> Result<TrainResult> {
    cfg.params.validate()?;
    if let Algo::NStepSarsa { n: 0 } = algo {
        bail!("n-step Sarsa needs n >= 1");
    }
    let mut rule = algo.build();
    let mut q = QTable::new(env.num_states(), env.num_actions());
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x9E37_79B9_7F4A_7C15);
    let p = cfg.params;
    let mut returns = Vec::with_capacity(cfg.episodes);
    let mut steps = 0;
    for episode in 0..cfg.episodes {
        let mut s = env.reset((episode == 0).then_some(cfg.seed));
        let mut a = q.epsilon_greedy(s, p.epsilon, &mut rng);
        let mut total = 0.0;
        for t in 1..=cfg.max_steps {
            let step = env.step(a);
            total += step.reward;
            let truncated = step.truncated || (t == cfg.max_steps && !step.terminated);
            let next_action = rule
                .on_policy()
                .then(|| q.epsilon_greedy(step.obs, p.epsilon, &mut rng));
            let x = Experience {
                s,
                a,
                r: step.reward,
                next: step.obs,
                next_action,
                terminated: step.terminated,
                truncated,
            };
            rule.update(&mut q, &x, &p, &mut rng);
            steps += 1;
            if step.terminated || truncated {
                break;
            }
            s = step.obs;
            a = next_action.unwrap_or_else(|| q.epsilon_greedy(s, p.epsilon, &mut rng));
        }
        returns.push(total);
    }
    Ok(TrainResult { q, returns, steps })
}

/// A greedy roll-out of a learned table.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Undiscounted return.
    pub ret: f64,
    /// States visited, starting with the initial one.
    pub path: Vec<usize>,
    /// Whether the episode terminated (rather than hitting the step cap or time limit).
    pub terminated: bool,
}

/// Follow argmax_a Q(s, a) from a reset with `seed` for at most `max_steps` steps.
pub fn greedy_rollout<E: Env + ?Sized>(
    env: &mut E,
    q: &QTable,
    seed: u64,
    max_steps: usize,
) -> Rollout {
    let mut s = env.reset(Some(seed));
    let mut path = vec![s];
    let mut ret = 0.0;
    for _ in 0..max_steps {
        let step = env.step(q.argmax(s));
        ret += step.reward;
        s = step.obs;
        path.push(s);
        if step.terminated {
            return Rollout {
                ret,
                path,
                terminated: true,
            };
        }
        if step.truncated {
            break;
        }
    }
    Rollout {
        ret,
        path,
        terminated: false,
    }
}
