//! Perplexity curves of long streams (Xiao et al. 2023, Fig. 3 and Fig. 5): running perplexity
//! every `every` tokens, written as CSV rows (one policy per run, merged into one file) and drawn
//! as a PNG with one line per policy.

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Header of a curve file.
pub const CSV_HEADER: &str = "policy,tokens,ppl_running,ppl_block,kv_bytes";

/// One curve point.
#[derive(Debug, Clone, PartialEq)]
pub struct CurvePoint {
    /// Predictions made so far (tokens streamed).
    pub tokens: usize,
    /// exp(mean NLL) of every scored prediction so far.
    pub ppl_running: f64,
    /// exp(mean NLL) of the scored predictions since the previous point.
    pub ppl_block: f64,
    /// KV heap bytes after `tokens` steps.
    pub kv_bytes: usize,
}

/// Curve points every `every` predictions (and at the end) from `(prediction index, NLL)` pairs;
/// `bytes[n]` is the KV footprint after `n` steps (the last entry is used beyond the end).
pub fn points(
    scored: &[(usize, f64)],
    bytes: &[usize],
    total: usize,
    every: usize,
) -> Vec<CurvePoint> {
    let every = every.max(1);
    let mut marks: Vec<usize> = (every..=total).step_by(every).collect();
    if marks.last() != Some(&total) && total > 0 {
        marks.push(total);
    }
    let mut out = Vec::with_capacity(marks.len());
    let (mut sum, mut count, mut next) = (0.0, 0usize, 0usize);
    for tokens in marks {
        let (mut block_sum, mut block_count) = (0.0, 0usize);
        while next < scored.len() && scored[next].0 < tokens {
            block_sum += scored[next].1;
            block_count += 1;
            next += 1;
        }
        sum += block_sum;
        count += block_count;
        if count == 0 {
            continue;
        }
        let mean = |s: f64, c: usize| {
            if c == 0 {
                f64::NAN
            } else {
                (s / c as f64).exp()
            }
        };
        out.push(CurvePoint {
            tokens,
            ppl_running: mean(sum, count),
            ppl_block: mean(block_sum, block_count),
            kv_bytes: bytes.get(tokens).or(bytes.last()).copied().unwrap_or(0),
        });
    }
    out
}

/// Writes `policy`'s points into the CSV at `path`, keeping the rows of other policies already
/// there (a run replaces its own policy's rows).
pub fn write_csv(path: &Path, policy: &str, pts: &[CurvePoint]) -> Result<()> {
    let name = policy.replace(',', ";");
    let mut rows: Vec<String> = Vec::new();
    if path.exists() {
        let old = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read curve {}", path.display()))?;
        rows.extend(
            old.lines()
                .skip(1)
                .filter(|l| l.split(',').next() != Some(name.as_str()))
                .map(str::to_string),
        );
    }
    rows.extend(pts.iter().map(|p| {
        format!(
            "{name},{},{:.6},{:.6},{}",
            p.tokens, p.ppl_running, p.ppl_block, p.kv_bytes
        )
    }));
    let mut text = format!("{CSV_HEADER}\n");
    for r in rows {
        text.push_str(&r);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("cannot write curve {}", path.display()))
}

/// Reads a curve file: policy → points, in file order.
pub fn read_csv(path: &Path) -> Result<BTreeMap<String, Vec<CurvePoint>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read curve {}", path.display()))?;
    let mut lines = text.lines();
    if lines.next() != Some(CSV_HEADER) {
        bail!(
            "{} is not a curve file (header `{CSV_HEADER}`)",
            path.display()
        );
    }
    let mut out: BTreeMap<String, Vec<CurvePoint>> = BTreeMap::new();
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || format!("{} line {}: malformed row `{line}`", path.display(), i + 2);
        if f.len() != 5 {
            bail!(bad());
        }
        out.entry(f[0].to_string()).or_default().push(CurvePoint {
            tokens: f[1].parse().with_context(bad)?,
            ppl_running: f[2].parse().with_context(bad)?,
            ppl_block: f[3].parse().with_context(bad)?,
            kv_bytes: f[4].parse().with_context(bad)?,
        });
    }
    Ok(out)
}

/// Draws the running perplexity of every policy in the curve file `csv` into `png`, one line
/// per policy.
pub fn plot(csv: &Path, png: &Path, title: &str) -> Result<()> {
    let curves = read_csv(csv)?;
    let all = || curves.values().flatten();
    let max_x = all().map(|p| p.tokens).max().unwrap_or(1) as f64;
    let finite = || {
        all()
            .map(|p| p.ppl_running)
            .filter(|y| y.is_finite() && *y > 0.0)
    };
    let lo = finite().fold(f64::INFINITY, f64::min);
    let hi = finite().fold(0.0, f64::max);
    if !(lo.is_finite() && hi > 0.0) {
        bail!("{} has no points to plot", csv.display());
    }
    let root = BitMapBackend::new(png, (960, 600)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| anyhow::anyhow!("cannot draw {}: {e}", png.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x, (lo * 0.8).max(0.0)..(hi * 1.1))
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .x_desc("tokens streamed")
        .y_desc("running perplexity")
        .x_label_formatter(&|x| {
            if max_x < 20_000.0 {
                format!("{:.1}k", x / 1000.0)
            } else {
                format!("{:.0}k", x / 1000.0)
            }
        })
        .draw()
        .map_err(|e| draw(&e))?;
    for (i, (policy, pts)) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                pts.iter()
                    .filter(|p| p.ppl_running.is_finite())
                    .map(|p| (p.tokens as f64, p.ppl_running)),
                color.stroke_width(2),
            ))
            .map_err(|e| draw(&e))?
            .label(policy.replace(';', ","))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_running_and_block_perplexities() {
        let scored: Vec<(usize, f64)> = (0..5).map(|i| (i, i as f64)).collect();
        let pts = points(&scored, &[0, 10, 20, 20, 20, 20], 5, 2);
        assert_eq!(pts.len(), 3);
        assert_eq!(pts[0].tokens, 2);
        assert!((pts[0].ppl_running - (0.5f64).exp()).abs() < 1e-12);
        assert!((pts[1].ppl_block - (2.5f64).exp()).abs() < 1e-12);
        assert!((pts[2].ppl_running - 2f64.exp()).abs() < 1e-12);
        assert_eq!((pts[0].kv_bytes, pts[2].kv_bytes), (20, 20));
    }

    #[test]
    fn csv_merges_policies_and_plots() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("ferrite-curve-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let csv = dir.join("c.csv");
        let _ = std::fs::remove_file(&csv);
        let scored: Vec<(usize, f64)> =
            (0..3000).map(|i| (i, 3.0 + (i % 7) as f64 * 0.1)).collect();
        write_csv(&csv, "sink:4+252", &points(&scored, &[1], 3000, 1000))?;
        write_csv(&csv, "window:256,after", &points(&scored, &[1], 3000, 1000))?;
        write_csv(&csv, "sink:4+252", &points(&scored, &[1], 3000, 500))?;
        let curves = read_csv(&csv)?;
        assert_eq!(curves.len(), 2);
        assert_eq!(curves["sink:4+252"].len(), 6);
        assert_eq!(curves["window:256;after"].len(), 3);
        plot(&csv, &dir.join("c.png"), "test")?;
        assert!(std::fs::metadata(dir.join("c.png"))?.len() > 1000);
        Ok(())
    }
}
