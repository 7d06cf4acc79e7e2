//! The worked examples of Hands-on-RL ch. 3 (Markov decision processes):
//! the 6-state MRP (γ = 0.5, R = [−1, −2, −2, 10, 1, 0]) and the 5-state MDP
//! with its two example policies.

use crate::mdp::{Mdp, Transition};
use crate::mrp::Mrp;
use crate::policy::Policy;
use anyhow::Result;

/// The tutorial's 6-state Markov reward process (states s1..s6, s6 absorbing).
pub fn example_mrp() -> Result<Mrp> {
    let p = vec![
        vec![0.9, 0.1, 0.0, 0.0, 0.0, 0.0],
        vec![0.5, 0.0, 0.5, 0.0, 0.0, 0.0],
        vec![0.0, 0.0, 0.0, 0.6, 0.0, 0.4],
        vec![0.0, 0.0, 0.0, 0.0, 0.3, 0.7],
        vec![0.0, 0.2, 0.3, 0.5, 0.0, 0.0],
        vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
    ];
    Mrp::new(p, vec![-1.0, -2.0, -2.0, 10.0, 1.0, 0.0], 0.5)
}

/// Action names of the example MDP.
pub const MDP_ACTIONS: [&str; 7] = [
    "stay-s1", "go-s1", "go-s2", "go-s3", "go-s4", "go-s5", "random",
];

/// The tutorial's 5-state MDP (s5 terminal); γ = 0.5 in the tutorial.
pub fn example_mdp() -> Result<Mdp> {
    let mut m = Mdp::new(5, 7);
    m.state_names = (1..=5).map(|i| format!("s{i}")).collect();
    m.action_names = MDP_ACTIONS.iter().map(|s| s.to_string()).collect();
    let t = |p, next, r| Transition::new(p, next, r, next == 4);
    m.add(0, 0, t(1.0, 0, -1.0))?;
    m.add(0, 2, t(1.0, 1, 0.0))?;
    m.add(1, 1, t(1.0, 0, -1.0))?;
    m.add(1, 3, t(1.0, 2, -2.0))?;
    m.add(2, 4, t(1.0, 3, -2.0))?;
    m.add(2, 5, t(1.0, 4, 0.0))?;
    m.add(3, 5, t(1.0, 4, 10.0))?;
    m.add(3, 6, t(0.2, 1, 1.0))?;
    m.add(3, 6, t(0.4, 2, 1.0))?;
    m.add(3, 6, t(0.4, 3, 1.0))?;
    Ok(m)
}

/// Policy 1 of the tutorial: uniform over the two actions of each state.
pub fn policy_1(mdp: &Mdp) -> Policy {
    Policy::uniform_available(mdp)
}

/// Policy 2 of the tutorial.
pub fn policy_2() -> Policy {
    let mut rows = vec![vec![0.0; 7]; 5];
    rows[0][0] = 0.6;
    rows[0][2] = 0.4;
    rows[1][1] = 0.3;
    rows[1][3] = 0.7;
    rows[2][4] = 0.5;
    rows[2][5] = 0.5;
    rows[3][5] = 0.1;
    rows[3][6] = 0.9;
    Policy::from_rows(rows).expect("static 5x7 table")
}

/// Uniform start over the non-terminal states s1..s4 (as the tutorial samples).
pub fn mdp_start() -> Vec<f64> {
    vec![0.25, 0.25, 0.25, 0.25, 0.0]
}
