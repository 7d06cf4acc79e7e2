//! `ferrite rank`: the experiments of Dong, Cordonnier & Loukas 2021, "Attention is not all you
//! need: pure attention loses rank doubly exponentially with depth", from the command line.
//!
//! - `--model M --text F`: Figure 2 on the model (pretrained) and on the same architecture
//!   re-initialised (`--init both`, the default), plus attention paths sampled from both;
//! - `--random`: Figure 2 on a random transformer of the given shape, inputs `N(0, std²)`;
//! - `--bound`: the Theorem 2.2 check on random single-head SANs.

use crate::bound::{self, BoundConfig, BoundReport};
use crate::paths::path_share;
use crate::plot::{check_plot_path, plot_bound, plot_panels, plot_paths};
use crate::study::{self, Panel};
use crate::surgery::{normal, Arch, Net, Variant};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::{Args, ValueEnum};
use ferrite_llm::{load_model, ComputeDType};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Which model states `--model` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Init {
    /// Trained weights and the same architecture re-initialised.
    Both,
    /// Trained weights only.
    Pretrained,
    /// Re-initialised weights only.
    Random,
}

/// Arguments of `ferrite rank`.
#[derive(Debug, Args)]
pub struct RankArgs {
    /// Llama-family model (GGUF file or HF safetensors directory) whose weights are cut up.
    #[arg(long, conflicts_with = "random")]
    pub model: Option<PathBuf>,
    /// Text the sequences are cut from (with --model).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Model states measured with --model.
    #[arg(long, value_enum, default_value_t = Init::Both)]
    pub init: Init,
    /// Use a random transformer of the shape below instead of a model.
    #[arg(long)]
    pub random: bool,
    /// Random transformer: residual width.
    #[arg(long, default_value_t = 576)]
    pub width: usize,
    /// Random transformer: query heads.
    #[arg(long, default_value_t = 9)]
    pub heads: usize,
    /// Random transformer: key/value heads (default: = heads).
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// Random transformer: layers.
    #[arg(long, default_value_t = 30)]
    pub layers: usize,
    /// Random transformer: MLP width (default 8/3 · width, rounded to 64).
    #[arg(long)]
    pub mlp: Option<usize>,
    /// Random transformer: bidirectional attention without RoPE (the paper's BERT-like setting)
    /// instead of a causal decoder with RoPE.
    #[arg(long)]
    pub bidirectional: bool,
    /// Standard deviation of random weights and embeddings.
    #[arg(long, default_value_t = 0.02)]
    pub init_std: f64,
    /// Random transformer: standard deviation of the input tokens (1: unit scale, as BERT's
    /// embeddings after their LayerNorm; 0.02 makes the skip branch small against the
    /// attention output).
    #[arg(long, default_value_t = 1.0)]
    pub input_std: f64,
    /// Sequences averaged over.
    #[arg(long, default_value_t = 32)]
    pub seqs: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub len: usize,
    /// Sampled attention paths per length and sequence (0: skip the path study).
    #[arg(long, default_value_t = 1)]
    pub paths: usize,
    /// Seed of weights, inputs and path sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run the Theorem 2.2 bound check instead.
    #[arg(long, conflicts_with_all = ["model", "random"])]
    pub bound: bool,
    /// Bound check: random SANs.
    #[arg(long, default_value_t = 200)]
    pub instances: usize,
    /// Bound check: depth.
    #[arg(long, default_value_t = 6)]
    pub bound_depth: usize,
    /// Bound check: tokens.
    #[arg(long, default_value_t = 8)]
    pub bound_tokens: usize,
    /// Bound check: width (= d_qk).
    #[arg(long, default_value_t = 8)]
    pub bound_width: usize,
    /// Bound check: γ of the bound.
    #[arg(long, default_value_t = 1.0)]
    pub gamma: f64,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write the plot (PNG) here: Figure 2 (per-layer residual), or with --bound measured vs
    /// bound over depth.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write the path-study plot (PNG) here: share of paths per length and the residual of
    /// sampled chained-attention products.
    #[arg(long)]
    pub paths_plot: Option<PathBuf>,
    /// Redraw the plots and tables of an earlier `--json` result instead of measuring.
    #[arg(long, conflicts_with_all = ["model", "random", "bound"])]
    pub from_json: Option<PathBuf>,
}

/// Runs `ferrite rank`.
pub fn run(args: RankArgs) -> Result<()> {
    if args.bound {
        return run_bound(&args);
    }
    if args.seqs == 0 || args.len < 2 {
        bail!("--seqs must be at least 1 and --len at least 2");
    }
    for (flag, v) in [
        ("--init-std", args.init_std),
        ("--input-std", args.input_std),
    ] {
        if !(v.is_finite() && v > 0.0) {
            bail!("{flag} must be a positive number, got {v}");
        }
    }
    if args.paths_plot.is_some() && args.paths == 0 && args.from_json.is_none() {
        bail!("--paths-plot needs --paths at least 1");
    }
    for p in [&args.plot, &args.paths_plot].into_iter().flatten() {
        check_plot_path(p)?;
    }
    if let Some(path) = &args.from_json {
        return replot(&args, path);
    }
    let mut panels = Vec::new();
    let arch_json: Option<serde_json::Value>;
    // One pass per (model state, variant, sequence).
    let states = match (&args.model, args.init) {
        (Some(_), Init::Both) => 2,
        _ => 1,
    };
    let bar = ProgressBar::new((states * Variant::ALL.len() * args.seqs) as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} passes eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let progress = |label: &str| {
        let (label, bar) = (label.to_string(), bar.clone());
        move |v: Variant, _i: usize| {
            bar.set_message(format!("{label} {}", v.label()));
            bar.inc(1);
        }
    };
    if let Some(model_path) = &args.model {
        let text_path = args
            .text
            .as_ref()
            .context("--model needs --text (the sequences are cut from it)")?;
        let text = std::fs::read_to_string(text_path)
            .with_context(|| format!("cannot read text {}", text_path.display()))?;
        let loaded = load_model(model_path, ComputeDType::F32)
            .with_context(|| format!("cannot load model {}", model_path.display()))?;
        let ids = loaded.tokenizer.encode(&text)?;
        let windows = study::text_windows(&ids, args.seqs, args.len)
            .with_context(|| format!("text {}", text_path.display()))?;
        let net = Net::from_llama(&loaded.model)?;
        arch_json = Some(serde_json::to_value(&net.arch)?);
        if args.init != Init::Pretrained {
            let mut arch = net.arch.clone();
            arch.causal = true;
            let random = Net::random(
                arch,
                args.init_std,
                loaded.model.config.rms_norm_eps as f32,
                args.seed,
            )?;
            let inputs = windows
                .iter()
                .map(|w| study::random_embedding(w, random.arch.hidden, args.init_std, args.seed))
                .collect::<Result<Vec<_>>>()?;
            panels.push(study::panel(
                &random,
                &inputs,
                "at initialisation",
                args.paths,
                args.seed,
                progress("init"),
            )?);
        }
        if args.init != Init::Random {
            let dev = loaded.model.device().clone();
            let inputs = windows
                .iter()
                .map(|w| loaded.model.embedding.forward(w, &dev))
                .collect::<Result<Vec<_>>>()?;
            let label = format!(
                "pretrained {}",
                model_path.file_name().map_or_else(
                    || model_path.display().to_string(),
                    |f| f.to_string_lossy().into_owned()
                )
            );
            panels.push(study::panel(
                &net,
                &inputs,
                &label,
                args.paths,
                args.seed,
                progress("pretrained"),
            )?);
        }
    } else if args.random {
        let arch = Arch {
            hidden: args.width,
            n_head: args.heads,
            n_kv_head: args.kv_heads.unwrap_or(args.heads),
            n_layer: args.layers,
            mlp: args
                .mlp
                .unwrap_or_else(|| (args.width * 8 / 3).div_ceil(64) * 64),
            rope_theta: (!args.bidirectional).then_some(10_000.0),
            causal: !args.bidirectional,
        };
        let net = Net::random(arch, args.init_std, 1e-5, args.seed)?;
        arch_json = Some(serde_json::to_value(&net.arch)?);
        let mut rng = StdRng::seed_from_u64(args.seed ^ 0xdead_beef);
        let inputs = (0..args.seqs)
            .map(|_| {
                Tensor::from_vec(
                    normal(&mut rng, args.len * args.width, args.input_std),
                    (args.len, args.width),
                    &Device::Cpu,
                )
                .map_err(anyhow::Error::from)
            })
            .collect::<Result<Vec<_>>>()?;
        let label = format!(
            "random {} (d={}, H={}, L={}, input std {})",
            if args.bidirectional {
                "bidirectional"
            } else {
                "causal+RoPE"
            },
            args.width,
            args.heads,
            args.layers,
            args.input_std
        );
        panels.push(study::panel(
            &net,
            &inputs,
            &label,
            args.paths,
            args.seed,
            progress("random"),
        )?);
    } else {
        bail!("give --model M --text F, --random, or --bound");
    }
    bar.finish_and_clear();
    if let Some(p) = &args.plot {
        plot_panels(p, "Relative residual per layer (mean ± std)", &panels)?;
    }
    if let Some(p) = &args.paths_plot {
        plot_paths(p, &panels)?;
    }
    if args.json {
        let v = serde_json::json!({
            "command": std::env::args().skip(1).collect::<Vec<_>>().join(" "),
            "arch": arch_json,
            "residual": "res(X) = X - 1x^T on the residual stream after each block; x = token mean (l1inf_mean, fro), column median (l1inf_median), or the paper's argmin of ||X - 1x^T||_1,inf, bracketed by a certified lower end and an attained upper end (l1inf_argmin_lower, l1inf_argmin_upper)",
            "path_shares": panels.first().map(|p| path_shares(p.n_layer, p.n_head)),
            "panels": panels,
        });
        println!("{}", serde_json::to_string(&v)?);
    } else {
        print!("{}", tables(&panels));
        for p in [&args.plot, &args.paths_plot].into_iter().flatten() {
            println!("plot: {}", p.display());
        }
    }
    Ok(())
}

/// `--from-json`: the panels of an earlier `--json` result, drawn and tabulated again.
fn replot(args: &RankArgs, path: &std::path::Path) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read result {}", path.display()))?;
    #[derive(serde::Deserialize)]
    struct Saved {
        panels: Vec<Panel>,
    }
    let saved: Saved = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a `ferrite rank --json` result", path.display()))?;
    if let Some(p) = &args.plot {
        plot_panels(p, "Relative residual per layer (mean ± std)", &saved.panels)?;
    }
    if let Some(p) = &args.paths_plot {
        plot_paths(p, &saved.panels)?;
    }
    print!("{}", tables(&saved.panels));
    Ok(())
}

/// Text tables: per panel, layer × variant `mean ± std` of the `‖·‖₁,∞` ratio, then the last
/// layer in every measure, then the path table.
pub fn tables(panels: &[Panel]) -> String {
    let mut s = String::new();
    for p in panels {
        let _ = writeln!(
            s,
            "## {} ({} sequences x {} tokens): ||res(X_l)||_1,inf / ||X_l||_1,inf, mean-centred, mean ± std",
            p.label, p.sequences, p.tokens
        );
        let _ = write!(s, "{:>5}", "layer");
        for c in &p.curves {
            let _ = write!(s, " {:>21}", c.variant.label());
        }
        let _ = writeln!(s);
        let layers = p.curves.first().map_or(0, |c| c.l1inf_mean.mean.len());
        for l in 0..layers {
            let _ = write!(s, "{l:>5}");
            for c in &p.curves {
                let _ = write!(
                    s,
                    " {:>10.3e} ± {:>8.2e}",
                    c.l1inf_mean.mean[l], c.l1inf_mean.std[l]
                );
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(
            s,
            "last layer: l1inf/mean, l1inf/median, l1inf/argmin in [lower, upper], Frobenius"
        );
        for c in &p.curves {
            let last = |m: &crate::surgery::MeanStd| m.mean.last().copied().unwrap_or(f64::NAN);
            let _ = writeln!(
                s,
                "  {:<9} {:.3e}  {:.3e}  [{:.3e}, {:.3e}]  {:.3e}",
                c.variant.label(),
                last(&c.l1inf_mean),
                last(&c.l1inf_median),
                last(&c.l1inf_argmin_lower),
                last(&c.l1inf_argmin_upper),
                last(&c.fro)
            );
        }
        let _ = writeln!(s);
        if p.paths.is_empty() {
            continue;
        }
        let rows = &p.paths;
        let _ = writeln!(
            s,
            "## {}: single-head attention paths of the full model: share C(L,k)H^k/(H+1)^L, residual of P_k...P_1 (median [q1, q3])",
            p.label
        );
        let _ = writeln!(
            s,
            "{:>3} {:>10} {:>4}  {:>34}  {:>34}",
            "k", "share", "n", "rank-1 (SVD) residual", "token-uniform residual"
        );
        for r in rows {
            let _ = writeln!(
                s,
                "{:>3} {:>10.3e} {:>4}  {:>9.2e} [{:>9.2e}, {:>9.2e}]  {:>9.2e} [{:>9.2e}, {:>9.2e}]",
                r.length,
                r.share,
                r.samples,
                r.rank1.median,
                r.rank1.q1,
                r.rank1.q3,
                r.token_uniform.median,
                r.token_uniform.q1,
                r.token_uniform.q3
            );
        }
        let _ = writeln!(s);
    }
    s
}

fn run_bound(args: &RankArgs) -> Result<()> {
    if args.instances == 0
        || args.bound_depth == 0
        || args.bound_tokens < 2
        || args.bound_width == 0
    {
        bail!("the bound check needs instances, depth and width ≥ 1 and at least 2 tokens");
    }
    if args.gamma.is_nan() || args.gamma <= 0.0 {
        bail!("--gamma must be positive, got {}", args.gamma);
    }
    if args.paths_plot.is_some() {
        bail!("--paths-plot goes with --model or --random, not --bound");
    }
    if let Some(p) = &args.plot {
        check_plot_path(p)?;
    }
    let report = bound::check(&BoundConfig {
        instances: args.instances,
        depth: args.bound_depth,
        tokens: args.bound_tokens,
        width: args.bound_width,
        gamma: args.gamma,
        seed: args.seed,
    });
    if let Some(p) = &args.plot {
        plot_bound(p, &report)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", bound_table(&report));
        if let Some(p) = &args.plot {
            println!("plot: {}", p.display());
        }
    }
    Ok(())
}

/// The bound check as a text table.
pub fn bound_table(r: &BoundReport) -> String {
    let c = &r.config;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Theorem 2.2 on {} random single-head SANs (n = {} tokens, d = d_qk = {}, γ = {}); {} contract at layer 1",
        c.instances, c.tokens, c.width, c.gamma, r.contracting
    );
    let _ = writeln!(
        s,
        "{:>5} {:>16} {:>16} {:>9} {:>10} {:>13} {:>15}",
        "layer",
        "med log10 meas",
        "med log10 bound",
        "compared",
        "violations",
        "step compared",
        "step violations"
    );
    for row in &r.rows {
        let _ = writeln!(
            s,
            "{:>5} {:>16.2} {:>16.2} {:>9} {:>10} {:>13} {:>15}",
            row.layer,
            row.median_log10_measured,
            row.median_log10_bound,
            row.compared,
            row.violations,
            row.step_compared,
            row.step_violations
        );
    }
    let _ = writeln!(
        s,
        "total: {} comparisons above the f64 floor, {} violations; min log10(bound/measured) = {:.2}; smallest γ that holds everywhere = {:.3e}",
        r.compared, r.violations, r.min_log10_slack, r.gamma_needed
    );
    s
}

/// The share of paths of every length, for a shape (`ferrite rank` prints it with `--json`).
pub fn path_shares(n_layer: usize, n_head: usize) -> Vec<f64> {
    (0..=n_layer)
        .map(|k| path_share(n_layer, n_head, k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RankArgs,
    }

    fn args(flags: &[&str]) -> RankArgs {
        Cli::try_parse_from(std::iter::once("rank").chain(flags.iter().copied()))
            .expect("flags parse")
            .args
    }

    fn error(flags: &[&str]) -> String {
        format!("{:#}", run(args(flags)).expect_err("should fail"))
    }

    #[test]
    fn flags_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_input_fails_with_one_clear_error() {
        assert!(error(&[]).contains("--model"));
        assert!(error(&["--random", "--seqs", "0"]).contains("--seqs"));
        assert!(error(&["--random", "--input-std", "nan"]).contains("--input-std"));
        assert!(error(&["--random", "--paths", "0", "--paths-plot", "p.png"]).contains("--paths"));
        // A missing plot directory is refused before any work.
        let e = error(&["--random", "--plot", "/nonexistent-dir/x.png"]);
        assert!(e.contains("does not exist"), "{e}");
        assert!(error(&["--bound", "--gamma=-1"]).contains("--gamma"));
        let e = error(&["--model", "/nonexistent.gguf", "--text", "/nonexistent.txt"]);
        assert!(e.contains("/nonexistent.txt"), "{e}");
        assert!(Cli::try_parse_from(["rank", "--random", "--bound"]).is_err());
    }

    #[test]
    fn random_study_and_bound_write_their_plots() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("ferrite-rank-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (fig2, fig_paths, fig_bound) = (
            dir.join("fig2.png"),
            dir.join("paths.png"),
            dir.join("bound.png"),
        );
        let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let tiny = [
            "--random",
            "--width",
            "16",
            "--heads",
            "2",
            "--layers",
            "3",
            "--mlp",
            "16",
            "--seqs",
            "2",
            "--len",
            "6",
            "--paths",
            "2",
            "--init-std",
            "0.5",
            "--json",
        ];
        let mut flags: Vec<String> = tiny.iter().map(|f| f.to_string()).collect();
        flags.extend([
            "--plot".into(),
            s(&fig2),
            "--paths-plot".into(),
            s(&fig_paths),
        ]);
        run(args(&flags.iter().map(String::as_str).collect::<Vec<_>>()))?;
        run(args(&[
            "--bound",
            "--instances",
            "5",
            "--bound-depth",
            "3",
            "--plot",
            &s(&fig_bound),
        ]))?;
        for p in [&fig2, &fig_paths, &fig_bound] {
            let bytes = std::fs::read(p)?;
            assert_eq!(&bytes[1..4], b"PNG", "{}", p.display());
        }
        // A saved result is redrawn without measuring.
        let net = Net::random(
            Arch {
                hidden: 8,
                n_head: 2,
                n_kv_head: 2,
                n_layer: 2,
                mlp: 8,
                rope_theta: None,
                causal: false,
            },
            0.5,
            1e-5,
            1,
        )?;
        let x = Tensor::from_vec(
            normal(&mut StdRng::seed_from_u64(2), 40, 1.0),
            (5, 8),
            &Device::Cpu,
        )?;
        let saved = dir.join("saved.json");
        let panel = study::panel(&net, &[x], "tiny", 2, 0, |_, _| {})?;
        std::fs::write(&saved, serde_json::json!({ "panels": [panel] }).to_string())?;
        let again = dir.join("again.png");
        run(args(&[
            "--from-json",
            &s(&saved),
            "--paths-plot",
            &s(&again),
        ]))?;
        assert_eq!(&std::fs::read(&again)?[1..4], b"PNG");
        std::fs::write(&saved, "{}")?;
        let e = format!(
            "{:#}",
            run(args(&["--from-json", &s(&saved)])).expect_err("not a result")
        );
        assert!(e.contains("not a `ferrite rank --json` result"), "{e}");
        // No temporary file is left next to the plots.
        assert_eq!(std::fs::read_dir(&dir)?.count(), 5);
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }
}
