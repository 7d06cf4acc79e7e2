//! Environment behaviour: gymnasium semantics, the tutorial variant, maps and errors.

use ferrite_rl::env::grid_map::{GridMap, MapError};
use ferrite_rl::env::{cliff_walking, frozen_lake, make, Env};
use ferrite_rl::Model;

#[test]
fn gymnasium_cliff_teleports_without_terminating() {
    let mut env = cliff_walking::gymnasium(false).unwrap();
    assert_eq!(env.reset(Some(0)), 36);
    let step = env.step(1); // right, into the cliff
    assert_eq!(
        (step.obs, step.reward, step.terminated, step.truncated),
        (36, -100.0, false, false)
    );
    env.step(0); // up to 24
    for _ in 0..11 {
        env.step(1);
    }
    let step = env.step(2); // down into the goal from 35
    assert_eq!((step.obs, step.reward, step.terminated), (47, -1.0, true));
}

#[test]
fn tutorial_cliff_ends_the_episode() {
    let mut env = cliff_walking::tutorial().unwrap();
    assert_eq!(env.reset(Some(0)), 36);
    let step = env.step(3); // right (tutorial order up, down, left, right)
    assert_eq!((step.obs, step.reward, step.terminated), (37, -100.0, true));
    assert_eq!(
        env.transitions(40, 0)[0],
        ferrite_rl::Transition::new(1.0, 40, 0.0, true)
    );
}

#[test]
fn frozenlake_time_limit_truncates() {
    let mut env = frozen_lake::named("4x4", false).unwrap();
    env.reset(Some(0));
    for i in 1..=100 {
        let step = env.step(3); // up from the start: stays put
        assert_eq!(step.truncated, i == 100);
        assert!(!step.terminated);
    }
}

#[test]
fn slippery_frequencies_are_one_third() {
    let mut env = frozen_lake::named("8x8", true).unwrap();
    let mut counts = [0usize; 64];
    let n = 30_000;
    for i in 0..n {
        env.reset(Some(i));
        counts[env.step(1).obs] += 1; // "down" from 0: 1/3 each to 0 (left), 8 (down), 1 (right)
    }
    for s in [0, 8, 1] {
        let f = counts[s] as f64 / n as f64;
        assert!((f - 1.0 / 3.0).abs() < 0.015, "state {s}: {f}");
    }
}

#[test]
fn map_parsing() {
    let g = GridMap::parse("# comment\nS.H\n\nFFG\n").unwrap();
    assert_eq!((g.nrow, g.ncol), (2, 3));
    assert_eq!(GridMap::parse(""), Err(MapError::Empty));
    assert_eq!(
        GridMap::parse("SF\nF"),
        Err(MapError::Ragged {
            line: 2,
            got: 1,
            want: 2
        })
    );
    assert_eq!(
        GridMap::parse("SX\nFG"),
        Err(MapError::BadCell { line: 1, ch: 'X' })
    );
    assert_eq!(GridMap::parse("FF\nFG"), Err(MapError::Start(0)));
    assert_eq!(GridMap::parse("SF\nFS"), Err(MapError::Start(2)));
    assert_eq!(GridMap::parse("SF\nFF"), Err(MapError::NoGoal));
}

#[test]
fn map_file_equals_builtin_map() {
    let path = std::env::temp_dir().join(format!("ferrite-rl-map-{}.txt", std::process::id()));
    std::fs::write(&path, frozen_lake::MAP_4X4).unwrap();
    let from_file = make(None, None, Some(&path)).unwrap();
    let builtin = frozen_lake::named("4x4", true).unwrap();
    std::fs::remove_file(&path).unwrap();
    for s in 0..16 {
        for a in 0..4 {
            assert_eq!(from_file.transitions(s, a), builtin.transitions(s, a));
        }
    }
}

#[test]
fn make_errors_are_one_line() {
    for err in [
        make(Some("mountaincar"), None, None).unwrap_err(),
        make(None, None, None).unwrap_err(),
        make(Some("cliffwalking-tutorial"), Some(true), None).unwrap_err(),
        make(
            None,
            None,
            Some(std::path::Path::new("/nonexistent/map.txt")),
        )
        .unwrap_err(),
    ] {
        let msg = format!("{err:#}");
        assert!(!msg.contains('\n') && !msg.is_empty(), "{msg}");
    }
    let msg = format!("{:#}", make(Some("mountaincar"), None, None).unwrap_err());
    assert!(msg.contains("unknown environment 'mountaincar'"), "{msg}");
}

#[test]
fn named_environments_have_expected_sizes() {
    for (name, ns) in [
        ("cliffwalking", 48),
        ("cliffwalking-tutorial", 48),
        ("frozenlake-4x4", 16),
        ("frozenlake-8x8", 64),
    ] {
        let env = make(Some(name), None, None).unwrap();
        assert_eq!((env.num_states(), env.num_actions()), (ns, 4), "{name}");
    }
}
