//! The Hands-on-RL tutorial's published numbers (chapters 3 and 4), reproduced exactly.

use ferrite_rl::env::{cliff_walking, frozen_lake};
use ferrite_rl::mdp::to_mrp;
use ferrite_rl::policy_iteration::policy_iteration;
use ferrite_rl::tutorial;
use ferrite_rl::value_iteration::value_iteration;

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "length mismatch: {got:?} vs {want:?}"
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "index {i}: got {g}, want {w} (tol {tol})\n{got:?}"
        );
    }
}

#[test]
fn mrp_chain_return_and_values() {
    let mrp = tutorial::example_mrp().unwrap();
    assert_eq!(mrp.chain_return(&[0, 1, 2, 5], 0), -2.5);
    let want = [
        -2.01950168,
        -2.21451846,
        1.16142785,
        10.53809283,
        3.58728554,
        0.0,
    ];
    assert_close(&mrp.analytic_values().unwrap(), &want, 1e-8);
    let (iter, sweeps) = mrp.iterative_values(1e-12, 10_000);
    assert_close(&iter, &want, 1e-8);
    assert!(sweeps > 1 && sweeps < 10_000);
}

#[test]
fn mdp_uniform_policy_values() {
    let mdp = tutorial::example_mdp().unwrap();
    let mrp = to_mrp(&mdp, &tutorial::policy_1(&mdp), 0.5).unwrap();
    // The tutorial's hand-folded MRP.
    let p = [
        [0.5, 0.5, 0.0, 0.0, 0.0],
        [0.5, 0.0, 0.5, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.5, 0.0],
        [0.0, 0.1, 0.2, 0.2, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
    ];
    for (row, want) in mrp.p.iter().zip(p) {
        assert_close(row, &want, 1e-12);
    }
    assert_close(&mrp.r, &[-0.5, -1.5, -1.0, 5.5, 0.0], 1e-12);
    let want = [-1.22555411, -1.67666232, 0.51890482, 6.0756193, 0.0];
    assert_close(&mrp.analytic_values().unwrap(), &want, 1e-7);
}

const CLIFF_VALUES: [f64; 48] = [
    -7.712, -7.458, -7.176, -6.862, -6.513, -6.126, -5.695, -5.217, -4.686, -4.095, -3.439, -2.710,
    -7.458, -7.176, -6.862, -6.513, -6.126, -5.695, -5.217, -4.686, -4.095, -3.439, -2.710, -1.900,
    -7.176, -6.862, -6.513, -6.126, -5.695, -5.217, -4.686, -4.095, -3.439, -2.710, -1.900, -1.000,
    -7.458, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
];

#[test]
fn cliff_policy_iteration_sweeps_60_72_44_12_1() {
    let env = cliff_walking::tutorial().unwrap();
    let r = policy_iteration(&env, 0.9, 0.001).unwrap();
    assert_eq!(r.evaluation_sweeps, vec![60, 72, 44, 12, 1]);
    assert_close(&r.values, &CLIFF_VALUES, 5e-4);
    // Tutorial's printed policy: "ovo>" (down or right) in the top two rows, ">" in row 2,
    // "v" in the last column, "^" at the start.
    assert_eq!(r.policy.support(0), vec![1, 3]);
    assert_eq!(r.policy.support(24), vec![3]);
    assert_eq!(r.policy.support(35), vec![1]);
    assert_eq!(r.policy.support(36), vec![0]);
}

#[test]
fn cliff_value_iteration_14_rounds_same_values() {
    let env = cliff_walking::tutorial().unwrap();
    let r = value_iteration(&env, 0.9, 0.001).unwrap();
    assert_eq!(r.tutorial_rounds(), 14);
    assert_eq!(r.sweeps, 15);
    assert_close(&r.values, &CLIFF_VALUES, 5e-4);
    let pi = policy_iteration(&env, 0.9, 0.001).unwrap();
    assert_eq!(r.policy, pi.policy);
}

#[test]
fn frozenlake_4x4_slippery_values() {
    let env = frozen_lake::named("4x4", true).unwrap();
    let want = [
        0.069, 0.061, 0.074, 0.056, 0.092, 0.0, 0.112, 0.0, 0.145, 0.247, 0.300, 0.0, 0.0, 0.380,
        0.639, 0.0,
    ];
    let pi = policy_iteration(&env, 0.9, 1e-5).unwrap();
    assert_eq!(pi.evaluation_sweeps, vec![25, 58]);
    assert_close(&pi.values, &want, 5e-4);
    let vi = value_iteration(&env, 0.9, 1e-5).unwrap();
    assert_eq!(vi.tutorial_rounds(), 60);
    assert_close(&vi.values, &want, 5e-4);
    // Tutorial's policy row 1: "<ooo **** <o>o ****".
    assert_eq!(pi.policy.support(6), vec![0, 2]);
}
