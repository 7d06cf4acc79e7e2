//! The Figure 2 plot of Dong, Cordonnier & Loukas 2021, "Attention is not all you need: pure
//! attention loses rank doubly exponentially with depth": relative residual per layer, mean ± std
//! band, one panel per model state, log y-axis. Written atomically (temp file, then rename).

use crate::study::Panel;
use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;

/// Draws `panels` side by side into the PNG at `path`.
pub fn plot_panels(path: &Path, title: &str, panels: &[Panel]) -> Result<()> {
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
    if let Err(e) = draw(&tmp, title, panels) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot draw plot {}", path.display()));
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move plot into place at {}", path.display()))
}

const FLOOR: f64 = 1e-9;

fn draw(tmp: &Path, title: &str, panels: &[Panel]) -> Result<()> {
    let n = panels.len().max(1) as u32;
    let root = BitMapBackend::new(tmp, (520 * n, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let areas = root.split_evenly((1, n as usize));
    for (area, panel) in areas.iter().zip(panels) {
        let layers = panel
            .curves
            .iter()
            .map(|c| c.l1inf_mean.mean.len())
            .max()
            .unwrap_or(1)
            .max(2);
        let lo = panel
            .curves
            .iter()
            .flat_map(|c| c.l1inf_mean.mean.iter().copied())
            .filter(|v| *v > 0.0)
            .fold(1.0f64, f64::min)
            .max(FLOOR)
            / 2.0;
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.label, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..(layers - 1) as f64, (lo..2.0f64).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("layer l")
            .y_desc("‖res(X_l)‖₁,∞ / ‖X_l‖₁,∞")
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()?;
        for (i, c) in panel.curves.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let m = &c.l1inf_mean;
            let clamp = |v: f64| v.clamp(lo, 2.0);
            let mut band: Vec<(f64, f64)> = m
                .mean
                .iter()
                .zip(&m.std)
                .enumerate()
                .map(|(l, (mu, s))| (l as f64, clamp(mu + s)))
                .collect();
            band.extend(
                m.mean
                    .iter()
                    .zip(&m.std)
                    .enumerate()
                    .rev()
                    .map(|(l, (mu, s))| (l as f64, clamp(mu - s))),
            );
            chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.15))))?;
            chart
                .draw_series(LineSeries::new(
                    m.mean
                        .iter()
                        .enumerate()
                        .map(|(l, &v)| (l as f64, clamp(v))),
                    color.stroke_width(2),
                ))?
                .label(c.variant.label())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerLeft)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
