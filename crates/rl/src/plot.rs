//! Return curves as PNG (plotters), written atomically: draw to a temporary
//! file next to the target, then rename it into place.

use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;

/// One labelled curve.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// y value per episode.
    pub values: Vec<f64>,
}

/// Plot `series` (y against episode index) with a title into `path` (PNG).
pub fn plot_returns(path: &Path, title: &str, series: &[Series]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file = path
        .file_name()
        .with_context(|| format!("plot path {} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp.png",
        file.to_string_lossy(),
        std::process::id()
    ));
    let drawn = draw(&tmp, title, series);
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot draw plot {}", path.display()));
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move plot into place at {}", path.display()))
}

fn draw(tmp: &Path, title: &str, series: &[Series]) -> Result<()> {
    let n = series
        .iter()
        .map(|s| s.values.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let finite = || {
        series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .filter(|v| v.is_finite())
    };
    let lo = finite().fold(f64::INFINITY, f64::min);
    let hi = finite().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (-1.0, 1.0)
    };
    let pad = (hi - lo) * 0.05;
    let root = BitMapBackend::new(tmp, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .x_desc("Episodes")
        .y_desc("Returns")
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.values.iter().enumerate().map(|(x, &y)| (x as f64, y)),
                color.stroke_width(2),
            ))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}
