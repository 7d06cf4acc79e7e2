//! Figure 5-style report of the conditioning ablation run by crates/dit/scripts/ablation.sh:
//! classifier-feature FID against training steps for the four designs (PNG) and the final table
//! (markdown, with analytic Gflops and the measured training CPU time) on stdout.
//!
//! usage: cargo run --release -p ferrite-dit --example ablation_report -- OUT SEG SEGMENTS

use anyhow::{bail, Context, Result};
use ferrite_dit::{Conditioning, DitConfig};
use plotters::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

struct Curve {
    design: Conditioning,
    cfg: DitConfig,
    points: Vec<(u64, f64, f64)>, // (step, FID, class accuracy)
    train_cpu_s: f64,
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// `/usr/bin/time -f "%e %U %S"` output: user + system seconds.
fn cpu_seconds(path: &Path) -> Result<f64> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let last = text.lines().last().unwrap_or_default();
    let v: Vec<f64> = last
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    if v.len() != 3 {
        bail!("{}: expected `wall user sys`, got `{last}`", path.display())
    }
    Ok(v[1] + v[2])
}

fn load(out: &Path, design: Conditioning, seg: u64, n: u64) -> Result<Curve> {
    let name = design.name();
    let mut points = Vec::new();
    let mut train_cpu_s = 0.0;
    let mut cfg = None;
    for i in 1..=n {
        let step = seg * i;
        let train = read_json(&out.join(format!("{name}.train.step{step}.json")))?;
        cfg = Some(serde_json::from_value::<DitConfig>(
            train["config"]["dit"].clone(),
        )?);
        train_cpu_s += cpu_seconds(&out.join(format!("{name}.step{step}.time")))?;
        let eval = read_json(&out.join(format!("{name}.eval.step{step}.json")))?;
        let fid = eval["classifier_fid"]
            .as_f64()
            .context("no classifier_fid")?;
        let acc = eval["class_accuracy"]
            .as_f64()
            .context("no class_accuracy")?;
        points.push((step, fid, acc));
    }
    Ok(Curve {
        design,
        cfg: cfg.context("no segments")?,
        points,
        train_cpu_s,
    })
}

fn plot(path: &Path, curves: &[Curve]) -> Result<()> {
    let tmp = path.with_extension("tmp.png");
    {
        let max_step = curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.0))
            .max()
            .unwrap_or(1);
        let max_fid = curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.1))
            .fold(0.0, f64::max);
        let area = BitMapBackend::new(&tmp, (900, 540)).into_drawing_area();
        area.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&area)
            .caption(
                "DiT conditioning designs: classifier-feature FID vs training steps",
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..max_step as f64 * 1.02, 0f64..max_fid * 1.05)?;
        chart
            .configure_mesh()
            .x_desc("training step (batch 32)")
            .y_desc("FID (lower is better)")
            .draw()?;
        let colours = [RED, GREEN, BLUE, BLACK];
        for (c, colour) in curves.iter().zip(colours) {
            let pts: Vec<(f64, f64)> = c.points.iter().map(|p| (p.0 as f64, p.1)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))?
                .label(format!("{} ({:.3} Gflops)", c.design, c.cfg.gflops()))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        area.present()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 {
        bail!("usage: ablation_report OUT SEG SEGMENTS")
    }
    let out = PathBuf::from(&args[0]);
    let seg: u64 = args[1].parse().context("SEG")?;
    let n: u64 = args[2].parse().context("SEGMENTS")?;
    let curves = Conditioning::ALL
        .iter()
        .map(|&d| load(&out, d, seg, n))
        .collect::<Result<Vec<_>>>()?;
    let png = out.join("fid_vs_steps.png");
    plot(&png, &curves)?;
    let steps: Vec<String> = (1..=n).map(|i| format!("FID @{}", seg * i)).collect();
    println!(
        "| design | params | Gflops | {} | class acc. (final) | train CPU s |",
        steps.join(" | ")
    );
    println!("|---|---:|---:|{}---:|---:|", "---:|".repeat(n as usize));
    for c in &curves {
        let fids: Vec<String> = c.points.iter().map(|p| format!("{:.1}", p.1)).collect();
        println!(
            "| {} | {:.3}M | {:.4} | {} | {:.3} | {:.0} |",
            c.design,
            c.cfg.params() as f64 / 1e6,
            c.cfg.gflops(),
            fids.join(" | "),
            c.points.last().map_or(0.0, |p| p.2),
            c.train_cpu_s
        );
    }
    eprintln!("curve: {}", png.display());
    Ok(())
}
