//! Perplexity against KV-cache bytes, one labelled point per policy, from the JSON lines that
//! `scripts/table.sh` writes (`label` or `plot_label`, `ppl`, `kv_bytes_peak` per line).
//!
//! `cargo run --release -p ferrite-gear --example plot_ppl_vs_bytes -- RESULTS.jsonl OUT.png [TITLE]`

use anyhow::{bail, Context, Result};
use plotters::prelude::*;

struct Point {
    label: String,
    mib: f64,
    ppl: f64,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(input), Some(output)) = (args.get(1), args.get(2)) else {
        bail!("usage: plot_ppl_vs_bytes RESULTS.jsonl OUT.png");
    };
    let text = std::fs::read_to_string(input).with_context(|| format!("cannot read {input}"))?;
    let mut points = Vec::new();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{input}:{}: not JSON", i + 1))?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_f64());
        let (Some(ppl), Some(bytes)) = (field("ppl"), field("kv_bytes_peak")) else {
            bail!("{input}:{}: needs ppl and kv_bytes_peak", i + 1);
        };
        let label = v
            .get("plot_label")
            .or_else(|| v.get("label"))
            .and_then(|x| x.as_str())
            .unwrap_or("?")
            .to_string();
        points.push(Point {
            label,
            mib: bytes / (1024.0 * 1024.0),
            ppl,
        });
    }
    let title = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "streaming perplexity vs KV-cache bytes".into());
    if points.is_empty() {
        bail!("{input} holds no results");
    }
    // Log axis: the exact f32 cache is ~10x the 2-bit ones.
    let max_mib = points.iter().map(|p| p.mib).fold(0.0, f64::max) * 1.6;
    let min_mib = points.iter().map(|p| p.mib).fold(f64::INFINITY, f64::min) * 0.8;
    let lo = points.iter().map(|p| p.ppl).fold(f64::INFINITY, f64::min);
    let hi = points
        .iter()
        .map(|p| p.ppl)
        .fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.08).max(0.1);
    let root = BitMapBackend::new(output, (1000, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((min_mib..max_mib).log_scale(), (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .x_desc("KV cache (MiB, peak, log scale)")
        .y_desc("perplexity")
        .draw()?;
    // One series per policy, named in the legend (labels next to clustered points collide).
    for (i, p) in points.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(std::iter::once(Circle::new(
                (p.mib, p.ppl),
                6,
                color.filled(),
            )))?
            .label(format!("{} ({:.2}, {:.1} MiB)", p.label, p.ppl, p.mib))
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()
        .with_context(|| format!("cannot write {output}"))?;
    println!("wrote {output}");
    Ok(())
}
