//! Text rendering of value tables and policies on a grid, in the tutorial's style.

use crate::env::{Cell, Layout};
use crate::policy::Policy;

/// Arrows of all actions with non-zero probability, in action order.
pub fn arrows(layout: &Layout, policy: &Policy, s: usize) -> String {
    policy
        .support(s)
        .iter()
        .map(|&a| layout.arrows[a])
        .collect()
}

/// Values as a grid, 3 decimals.
pub fn value_grid(layout: &Layout, values: &[f64]) -> String {
    let mut out = String::new();
    for row in values.chunks(layout.ncol) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:7.3}")).collect();
        out.push_str(&cells.join(" "));
        out.push('\n');
    }
    out
}

/// Policy as a grid: one `o`-padded arrow column per action (`ovo>`), `****` hazards, `EEEE` goals.
pub fn policy_grid(layout: &Layout, policy: &Policy) -> String {
    let na = layout.arrows.len();
    let mut out = String::new();
    for r in 0..layout.nrow {
        let cells: Vec<String> = (0..layout.ncol)
            .map(|c| {
                let s = r * layout.ncol + c;
                match layout.cells[s] {
                    Cell::Hazard => "*".repeat(na),
                    Cell::Goal => "E".repeat(na),
                    _ => (0..na)
                        .map(|a| {
                            if policy.prob(s, a) > 0.0 {
                                layout.arrows[a]
                            } else {
                                'o'
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        out.push_str(&cells.join(" "));
        out.push('\n');
    }
    out
}
