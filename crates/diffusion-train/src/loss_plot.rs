//! The training loss curve as PNG (plotters), written atomically.

use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;

/// Plots the per-step loss and its moving average (window `smooth`) into `path`.
pub fn plot_loss(path: &Path, title: &str, losses: &[f32], smooth: usize) -> Result<()> {
    let tmp = crate::checkpoint::tmp_path(path);
    let drawn = draw(&tmp, title, losses, smooth.max(1));
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot draw {}", path.display()));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move plot to {}", path.display()))
}

fn draw(tmp: &Path, title: &str, losses: &[f32], smooth: usize) -> Result<()> {
    let finite: Vec<f64> = losses
        .iter()
        .map(|&v| v as f64)
        .filter(|v| v.is_finite())
        .collect();
    let hi = finite.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lo = finite.iter().cloned().fold(f64::INFINITY, f64::min);
    let (lo, hi) = if hi > lo { (lo, hi) } else { (0.0, 1.0) };
    let avg: Vec<(f64, f64)> = (0..losses.len())
        .map(|i| {
            let a = i.saturating_sub(smooth - 1);
            let w = &losses[a..=i];
            (
                i as f64,
                w.iter().map(|&v| v as f64).sum::<f64>() / w.len() as f64,
            )
        })
        .collect();
    let area = BitMapBackend::new(tmp, (960, 540)).into_drawing_area();
    area.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&area)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..losses.len().max(1) as f64, lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            losses
                .iter()
                .enumerate()
                .map(|(i, &v)| (i as f64, v as f64)),
            RGBColor(180, 180, 220).stroke_width(1),
        ))?
        .label("per step")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RGBColor(180, 180, 220)));
    chart
        .draw_series(LineSeries::new(avg, BLUE.stroke_width(2)))?
        .label(format!("mean of {smooth}"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    area.present()?;
    Ok(())
}
