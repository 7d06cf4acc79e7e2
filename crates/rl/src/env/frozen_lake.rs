//! FrozenLake with gymnasium's `FrozenLake-v1` dynamics: actions 0=left
//! 1=down 2=right 3=up; on a slippery lake the agent moves in the intended
//! direction or either perpendicular one, listed as (a−1)%4, a, (a+1)%4 with
//! probabilities 1/3 and (1 − 1/3)/2 (gymnasium's `success_rate`/`fail_rate`);
//! reward 1 on entering the goal, 0 otherwise; holes and the goal terminate
//! and are absorbing `(1.0, s, 0, True)`; time limit 100 (4x4) / 200 (8x8).

use super::grid_map::GridMap;
use super::{Cell, Layout, TabularEnv};
use crate::mdp::Transition;
use anyhow::{bail, Result};

/// gymnasium's built-in 4x4 map.
pub const MAP_4X4: &str = "SFFF\nFHFH\nFFFH\nHFFG";
/// gymnasium's built-in 8x8 map.
pub const MAP_8X8: &str =
    "SFFFFFFF\nFFFFFFFF\nFFFHFFFF\nFFFFFHFF\nFFFHFFFF\nFHHFFFHF\nFHFFHFHF\nFFFHFFFG";

/// `FrozenLake-v1` ("4x4", time limit 100) or `FrozenLake8x8-v1` ("8x8", time limit 200).
pub fn named(map_name: &str, slippery: bool) -> Result<TabularEnv> {
    let (text, limit) = match map_name {
        "4x4" => (MAP_4X4, 100),
        "8x8" => (MAP_8X8, 200),
        other => bail!("unknown FrozenLake map '{other}' (4x4 or 8x8)"),
    };
    let grid = GridMap::parse(text)?;
    from_grid(
        &grid,
        slippery,
        Some(limit),
        &format!("frozenlake-{map_name}"),
    )
}

/// Build a FrozenLake-rules environment from any parsed grid.
pub fn from_grid(
    grid: &GridMap,
    slippery: bool,
    max_episode_steps: Option<usize>,
    name: &str,
) -> Result<TabularEnv> {
    let (nrow, ncol) = (grid.nrow, grid.ncol);
    let success = 1.0 / 3.0;
    let fail = (1.0 - success) / 2.0;
    let moved = |row: usize, col: usize, a: usize| -> (usize, usize) {
        match a {
            0 => (row, col.saturating_sub(1)),
            1 => ((row + 1).min(nrow - 1), col),
            2 => (row, (col + 1).min(ncol - 1)),
            _ => (row.saturating_sub(1), col),
        }
    };
    let outcome = |row: usize, col: usize, a: usize, prob: f64| {
        let (r, c) = moved(row, col, a);
        let next = r * ncol + c;
        let cell = grid.cells[next];
        let reward = if cell == Cell::Goal { 1.0 } else { 0.0 };
        Transition::new(
            prob,
            next,
            reward,
            matches!(cell, Cell::Goal | Cell::Hazard),
        )
    };
    let mut table = Vec::with_capacity(nrow * ncol * 4);
    for s in 0..nrow * ncol {
        let (row, col) = (s / ncol, s % ncol);
        for a in 0..4 {
            if matches!(grid.cells[s], Cell::Goal | Cell::Hazard) {
                table.push(vec![Transition::new(1.0, s, 0.0, true)]);
            } else if slippery {
                table.push(
                    [(a + 3) % 4, a, (a + 1) % 4]
                        .into_iter()
                        .map(|b| outcome(row, col, b, if b == a { success } else { fail }))
                        .collect(),
                );
            } else {
                table.push(vec![outcome(row, col, a, 1.0)]);
            }
        }
    }
    let start = grid
        .cells
        .iter()
        .map(|&c| if c == Cell::Start { 1.0 } else { 0.0 })
        .collect();
    let layout = Layout {
        nrow,
        ncol,
        cells: grid.cells.clone(),
        arrows: vec!['<', 'v', '>', '^'],
    };
    let name = if slippery {
        name.to_string()
    } else {
        format!("{name} (not slippery)")
    };
    TabularEnv::new(&name, 4, table, start, max_episode_steps, layout)
}
