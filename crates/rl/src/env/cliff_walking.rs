//! CliffWalking (Sutton & Barto Example 6.6): a 4x12 grid, start bottom-left
//! (state 36), goal bottom-right (state 47), cliff along the bottom row between.
//!
//! Two variants with different, deliberately preserved, rules:
//!
//! * [`gymnasium`] — `CliffWalking-v1`: actions 0=up 1=right 2=down 3=left,
//!   −1 per step, stepping into the cliff gives −100 and teleports to the
//!   start *without* terminating; only reaching 47 terminates. Every cell,
//!   cliff and goal included, has geometric outcomes (as gymnasium's `P`).
//!   The optional slippery mode moves to (a−1)%4, a, (a+1)%4 w.p. 1/3 each.
//! * [`tutorial`] — Hands-on-RL ch. 4–6: actions 0=up 1=down 2=left 3=right,
//!   −1 per step, the cliff gives −100 and *ends* the episode, and cliff/goal
//!   cells are absorbing with `(1, s, 0, done)`.

use super::{Cell, Layout, TabularEnv};
use crate::mdp::Transition;
use anyhow::Result;

const NROW: usize = 4;
const NCOL: usize = 12;
const START: usize = 36;
const GOAL: usize = 47;

fn layout(arrows: Vec<char>) -> Layout {
    let cells = (0..NROW * NCOL)
        .map(|s| match s {
            START => Cell::Start,
            GOAL => Cell::Goal,
            s if s > START => Cell::Hazard,
            _ => Cell::Free,
        })
        .collect();
    Layout {
        nrow: NROW,
        ncol: NCOL,
        cells,
        arrows,
    }
}

fn start_distribution() -> Vec<f64> {
    let mut d = vec![0.0; NROW * NCOL];
    d[START] = 1.0;
    d
}

/// Move (row, col) by (dr, dc), clamped to the grid.
fn clamp_move(row: usize, col: usize, dr: isize, dc: isize) -> (usize, usize) {
    let r = (row as isize + dr).clamp(0, NROW as isize - 1) as usize;
    let c = (col as isize + dc).clamp(0, NCOL as isize - 1) as usize;
    (r, c)
}

/// gymnasium's `CliffWalking-v1` (`slippery = true` gives `CliffWalkingSlippery-v1`).
pub fn gymnasium(slippery: bool) -> Result<TabularEnv> {
    // (drow, dcol) for up, right, down, left — gymnasium's POSITION_MAPPING.
    const DELTAS: [(isize, isize); 4] = [(-1, 0), (0, 1), (1, 0), (0, -1)];
    let mut table = Vec::with_capacity(NROW * NCOL * 4);
    for s in 0..NROW * NCOL {
        let (row, col) = (s / NCOL, s % NCOL);
        for a in 0..4 {
            let moves: Vec<usize> = if slippery {
                vec![(a + 3) % 4, a, (a + 1) % 4]
            } else {
                vec![a]
            };
            let prob = 1.0 / moves.len() as f64;
            let outs = moves
                .into_iter()
                .map(|m| {
                    let (r, c) = clamp_move(row, col, DELTAS[m].0, DELTAS[m].1);
                    let next = r * NCOL + c;
                    if r == NROW - 1 && c > 0 && c < NCOL - 1 {
                        Transition::new(prob, START, -100.0, false)
                    } else {
                        Transition::new(prob, next, -1.0, next == GOAL)
                    }
                })
                .collect();
            table.push(outs);
        }
    }
    let name = if slippery {
        "cliffwalking (slippery)"
    } else {
        "cliffwalking"
    };
    TabularEnv::new(
        name,
        4,
        table,
        start_distribution(),
        None,
        layout(vec!['^', '>', 'v', '<']),
    )
}

/// The Hands-on-RL tutorial's CliffWalking (cliff ends the episode; its action order).
pub fn tutorial() -> Result<TabularEnv> {
    // (dcol, drow) for up, down, left, right — the tutorial's `change` list.
    const CHANGE: [(isize, isize); 4] = [(0, -1), (0, 1), (-1, 0), (1, 0)];
    let mut table = Vec::with_capacity(NROW * NCOL * 4);
    for s in 0..NROW * NCOL {
        let (row, col) = (s / NCOL, s % NCOL);
        for (dc, dr) in CHANGE {
            if row == NROW - 1 && col > 0 {
                table.push(vec![Transition::new(1.0, s, 0.0, true)]);
                continue;
            }
            let (r, c) = clamp_move(row, col, dr, dc);
            let next = r * NCOL + c;
            let done = r == NROW - 1 && c > 0;
            let reward = if done && c != NCOL - 1 { -100.0 } else { -1.0 };
            table.push(vec![Transition::new(1.0, next, reward, done)]);
        }
    }
    TabularEnv::new(
        "cliffwalking-tutorial",
        4,
        table,
        start_distribution(),
        None,
        layout(vec!['^', 'v', '<', '>']),
    )
}
