//! Monte-Carlo evaluation and occupancy measures against exact answers.

use ferrite_rl::mdp::{to_mrp, Mdp, Transition};
use ferrite_rl::monte_carlo::{mc_evaluate, sample_episodes, StepRecord, Visit};
use ferrite_rl::occupancy::{exact_occupancy, sampled_occupancy, Normalise};
use ferrite_rl::policy::Policy;
use ferrite_rl::tutorial;
use rand::rngs::StdRng;
use rand::SeedableRng;

#[test]
fn first_visit_and_every_visit_differ_as_defined() {
    let step = |s, r| StepRecord {
        s,
        a: 0,
        r,
        next: 0,
    };
    // s0, s0, s1 with reward 1 each, gamma 1: returns from t=0,1,2 are 3, 2, 1.
    let eps = vec![vec![step(0, 1.0), step(0, 1.0), step(1, 1.0)]];
    let every = mc_evaluate(&eps, 2, 1.0, Visit::Every);
    assert_eq!(every.values, vec![2.5, 1.0]);
    assert_eq!(every.counts, vec![2, 1]);
    let first = mc_evaluate(&eps, 2, 1.0, Visit::First);
    assert_eq!(first.values, vec![3.0, 1.0]);
    assert_eq!(first.counts, vec![1, 1]);
}

#[test]
fn mc_converges_to_the_bellman_solution() {
    let mdp = tutorial::example_mdp().unwrap();
    let pi = tutorial::policy_1(&mdp);
    let exact = to_mrp(&mdp, &pi, 0.5).unwrap().analytic_values().unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let eps = sample_episodes(&mdp, &pi, &tutorial::mdp_start(), 1000, 50_000, &mut rng);
    for visit in [Visit::First, Visit::Every] {
        let est = mc_evaluate(&eps, 5, 0.5, visit);
        for (s, (e, x)) in est.values.iter().zip(&exact).enumerate() {
            assert!((e - x).abs() < 0.08, "{visit:?} s{}: {e} vs {x}", s + 1);
        }
    }
}

#[test]
fn sampling_respects_terminal_states_and_caps() {
    let mdp = tutorial::example_mdp().unwrap();
    let pi = tutorial::policy_1(&mdp);
    let mut rng = StdRng::seed_from_u64(3);
    let eps = sample_episodes(&mdp, &pi, &tutorial::mdp_start(), 5, 500, &mut rng);
    for ep in &eps {
        assert!(!ep.is_empty() && ep.len() <= 5);
        assert!(ep.iter().all(|st| st.s != 4 && pi.prob(st.s, st.a) > 0.0));
        for w in ep.windows(2) {
            assert_eq!(w[0].next, w[1].s);
        }
    }
}

#[test]
fn exact_occupancy_is_a_distribution_without_termination() {
    // Two states that swap forever under either action.
    let mut m = Mdp::new(2, 2);
    for s in 0..2 {
        m.add(s, 0, Transition::new(1.0, 1 - s, 0.0, false))
            .unwrap();
        m.add(s, 1, Transition::new(0.5, s, 0.0, false)).unwrap();
        m.add(s, 1, Transition::new(0.5, 1 - s, 0.0, false))
            .unwrap();
    }
    let pi = Policy::uniform(2, 2);
    let rho = exact_occupancy(&m, &pi, &[1.0, 0.0], 0.8).unwrap();
    let total: f64 = rho.iter().sum();
    assert!((total - 1.0).abs() < 1e-12);
    // Each state's mass splits evenly over its two actions.
    assert!((rho[0] - rho[1]).abs() < 1e-12 && (rho[2] - rho[3]).abs() < 1e-12);
}

#[test]
fn sampled_occupancy_matches_exact() {
    let mdp = tutorial::example_mdp().unwrap();
    let start = tutorial::mdp_start();
    let mut rng = StdRng::seed_from_u64(5);
    for pi in [tutorial::policy_1(&mdp), tutorial::policy_2()] {
        let exact = exact_occupancy(&mdp, &pi, &start, 0.5).unwrap();
        let eps = sample_episodes(&mdp, &pi, &start, 1000, 50_000, &mut rng);
        for (s, a) in [(3, 6), (0, 0), (2, 4)] {
            let est = sampled_occupancy(&eps, s, a, 0.5, Normalise::Episodes);
            assert!(
                (est - exact[s * 7 + a]).abs() < 0.01,
                "({s},{a}): {est} vs {}",
                exact[s * 7 + a]
            );
        }
        // The tutorial's alive-normalised estimator is biased upwards.
        let alive = sampled_occupancy(&eps, 3, 6, 0.5, Normalise::AliveAtStep);
        assert!(alive > exact[3 * 7 + 6]);
    }
    assert!(exact_occupancy(&mdp, &tutorial::policy_2(), &start, 1.0).is_err());
}
