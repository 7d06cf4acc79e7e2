//! Per-op time shares of the forward pass (what `ferrite bench` prints): each op of interest
//! opens a [`span`]; time is charged exclusively to the innermost open span of the calling
//! thread, so nested spans (RoPE inside a cache update) are not counted twice. Off by default;
//! when off a span costs one relaxed atomic load.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The op classes timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Linear projections, the output projection included.
    Matmul,
    /// KV-cache update and softmax(q Kᵀ/√d) V.
    Attention,
    /// RMSNorm.
    Norm,
    /// Rotary embeddings (queries; keys where the cache rotates them).
    Rope,
    /// Choosing the next token from the logits.
    Sampling,
}

impl Op {
    /// Every op, in report order.
    pub const ALL: [Op; 5] = [Op::Matmul, Op::Attention, Op::Norm, Op::Rope, Op::Sampling];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Op::Matmul => "matmul",
            Op::Attention => "attention",
            Op::Norm => "norm",
            Op::Rope => "rope",
            Op::Sampling => "sampling",
        }
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

thread_local! {
    static CURRENT: Cell<Option<(Op, Instant)>> = const { Cell::new(None) };
}

fn charge(op: Op, since: Instant, now: Instant) {
    NANOS[op as usize].fetch_add((now - since).as_nanos() as u64, Relaxed);
}

/// Turns timing on or off (process-wide).
pub fn enable(on: bool) {
    ENABLED.store(on, Relaxed);
}

/// Clears the accumulated times.
pub fn reset() {
    NANOS.iter().for_each(|n| n.store(0, Relaxed));
}

/// Accumulated exclusive time per op since the last [`reset`].
pub fn totals() -> Vec<(Op, Duration)> {
    Op::ALL
        .iter()
        .map(|&op| (op, Duration::from_nanos(NANOS[op as usize].load(Relaxed))))
        .collect()
}

/// An open timing span; closing it (drop) charges its time and resumes the enclosing one.
#[must_use = "a span measures until it is dropped"]
pub struct Span {
    outer: Option<Option<Op>>,
}

/// Opens a span for `op` on this thread (a no-op unless [`enable`]d).
pub fn span(op: Op) -> Span {
    if !ENABLED.load(Relaxed) {
        return Span { outer: None };
    }
    let now = Instant::now();
    let outer = CURRENT.with(|c| {
        let outer = c.get();
        if let Some((o, since)) = outer {
            charge(o, since, now);
        }
        c.set(Some((op, now)));
        outer.map(|(o, _)| o)
    });
    Span { outer: Some(outer) }
}

impl Drop for Span {
    fn drop(&mut self) {
        let Some(outer) = self.outer else { return };
        let now = Instant::now();
        CURRENT.with(|c| {
            if let Some((op, since)) = c.get() {
                charge(op, since, now);
            }
            c.set(outer.map(|o| (o, now)));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_spans_are_charged_exclusively() {
        enable(true);
        reset();
        let spin = |d: Duration| {
            let t = Instant::now();
            while t.elapsed() < d {}
        };
        {
            let _a = span(Op::Attention);
            spin(Duration::from_millis(20));
            {
                let _r = span(Op::Rope);
                spin(Duration::from_millis(30));
            }
            spin(Duration::from_millis(20));
        }
        enable(false);
        let _off = span(Op::Norm);
        let t: Vec<_> = totals().into_iter().map(|(_, d)| d.as_millis()).collect();
        assert!((40..60).contains(&t[1]), "attention {} ms", t[1]);
        assert!((30..45).contains(&t[3]), "rope {} ms", t[3]);
        assert_eq!(t[2], 0, "disabled spans record nothing");
    }
}
