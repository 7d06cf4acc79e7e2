//! The figures of Dong, Cordonnier & Loukas 2021, "Attention is not all you need: pure attention
//! loses rank doubly exponentially with depth", as PNG (plotters), each written atomically
//! (temporary file next to the target, then rename):
//!
//! - [`plot_panels`]: Figure 2, relative residual per layer, mean ± std band, one panel per model
//!   state, log y-axis;
//! - [`plot_paths`]: the path view of §3 — share of paths of each length `C(L,k)Hᵏ/(H+1)ᴸ` and
//!   the residual of sampled chained-attention products `P_k⋯P_1` per length;
//! - [`plot_bound`]: Theorem 2.2, measured `log₁₀‖res(SAN_l(X))‖₁,∞` against the bound over depth.

use crate::bound::BoundReport;
use crate::paths::path_share;
use crate::study::Panel;
use anyhow::{bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// `(x, y)` points of one drawn curve.
type Curve2 = Vec<(f64, f64)>;

/// Fails early (before a long run) when `path` cannot be written: no file name, or a missing
/// parent directory.
pub fn check_plot_path(path: &Path) -> Result<()> {
    if path.file_name().is_none() {
        bail!("plot path {} has no file name", path.display());
    }
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() && !d.is_dir() => {
            bail!("plot directory {} does not exist", d.display())
        }
        _ => Ok(()),
    }
}

/// Draws a `width × height` PNG at `path` through a temporary file.
fn write_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> Result<()>,
) -> Result<()> {
    check_plot_path(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file = path.file_name().context("plot path has no file name")?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp.png",
        file.to_string_lossy(),
        std::process::id()
    ));
    let drawn = (|| -> Result<()> {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
        Ok(())
    })();
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot draw plot {}", path.display()));
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move plot into place at {}", path.display()))
}

/// Smallest value drawn on a log axis.
const FLOOR: f64 = 1e-9;

/// Line styles for the four variants: colour and dash, so curves that coincide stay visible.
fn variant_style(i: usize) -> RGBAColor {
    [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
    ][i % 4]
        .to_rgba()
}

/// Draws Figure 2 (`panels` side by side) into the PNG at `path`.
pub fn plot_panels(path: &Path, title: &str, panels: &[Panel]) -> Result<()> {
    let n = panels.len().max(1);
    write_png(path, (520 * n as u32, 520), |root| {
        let root = root.titled(title, ("sans-serif", 22))?;
        for (area, panel) in root.split_evenly((1, n)).iter().zip(panels) {
            draw_panel(area, panel)?;
        }
        Ok(())
    })
}

fn draw_panel(area: &Area<'_>, panel: &Panel) -> Result<()> {
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
        .build_cartesian_2d(0f64..(layers - 1) as f64, (lo..3.0f64).log_scale())?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("layer l")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("||res(X_l)||_1,inf / ||X_l||_1,inf")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()?;
    for (i, c) in panel.curves.iter().enumerate() {
        let color = variant_style(i);
        let m = &c.l1inf_mean;
        let clamp = |v: f64| v.clamp(lo, 3.0);
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
        chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.12))))?;
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
    Ok(())
}

/// Draws the path view into the PNG at `path`: left, the share of paths of each length for the
/// panels' shape; right, per panel, the median (and quartile band) of the rank-1 residual of
/// sampled chained-attention products by length.
pub fn plot_paths(path: &Path, panels: &[Panel]) -> Result<()> {
    let with_paths: Vec<&Panel> = panels.iter().filter(|p| !p.paths.is_empty()).collect();
    let Some(first) = with_paths.first() else {
        bail!("no attention paths were sampled (--paths 0)");
    };
    let (n_layer, n_head) = (first.n_layer, first.n_head);
    let samples = first.paths[0].samples;
    write_png(path, (1100, 480), |root| {
        let root = root.titled(
            &format!("Paths through L = {n_layer} layers of H = {n_head} heads"),
            ("sans-serif", 22),
        )?;
        let areas = root.split_evenly((1, 2));
        let shares: Vec<(f64, f64)> = (0..=n_layer)
            .map(|k| (k as f64, path_share(n_layer, n_head, k)))
            .collect();
        let top = shares.iter().map(|s| s.1).fold(0.0, f64::max) * 1.1;
        let mut left = ChartBuilder::on(&areas[0])
            .caption(
                "share of paths of length k: C(L,k) H^k / (H+1)^L",
                ("sans-serif", 17),
            )
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..n_layer as f64, 0f64..top)?;
        left.configure_mesh()
            .light_line_style(WHITE)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .x_desc("path length k (heads on the path)")
            .y_desc("proportion of paths")
            .draw()?;
        left.draw_series(LineSeries::new(
            shares.iter().copied(),
            BLUE.stroke_width(2),
        ))?;
        left.draw_series(shares.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;

        // Products are formed in f64: their residual is resolved down to ~1e-16.
        let lo = with_paths
            .iter()
            .flat_map(|p| p.paths.iter().map(|r| r.rank1.q1))
            .filter(|v| *v > 0.0)
            .fold(1.0f64, f64::min)
            .max(1e-18)
            / 2.0;
        let mut right = ChartBuilder::on(&areas[1])
            .caption(
                format!("chained attention P_k...P_1, {samples} paths per length"),
                ("sans-serif", 17),
            )
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(1f64..n_layer.max(2) as f64, (lo..2.0f64).log_scale())?;
        right
            .configure_mesh()
            .light_line_style(WHITE)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .x_desc("path length k")
            .y_desc("||P - rank1(P)||_1,inf / ||P||_1,inf")
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()?;
        for (i, p) in with_paths.iter().enumerate() {
            let color = variant_style(i * 3);
            let clamp = |v: f64| v.clamp(lo, 2.0);
            let mut band: Vec<(f64, f64)> = p
                .paths
                .iter()
                .map(|r| (r.length as f64, clamp(r.rank1.q3)))
                .collect();
            band.extend(
                p.paths
                    .iter()
                    .rev()
                    .map(|r| (r.length as f64, clamp(r.rank1.q1))),
            );
            right.draw_series(std::iter::once(Polygon::new(band, color.mix(0.15))))?;
            right
                .draw_series(LineSeries::new(
                    p.paths
                        .iter()
                        .map(|r| (r.length as f64, clamp(r.rank1.median))),
                    color.stroke_width(2),
                ))?
                .label(format!("{} (median, quartiles)", p.label))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        right
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        Ok(())
    })
}

/// Draws the Theorem 2.2 check into the PNG at `path`: left, over depth, the measured
/// `log₁₀‖res‖₁,∞` and the bound over the instances whose bound contracts (the others grow and are
/// vacuous): median and min–max band; right, every tested (measured, bound) pair of all instances
/// against the diagonal — a violation would lie below it.
pub fn plot_bound(path: &Path, report: &BoundReport) -> Result<()> {
    let c = &report.config;
    let depth = c.depth;
    let contracting: Vec<_> = report
        .instances
        .iter()
        .filter(|t| t.log10_c + 2.0 * t.log10_res_input < 0.0)
        .collect();
    let tested = || {
        report.instances.iter().flat_map(|t| {
            (0..t.compared.len())
                .filter(|&l| t.compared[l])
                .map(|l| (l, t.log10_measured[l], t.log10_bound[l]))
        })
    };
    // Exact zeros are stored as log₁₀ of the smallest f64; draw them on the lower edge.
    let x_lo = tested()
        .map(|p| p.1)
        .filter(|v| *v > -300.0)
        .fold(0.0f64, f64::min)
        .floor()
        - 2.0;
    let y_hi = 40.0f64;
    let measured_color = RGBColor(31, 119, 180).to_rgba();
    let bound_color = RGBColor(214, 39, 40).to_rgba();
    write_png(path, (1100, 500), |root| {
        let root = root.titled(
            &format!(
                "Theorem 2.2 on {} random single-head SANs (n = {}, d = {}, gamma = {}): {} violations in {} comparisons",
                c.instances, c.tokens, c.width, c.gamma, report.violations, report.compared
            ),
            ("sans-serif", 19),
        )?;
        let areas = root.split_evenly((1, 2));
        let curve = |t: &crate::bound::InstanceTrace, v: &[f64]| -> Curve2 {
            std::iter::once((0.0, t.log10_res_input))
                .chain(v.iter().enumerate().map(|(l, &y)| ((l + 1) as f64, y)))
                .collect()
        };
        let drawn: Vec<(Curve2, Curve2)> = contracting
            .iter()
            .map(|t| (curve(t, &t.log10_measured), curve(t, &t.log10_bound)))
            .collect();
        // Measured zeros and bounds far below every measurable value sit on the lower edge.
        let lo = drawn
            .iter()
            .flat_map(|(m, _)| m.iter())
            .map(|p| p.1)
            .filter(|v| *v > -300.0)
            .fold(0.0f64, f64::min)
            .floor()
            - 2.0;
        let drawn: Vec<_> = drawn
            .into_iter()
            .map(|(m, b)| {
                let floor =
                    |v: Curve2| -> Curve2 { v.into_iter().map(|(x, y)| (x, y.max(lo))).collect() };
                (floor(m), floor(b))
            })
            .collect();
        let hi = drawn
            .iter()
            .flat_map(|(m, b)| m.iter().chain(b))
            .map(|p| p.1)
            .fold(0.0f64, f64::max)
            + 1.0;
        let mut left = ChartBuilder::on(&areas[0])
            .caption(
                format!(
                    "{} instances with a contracting bound (clipped at {lo}; measured 0 drawn there)",
                    contracting.len()
                ),
                ("sans-serif", 15),
            )
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..depth as f64, lo..hi)?;
        left.configure_mesh()
            .light_line_style(WHITE)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .x_desc("layer l")
            .y_desc("log10 ||res(SAN_l(X))||_1,inf")
            .draw()?;
        // Per layer, over the instances still above the floor there: min–max band and median.
        // `side` 0: measured, 1: bound.
        let envelope = |side: usize| -> (Curve2, Curve2) {
            let mut band_hi = Vec::new();
            let mut band_lo = Vec::new();
            let mut median = Vec::new();
            for l in 0..=depth {
                let mut ys: Vec<f64> = drawn
                    .iter()
                    .filter_map(|(m, b)| if side == 0 { m } else { b }.get(l).map(|p| p.1))
                    .collect();
                if ys.is_empty() {
                    break;
                }
                ys.sort_by(f64::total_cmp);
                band_lo.push((l as f64, ys[0]));
                band_hi.push((l as f64, ys[ys.len() - 1]));
                median.push((l as f64, ys[ys.len() / 2]));
            }
            band_hi.extend(band_lo.into_iter().rev());
            (band_hi, median)
        };
        for (side, color, label) in [
            (0, measured_color, "measured (median, min-max band)"),
            (1, bound_color, "Theorem 2.2 bound (median, min-max band)"),
        ] {
            let (band, median) = envelope(side);
            left.draw_series(std::iter::once(Polygon::new(band, color.mix(0.2))))?;
            left.draw_series(LineSeries::new(median, color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        left.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerLeft)
            .draw()?;

        let mut right = ChartBuilder::on(&areas[1])
            .caption(
                format!("all tested pairs (measured 0 drawn at {x_lo}; bound clipped at {y_hi})"),
                ("sans-serif", 15),
            )
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x_lo..5.0, x_lo..y_hi)?;
        right
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("log10 measured ||res||_1,inf")
            .y_desc("log10 bound")
            .draw()?;
        right
            .draw_series(LineSeries::new(
                [(x_lo, x_lo), (5.0, 5.0)],
                BLACK.stroke_width(1),
            ))?
            .label("bound = measured")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
        for l in 0..depth {
            let color = Palette99::pick(l).to_rgba();
            right
                .draw_series(
                    tested().filter(|p| p.0 == l).map(|(_, m, b)| {
                        Circle::new((m.max(x_lo), b.min(y_hi)), 1, color.filled())
                    }),
                )?
                .label(format!("layer {}", l + 1))
                .legend(move |(x, y)| Circle::new((x + 9, y), 3, color.filled()));
        }
        right
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
        Ok(())
    })
}
