//! Markov reward processes (Sutton & Barto §3.1–3.5; Hands-on-RL ch. 3).
//!
//! * Return G_t = Σ_k γ^k R_{t+k+1} (S&B eq. 3.8), computed backwards G = r + γG.
//! * Bellman equation in matrix form V = R + γPV, solved analytically as
//!   V = (I − γP)⁻¹R with an LU factorisation from faer (we solve the linear
//!   system instead of forming the inverse), and iteratively by the synchronous
//!   fixed-point sweep V_{k+1} = R + γPV_k until max|ΔV| < θ.

use anyhow::{bail, Context, Result};
use faer::prelude::Solve;
use faer::Mat;

/// A finite MRP ⟨S, P, R, γ⟩ with reward R(s) received on leaving state s.
#[derive(Debug, Clone)]
pub struct Mrp {
    /// Row-stochastic (or sub-stochastic, for terminating rows) transition matrix, `p[s][s_next]`.
    pub p: Vec<Vec<f64>>,
    /// Expected reward per state.
    pub r: Vec<f64>,
    /// Discount factor γ.
    pub gamma: f64,
}

impl Mrp {
    /// Validate shapes, probabilities and γ ∈ [0, 1].
    pub fn new(p: Vec<Vec<f64>>, r: Vec<f64>, gamma: f64) -> Result<Self> {
        let n = r.len();
        if p.len() != n || p.iter().any(|row| row.len() != n) {
            bail!("P must be {n}x{n} to match {n} rewards");
        }
        if !(0.0..=1.0).contains(&gamma) {
            bail!("gamma must be in [0, 1], got {gamma}");
        }
        for (s, row) in p.iter().enumerate() {
            let sum: f64 = row.iter().sum();
            if row.iter().any(|&x| x < 0.0) || sum > 1.0 + 1e-9 {
                bail!("row {s} of P is not a (sub-)probability distribution (sum {sum})");
            }
        }
        Ok(Self { p, r, gamma })
    }

    /// Number of states.
    pub fn len(&self) -> usize {
        self.r.len()
    }

    /// True when the MRP has no states.
    pub fn is_empty(&self) -> bool {
        self.r.is_empty()
    }

    /// Discounted return of `chain` (state indices) from `start`, with reward R(s) per visited state.
    pub fn chain_return(&self, chain: &[usize], start: usize) -> f64 {
        chain
            .iter()
            .skip(start)
            .rev()
            .fold(0.0, |g, &s| self.gamma * g + self.r[s])
    }

    /// Analytic solution V = (I − γP)⁻¹R. Fails if I − γP is singular (γ = 1 with a recurrent class).
    pub fn analytic_values(&self) -> Result<Vec<f64>> {
        let n = self.len();
        let a = Mat::<f64>::from_fn(n, n, |i, j| {
            let eye = if i == j { 1.0 } else { 0.0 };
            eye - self.gamma * self.p[i][j]
        });
        let b = Mat::<f64>::from_fn(n, 1, |i, _| self.r[i]);
        let x = a.partial_piv_lu().solve(&b);
        let v: Vec<f64> = (0..n).map(|i| x[(i, 0)]).collect();
        if v.iter().any(|x| !x.is_finite()) {
            return Err(anyhow::anyhow!("I - gamma*P is singular"))
                .context("analytic Bellman solution needs gamma < 1 or an absorbing chain");
        }
        Ok(v)
    }

    /// Iterative evaluation: synchronous sweeps until max|ΔV| < θ (or `max_sweeps`).
    /// Returns the values and the number of sweeps performed.
    pub fn iterative_values(&self, theta: f64, max_sweeps: usize) -> (Vec<f64>, usize) {
        let n = self.len();
        let mut v = vec![0.0; n];
        let mut sweeps = 0;
        while sweeps < max_sweeps {
            sweeps += 1;
            let new: Vec<f64> = (0..n)
                .map(|s| self.r[s] + self.gamma * dot(&self.p[s], &v))
                .collect();
            let diff = max_abs_diff(&new, &v);
            v = new;
            if diff < theta {
                break;
            }
        }
        (v, sweeps)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// max_i |a_i − b_i|.
pub(crate) fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}
