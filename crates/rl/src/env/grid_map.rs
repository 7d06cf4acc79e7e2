//! Small text maps for custom grid worlds, in FrozenLake's alphabet:
//! `S` start, `F` (or `.`) frozen/free, `H` hole, `G` goal. One row per line;
//! blank lines and lines starting with `#` are ignored. The map is turned into
//! an MDP with FrozenLake's rules by [`super::frozen_lake::from_grid`].

use super::Cell;
use thiserror::Error;

/// Why a map failed to parse.
#[derive(Debug, Error, PartialEq)]
pub enum MapError {
    /// No rows.
    #[error("map is empty")]
    Empty,
    /// Rows of different lengths.
    #[error("line {line}: row has {got} cells, expected {want} (rows must be equally long)")]
    Ragged {
        /// 1-based line number.
        line: usize,
        /// Cells in this row.
        got: usize,
        /// Cells in the first row.
        want: usize,
    },
    /// Unknown character.
    #[error("line {line}: unknown cell '{ch}' (use S, F or '.', H, G)")]
    BadCell {
        /// 1-based line number.
        line: usize,
        /// The offending character.
        ch: char,
    },
    /// Not exactly one start.
    #[error("map needs exactly one start 'S', found {0}")]
    Start(usize),
    /// No goal.
    #[error("map needs at least one goal 'G'")]
    NoGoal,
}

/// A parsed rectangular grid.
#[derive(Debug, Clone, PartialEq)]
pub struct GridMap {
    /// Rows.
    pub nrow: usize,
    /// Columns.
    pub ncol: usize,
    /// Row-major cells.
    pub cells: Vec<Cell>,
}

impl GridMap {
    /// Parse a map such as `"SFFF\nFHFH\nFFFH\nHFFG"`.
    pub fn parse(text: &str) -> Result<Self, MapError> {
        let mut cells = Vec::new();
        let mut ncol = 0;
        let mut nrow = 0;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let row: Vec<Cell> = line
                .chars()
                .map(|ch| match ch {
                    'S' => Ok(Cell::Start),
                    'F' | '.' => Ok(Cell::Free),
                    'H' => Ok(Cell::Hazard),
                    'G' => Ok(Cell::Goal),
                    ch => Err(MapError::BadCell { line: i + 1, ch }),
                })
                .collect::<Result<_, _>>()?;
            if nrow == 0 {
                ncol = row.len();
            } else if row.len() != ncol {
                return Err(MapError::Ragged {
                    line: i + 1,
                    got: row.len(),
                    want: ncol,
                });
            }
            cells.extend(row);
            nrow += 1;
        }
        if nrow == 0 {
            return Err(MapError::Empty);
        }
        let starts = cells.iter().filter(|&&c| c == Cell::Start).count();
        if starts != 1 {
            return Err(MapError::Start(starts));
        }
        if !cells.contains(&Cell::Goal) {
            return Err(MapError::NoGoal);
        }
        Ok(Self { nrow, ncol, cells })
    }
}
