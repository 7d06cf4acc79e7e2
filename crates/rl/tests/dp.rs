//! Dynamic programming on small problems with closed-form answers.

use ferrite_rl::env::{cliff_walking, frozen_lake};
use ferrite_rl::mdp::{action_values, to_mrp, Mdp, Transition};
use ferrite_rl::policy::Policy;
use ferrite_rl::policy_evaluation::evaluate_policy;
use ferrite_rl::policy_iteration::policy_iteration;
use ferrite_rl::value_iteration::value_iteration;

/// One state; action 0 "stay" pays 1 and loops, action 1 "leave" pays 5 and terminates.
fn stay_or_leave() -> Mdp {
    let mut m = Mdp::new(1, 2);
    m.add(0, 0, Transition::new(1.0, 0, 1.0, false)).unwrap();
    m.add(0, 1, Transition::new(1.0, 0, 5.0, true)).unwrap();
    m
}

#[test]
fn stay_or_leave_optimal_values() {
    let m = stay_or_leave();
    // gamma 0.9: staying forever is worth 1/(1-0.9) = 10 > 5.
    let vi = value_iteration(&m, 0.9, 1e-10).unwrap();
    assert!((vi.values[0] - 10.0).abs() < 1e-8);
    assert_eq!(vi.policy.support(0), vec![0]);
    let pi = policy_iteration(&m, 0.9, 1e-10).unwrap();
    assert!((pi.values[0] - 10.0).abs() < 1e-8);
    assert_eq!(pi.policy.support(0), vec![0]);
    // gamma 0.5: staying is worth 2 < 5, so leave.
    let vi = value_iteration(&m, 0.5, 1e-10).unwrap();
    assert!((vi.values[0] - 5.0).abs() < 1e-12);
    assert_eq!(vi.policy.support(0), vec![1]);
}

#[test]
fn uniform_policy_evaluation_matches_closed_form_and_analytic() {
    let m = stay_or_leave();
    let pi = Policy::uniform(1, 2);
    // V = 0.5 (1 + 0.9 V) + 0.5 * 5  =>  V = 3 / 0.55.
    let want = 3.0 / 0.55;
    let eval = evaluate_policy(&m, &pi, 0.9, 1e-12, vec![0.0], 100_000);
    assert!(eval.converged);
    assert!((eval.values[0] - want).abs() < 1e-9);
    let analytic = to_mrp(&m, &pi, 0.9).unwrap().analytic_values().unwrap();
    assert!((analytic[0] - want).abs() < 1e-12);
    let q = action_values(&m, &analytic, 0.9);
    assert!((q[0] - (1.0 + 0.9 * want)).abs() < 1e-12);
    assert_eq!(q[1], 5.0);
}

#[test]
fn evaluation_reports_non_convergence() {
    let m = stay_or_leave();
    let eval = evaluate_policy(&m, &Policy::uniform(1, 2), 0.9, 1e-12, vec![0.0], 3);
    assert!(!eval.converged);
    assert_eq!(eval.sweeps, 3);
}

#[test]
fn undiscounted_cliff_walking_shortest_path_is_13() {
    for env in [
        cliff_walking::tutorial().unwrap(),
        cliff_walking::gymnasium(false).unwrap(),
    ] {
        let vi = value_iteration(&env, 1.0, 1e-9).unwrap();
        assert!(
            (vi.values[36] + 13.0).abs() < 1e-9,
            "{}: {}",
            env.name,
            vi.values[36]
        );
    }
}

#[test]
fn policy_and_value_iteration_agree_on_frozenlake_8x8() {
    let env = frozen_lake::named("8x8", true).unwrap();
    let vi = value_iteration(&env, 0.99, 1e-10).unwrap();
    let pi = policy_iteration(&env, 0.99, 1e-10).unwrap();
    for (a, b) in vi.values.iter().zip(&pi.values) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    // The optimal policy evaluated exactly gives the same values.
    let exact = to_mrp(&env, &pi.policy, 0.99)
        .unwrap()
        .analytic_values()
        .unwrap();
    for (a, b) in exact.iter().zip(&pi.values) {
        assert!((a - b).abs() < 1e-6);
    }
    assert!(
        vi.values[0] > 0.4 && vi.values[0] < 0.6,
        "start value {}",
        vi.values[0]
    );
}

#[test]
fn bad_parameters_are_errors() {
    let env = frozen_lake::named("4x4", true).unwrap();
    assert!(value_iteration(&env, 1.5, 1e-3).is_err());
    assert!(value_iteration(&env, 0.9, 0.0).is_err());
    assert!(policy_iteration(&env, -0.1, 1e-3).is_err());
    assert!(policy_iteration(&env, 0.9, f64::NAN).is_err());
}

#[test]
fn mdp_rejects_bad_transitions() {
    let mut m = Mdp::new(2, 1);
    assert!(m.add(0, 0, Transition::new(1.5, 1, 0.0, false)).is_err());
    assert!(m.add(0, 3, Transition::new(1.0, 1, 0.0, false)).is_err());
    assert!(m.add(0, 0, Transition::new(1.0, 2, 0.0, false)).is_err());
    assert!(to_mrp(&m, &Policy::uniform(3, 1), 0.9).is_err());
}
