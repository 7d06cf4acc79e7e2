//! Monte-Carlo policy evaluation (Sutton & Barto §5.1, first-visit and
//! every-visit MC prediction), with the incremental mean
//! V(s) ← V(s) + (G − V(s)) / N(s) (S&B eq. 2.3) and returns accumulated
//! backwards G ← r + γG (eq. 3.9), as in Hands-on-RL ch. 3.

use crate::mdp::Model;
use crate::policy::Policy;
use rand::rngs::StdRng;
use rand::Rng;

/// One sampled step (s, a, r, s').
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepRecord {
    /// State.
    pub s: usize,
    /// Action taken.
    pub a: usize,
    /// Reward received.
    pub r: f64,
    /// Next state.
    pub next: usize,
}

/// A sampled episode.
pub type Episode = Vec<StepRecord>;

/// Which visits to a state contribute a return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// Only the first visit in each episode.
    First,
    /// Every visit.
    Every,
}

/// Draw an index from a discrete distribution by inverse CDF.
fn draw(probs: impl Iterator<Item = f64>, rng: &mut StdRng) -> Option<usize> {
    let u: f64 = rng.gen();
    let mut acc = 0.0;
    let mut last = None;
    for (i, p) in probs.enumerate() {
        if p <= 0.0 {
            continue;
        }
        acc += p;
        last = Some(i);
        if acc > u {
            return last;
        }
    }
    last
}

/// Sample `n` episodes following `policy`, each starting from a state drawn from `start`
/// and ending at a terminating transition, a state with no allowed action, or after `max_steps`.
pub fn sample_episodes<M: Model + ?Sized>(
    model: &M,
    policy: &Policy,
    start: &[f64],
    max_steps: usize,
    n: usize,
    rng: &mut StdRng,
) -> Vec<Episode> {
    (0..n)
        .map(|_| {
            let mut episode = Vec::new();
            let Some(mut s) = draw(start.iter().copied(), rng) else {
                return episode;
            };
            while episode.len() < max_steps {
                let Some(a) = draw(policy.row(s).iter().copied(), rng) else {
                    break;
                };
                let outs = model.transitions(s, a);
                let Some(i) = draw(outs.iter().map(|t| t.prob), rng) else {
                    break;
                };
                let t = outs[i];
                episode.push(StepRecord {
                    s,
                    a,
                    r: t.reward,
                    next: t.next,
                });
                s = t.next;
                if t.terminated {
                    break;
                }
            }
            episode
        })
        .collect()
}

/// MC estimate of v_π and the visit counts N(s).
#[derive(Debug, Clone)]
pub struct McEstimate {
    /// Estimated values (0 for never-visited states).
    pub values: Vec<f64>,
    /// Number of returns averaged per state.
    pub counts: Vec<usize>,
}

/// First-visit or every-visit Monte-Carlo prediction over `episodes`.
pub fn mc_evaluate(
    episodes: &[Episode],
    num_states: usize,
    gamma: f64,
    visit: Visit,
) -> McEstimate {
    let mut values = vec![0.0; num_states];
    let mut counts = vec![0usize; num_states];
    let mut first = vec![usize::MAX; num_states];
    for ep in episodes {
        if visit == Visit::First {
            first.fill(usize::MAX);
            for (t, step) in ep.iter().enumerate() {
                if first[step.s] == usize::MAX {
                    first[step.s] = t;
                }
            }
        }
        let mut g = 0.0;
        for (t, step) in ep.iter().enumerate().rev() {
            g = step.r + gamma * g;
            if visit == Visit::First && first[step.s] != t {
                continue;
            }
            counts[step.s] += 1;
            values[step.s] += (g - values[step.s]) / counts[step.s] as f64;
        }
    }
    McEstimate { values, counts }
}
