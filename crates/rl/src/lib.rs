//! # ferrite-rl — reinforcement-learning basics
//!
//! Markov reward processes and MDPs ([`mrp`], [`mdp`]), Monte-Carlo evaluation
//! ([`monte_carlo`]), occupancy measures ([`occupancy`]), dynamic programming
//! ([`policy_evaluation`], [`policy_iteration`], [`value_iteration`]) and tabular
//! TD control ([`td`] with [`sarsa`], [`nstep_sarsa`], [`q_learning`], [`dyna_q`])
//! on gymnasium-compatible environments ([`mod@env`]), following Sutton & Barto (2nd ed.)
//! and the Hands-on-RL tutorial. [`cli`] is the `ferrite rl` command line.

#![warn(missing_docs)]

pub mod cli;
pub mod dyna_q;
pub mod env;
pub mod mdp;
pub mod monte_carlo;
pub mod mrp;
pub mod nstep_sarsa;
pub mod occupancy;
pub mod plot;
pub mod policy;
pub mod policy_evaluation;
pub mod policy_iteration;
pub mod q_learning;
pub mod q_table;
pub mod sarsa;
pub mod td;
pub mod tutorial;
pub mod value_iteration;

pub use env::{make, Env, Step, TabularEnv};
pub use mdp::{Mdp, Model, Transition};
pub use policy::Policy;
