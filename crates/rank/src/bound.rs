//! A numerical check of Theorem 2.2 of Dong, Cordonnier & Loukas 2021, "Attention is not all you
//! need: pure attention loses rank doubly exponentially with depth": for a single-head SAN of `L`
//! layers `X ↦ softmax(X W_QK Xᵀ/√d_qk) X W_V` with `‖W_QK‖₁‖W_V‖₁,∞ ≤ β` (per layer),
//!
//! `‖res(SAN(X))‖₁,∞ ≤ (4γβ/√d_qk)^((3ᴸ−1)/2) · ‖res(X)‖₁,∞^(3ᴸ)`,
//!
//! the `L`-fold composition of Lemma 2.1's cubic step `‖res(SA(X))‖ ≤ (4γβ/√d_qk)‖res(X)‖³`.
//! The paper leaves `γ` as a term that depends on the attention entries; we take `γ = 1` unless
//! told otherwise and also report the smallest `γ` every measured instance would need.
//!
//! Everything runs in `f64`; bounds are compared in log₁₀ (they reach 10⁻¹⁰⁰ within a few
//! layers) and only where the bound lies above the `f64` rounding floor of the measurement
//! (`1e-12·‖X_l‖₁,∞`), since below it a measured residual is rounding noise, not signal.
//! The theorem is stated with the argmin centre, which has no closed form; so the check is made
//! conservative on both sides with [`argmin_residual`]: the measured left side is the attained
//! upper end (the better of the mean and median centres), and the bound's `‖res(X)‖₁,∞` is the
//! certified lower end, which can only make the bound smaller.

use crate::residual::{argmin_residual, Mat};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One random single-head SAN layer.
#[derive(Debug, Clone)]
pub struct SanLayer {
    /// `W_QK = W_Q W_Kᵀ`, `d × d`.
    pub w_qk: Mat,
    /// `W_V`, `d × d` (the output projection folded in).
    pub w_v: Mat,
    /// `d_qk`, the query/key width the scores are scaled by.
    pub d_qk: usize,
}

impl SanLayer {
    /// `β` of this layer: `‖W_QK‖₁ ‖W_V‖₁,∞`.
    pub fn beta(&self) -> f64 {
        self.w_qk.norm_1() * self.w_v.norm_1_inf()
    }

    /// `SA(X) = softmax(X W_QK Xᵀ/√d_qk) X W_V` (bidirectional, row-wise softmax).
    pub fn forward(&self, x: &Mat) -> Mat {
        let scores = x
            .matmul(&self.w_qk)
            .and_then(|xw| xw.matmul(&x.t()))
            .expect("square weights match the input width");
        let n = x.rows;
        let scale = 1.0 / (self.d_qk as f64).sqrt();
        let mut a = Mat::zeros(n, n);
        for i in 0..n {
            let row = scores.row(i);
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v * scale));
            let e: Vec<f64> = row.iter().map(|&v| (v * scale - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for (dst, ej) in a.data[i * n..(i + 1) * n].iter_mut().zip(&e) {
                *dst = ej / z;
            }
        }
        a.matmul(x)
            .and_then(|ax| ax.matmul(&self.w_v))
            .expect("shapes checked above")
    }
}

/// Settings of the random instances.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BoundConfig {
    /// Number of random SANs.
    pub instances: usize,
    /// Depth `L`.
    pub depth: usize,
    /// Tokens `n`.
    pub tokens: usize,
    /// Width `d` (= `d_qk`).
    pub width: usize,
    /// `γ` in the bound.
    pub gamma: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for BoundConfig {
    fn default() -> Self {
        Self {
            instances: 200,
            depth: 6,
            tokens: 8,
            width: 8,
            gamma: 1.0,
            seed: 0,
        }
    }
}

/// Per depth, over all instances.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DepthRow {
    /// Layer `l` (1-based).
    pub layer: usize,
    /// Median log₁₀ of the measured `‖res(SAN_l(X))‖₁,∞`.
    pub median_log10_measured: f64,
    /// Median log₁₀ of the Theorem 2.2 bound.
    pub median_log10_bound: f64,
    /// Comparisons where the bound lies above the rounding floor (the others are not tested).
    pub compared: usize,
    /// Of those, how many measured residuals exceed the bound.
    pub violations: usize,
    /// Lemma 2.1 applied to the measured previous layer: comparisons and violations.
    pub step_compared: usize,
    /// Violations of the one-step (cubic) bound.
    pub step_violations: usize,
}

/// One instance's curves over depth (`log₁₀`, layers `1..=L`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceTrace {
    /// `log₁₀` of the input's certified lower `‖res(X)‖₁,∞`.
    pub log10_res_input: f64,
    /// `log₁₀(4γβ/√d_qk)`.
    pub log10_c: f64,
    /// Measured `log₁₀ ‖res(SAN_l(X))‖₁,∞` (upper end; `log₁₀` of the smallest f64 when 0).
    pub log10_measured: Vec<f64>,
    /// `log₁₀` of the Theorem 2.2 bound.
    pub log10_bound: Vec<f64>,
    /// Whether the layer's comparison was made (bound above the rounding floor).
    pub compared: Vec<bool>,
}

/// The whole check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BoundReport {
    /// Settings.
    pub config: BoundConfig,
    /// Per-layer summary.
    pub rows: Vec<DepthRow>,
    /// Total Theorem 2.2 comparisons / violations.
    pub compared: usize,
    /// Violations of Theorem 2.2.
    pub violations: usize,
    /// Smallest log₁₀(bound / measured) over the tested comparisons (≥ 0 means no violation).
    pub min_log10_slack: f64,
    /// The smallest `γ` that would make every tested Theorem 2.2 comparison hold.
    pub gamma_needed: f64,
    /// Instances whose bound contracts at the first layer (`4γβ/√d·‖res(X)‖² < 1`).
    pub contracting: usize,
    /// Every instance's curves.
    pub instances: Vec<InstanceTrace>,
}

/// `n` draws of `N(0, std²)`.
fn normal(rng: &mut StdRng, n: usize, std: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
            let u2: f64 = rng.gen();
            std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect()
}

/// Runs `config.instances` random SANs and compares every layer's residual with the bound.
///
/// Instance `i` draws `X ~ N(0, s_x²)` and per layer `W_Q, W_K, W_V ~ N(0, s_w²/d)` with `s_x` and
/// `s_w` log-uniform over two decades, so the set spans contracting and vacuous regimes.
pub fn check(config: &BoundConfig) -> BoundReport {
    let (n, d, depth) = (config.tokens, config.width, config.depth);
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut measured = vec![Vec::new(); depth];
    let mut bounds = vec![Vec::new(); depth];
    let mut rows: Vec<DepthRow> = (1..=depth)
        .map(|layer| DepthRow {
            layer,
            median_log10_measured: 0.0,
            median_log10_bound: 0.0,
            compared: 0,
            violations: 0,
            step_compared: 0,
            step_violations: 0,
        })
        .collect();
    let (mut compared, mut violations, mut contracting) = (0, 0, 0);
    let mut min_slack = f64::INFINITY;
    let mut log_gamma_needed = f64::NEG_INFINITY;
    let mut traces = Vec::with_capacity(config.instances);
    for _ in 0..config.instances {
        let s_x = 10f64.powf(rng.gen_range(-1.5..0.5));
        let s_w = 10f64.powf(rng.gen_range(-1.0..1.0));
        let mut x = Mat::new(n, d, normal(&mut rng, n * d, s_x)).expect("sized");
        let layers: Vec<SanLayer> = (0..depth)
            .map(|_| {
                let std = s_w / (d as f64).sqrt();
                let wq = Mat::new(d, d, normal(&mut rng, d * d, std)).expect("sized");
                let wk = Mat::new(d, d, normal(&mut rng, d * d, std)).expect("sized");
                SanLayer {
                    w_qk: wq.matmul(&wk.t()).expect("square"),
                    w_v: Mat::new(d, d, normal(&mut rng, d * d, std)).expect("sized"),
                    d_qk: d,
                }
            })
            .collect();
        let beta = layers.iter().map(SanLayer::beta).fold(0.0, f64::max);
        let log_c = (4.0 * config.gamma * beta / (d as f64).sqrt()).log10();
        let r0 = argmin_residual(&x).lower;
        if r0 == 0.0 {
            continue;
        }
        let mut trace = InstanceTrace {
            log10_res_input: r0.log10(),
            log10_c: log_c,
            log10_measured: Vec::with_capacity(depth),
            log10_bound: Vec::with_capacity(depth),
            compared: Vec::with_capacity(depth),
        };
        if log_c + 2.0 * r0.log10() < 0.0 {
            contracting += 1;
        }
        let mut prev = r0;
        for (l, layer) in layers.iter().enumerate() {
            x = layer.forward(&x);
            let bracket = argmin_residual(&x);
            let r = bracket.upper;
            let floor = 1e-12 * x.norm_1_inf();
            let p = 3f64.powi(l as i32 + 1);
            let log_bound = (p - 1.0) / 2.0 * log_c + p * r0.log10();
            let log_r = r.max(f64::MIN_POSITIVE).log10();
            measured[l].push(log_r);
            bounds[l].push(log_bound);
            let tested = log_bound > floor.max(f64::MIN_POSITIVE).log10();
            trace.log10_measured.push(log_r);
            trace.log10_bound.push(log_bound);
            trace.compared.push(tested);
            if tested {
                rows[l].compared += 1;
                compared += 1;
                let slack = log_bound - log_r;
                min_slack = min_slack.min(slack);
                if slack < 0.0 {
                    rows[l].violations += 1;
                    violations += 1;
                }
                // γ needed: solve (p−1)/2·(log_c − log γ + log γ') + p·log r0 = log r.
                if p > 1.0 && r > 0.0 {
                    let g =
                        (log_r - p * r0.log10()) / ((p - 1.0) / 2.0) - log_c + config.gamma.log10();
                    log_gamma_needed = log_gamma_needed.max(g);
                }
            }
            let log_step = log_c + 3.0 * prev.max(f64::MIN_POSITIVE).log10();
            if log_step > floor.max(f64::MIN_POSITIVE).log10() {
                rows[l].step_compared += 1;
                if log_r > log_step {
                    rows[l].step_violations += 1;
                }
            }
            prev = bracket.lower;
        }
        traces.push(trace);
    }
    let median = |v: &mut Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    for (l, row) in rows.iter_mut().enumerate() {
        row.median_log10_measured = median(&mut measured[l]);
        row.median_log10_bound = median(&mut bounds[l]);
    }
    BoundReport {
        config: config.clone(),
        rows,
        compared,
        violations,
        min_log10_slack: min_slack,
        gamma_needed: 10f64.powf(log_gamma_needed),
        contracting,
        instances: traces,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_layer_of_uniform_attention_is_rank_one() {
        // W_QK = 0 → uniform attention → every output row equals the mean row times W_V.
        let x = Mat::from_rows(&[vec![1.0, 2.0], vec![-3.0, 0.5], vec![0.0, 4.0]]).unwrap();
        let layer = SanLayer {
            w_qk: Mat::zeros(2, 2),
            w_v: Mat::from_rows(&[vec![1.0, -1.0], vec![2.0, 0.5]]).unwrap(),
            d_qk: 2,
        };
        assert!(argmin_residual(&layer.forward(&x)).upper < 1e-12);
        assert!(argmin_residual(&x).lower > 1.0);
    }

    #[test]
    fn small_check_has_no_violation() {
        let r = check(&BoundConfig {
            instances: 40,
            depth: 4,
            ..Default::default()
        });
        assert!(r.compared > 0);
        assert_eq!(r.violations, 0, "{r:?}");
    }
}
