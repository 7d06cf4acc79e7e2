//! Where each named weight of a DiT lives in one flat `f32` vector (names sorted, so the order
//! is the `VarMap`'s), and the typed views the forward and backward passes index it with. The
//! gradients use the same layout, so a range addresses a weight and its gradient alike.

use anyhow::{ensure, Context, Result};
use std::ops::Range;

/// Named tensors laid end to end, sorted by name.
#[derive(Debug, Clone)]
pub struct ParamLayout {
    entries: Vec<(String, Vec<usize>, Range<usize>)>,
    len: usize,
}

impl ParamLayout {
    /// The layout of `shapes` (name and dims), sorted by name.
    pub fn new(mut shapes: Vec<(String, Vec<usize>)>) -> Self {
        shapes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut len = 0;
        let entries = shapes
            .into_iter()
            .map(|(name, dims)| {
                let n: usize = dims.iter().product();
                len += n;
                (name, dims, len - n..len)
            })
            .collect();
        Self { entries, len }
    }

    /// Elements in all tensors together.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every tensor's name, dims and range, in layout order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[usize], Range<usize>)> {
        self.entries
            .iter()
            .map(|(n, d, r)| (n.as_str(), d.as_slice(), r.clone()))
    }

    /// The range of tensor `name`, checked to have `numel` elements.
    pub(crate) fn range(&self, name: &str, numel: usize) -> Result<Range<usize>> {
        let (_, dims, range) = self
            .entries
            .iter()
            .find(|(n, _, _)| n == name)
            .with_context(|| format!("the DiT has no weight {name}"))?;
        ensure!(
            range.len() == numel,
            "weight {name} has shape {dims:?}, expected {numel} elements"
        );
        Ok(range.clone())
    }
}

/// A linear layer `y = x Wᵀ + b` (`W: [out, inp]`) inside a [`ParamLayout`].
#[derive(Debug, Clone)]
pub(crate) struct LinearParams {
    pub w: Range<usize>,
    pub b: Range<usize>,
    pub out: usize,
    pub inp: usize,
}

impl LinearParams {
    /// `prefix.weight` and `prefix.bias`, checked to be `[out, inp]` and `[out]` in size.
    pub fn find(layout: &ParamLayout, prefix: &str, out: usize, inp: usize) -> Result<Self> {
        Ok(Self {
            w: layout.range(&format!("{prefix}.weight"), out * inp)?,
            b: layout.range(&format!("{prefix}.bias"), out)?,
            out,
            inp,
        })
    }
}

/// One `[B, width]` chunk of a per-sample modulation vector: columns `at..at + d` of rows of
/// `stride` (adaLN's `chunk(6, dim=1)`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunk {
    pub at: usize,
    pub stride: usize,
    pub d: usize,
}

impl Chunk {
    /// Chunk `i` of `n` equal chunks of `d` columns.
    pub fn nth(i: usize, n: usize, d: usize) -> Self {
        Self {
            at: i * d,
            stride: n * d,
            d,
        }
    }

    /// Sample `b`'s entries of `m`.
    pub fn of<'a>(&self, m: &'a [f32], b: usize) -> &'a [f32] {
        &m[b * self.stride + self.at..][..self.d]
    }

    /// Sample `b`'s entries of `m`, mutably.
    pub fn of_mut<'a>(&self, m: &'a mut [f32], b: usize) -> &'a mut [f32] {
        &mut m[b * self.stride + self.at..][..self.d]
    }
}
