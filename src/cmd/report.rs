//! `premem report`: P-M accuracy, its calibration, the baselines and the
//! robustness view of a run or a sweep, from its result files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use premem_core::science::pm::{Grid, Threshold};
use premem_core::storage::store::{BlockingStore, Store};
use premem_report::{ReportOptions, write_report};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// A run (its output directory or URL, holding run.json) or a sweep (a
    /// directory or URL whose sub-directories are runs).
    location: String,
    /// Where report.md, report.html, the charts and tables go: a local
    /// directory or an object-store URL (s3://bucket/prefix, ...; the files
    /// are rendered locally, then uploaded).
    #[arg(long, default_value = "report")]
    out: String,
    /// The memorization threshold p (default: calibrated over the grid).
    #[arg(long, allow_negative_numbers = true)]
    p: Option<f64>,
    /// The scale of --p: perplexity (memorized iff perplexity < p) or loglog
    /// (the authors' ln(ln(perplexity)) scale, e.g. -2.4 for GSM8K).
    #[arg(long, value_enum, default_value_t = Scale::Perplexity)]
    p_scale: Scale,
    /// Calibration grid: smallest p (perplexity scale, > 1).
    #[arg(long, default_value_t = Grid::default().low)]
    grid_low: f64,
    /// Calibration grid: largest p.
    #[arg(long, default_value_t = Grid::default().high)]
    grid_high: f64,
    /// Calibration grid: values of p, evenly spaced in ln(ln p).
    #[arg(long, default_value_t = Grid::default().points)]
    grid_points: usize,
    /// The run whose test split fits the ATC threshold (default: the first
    /// run by name).
    #[arg(long)]
    atc_reference: Option<String>,
    /// Train examples shown in each heatmap.
    #[arg(long, default_value_t = 200)]
    heatmap_rows: usize,
    /// P-M buckets of the robustness view.
    #[arg(long, default_value_t = 5)]
    buckets: usize,
    /// Print the gates of examples/reproduce/PROTOCOL.md and nothing else
    /// (no calibration, no R²; writes no files): Gate 0 of the base the runs
    /// start from (or of a lone run without a base, at its last step with
    /// test results), Gate 1 of the runs. What a pilot may look at.
    #[arg(long)]
    gates_only: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Scale {
    Perplexity,
    Loglog,
}

pub fn run(args: ReportArgs) -> Result<()> {
    if args.gates_only {
        print!("{}", premem_report::gates_report(&args.location)?);
        return Ok(());
    }
    if args.buckets == 0 || args.heatmap_rows == 0 {
        bail!("--buckets and --heatmap-rows must be at least 1");
    }
    let options = ReportOptions {
        threshold: args.p.map(|p| match args.p_scale {
            Scale::Perplexity => Threshold::Perplexity(p),
            Scale::Loglog => Threshold::LogLog(p),
        }),
        grid: Grid {
            low: args.grid_low,
            high: args.grid_high,
            points: args.grid_points,
        },
        atc_reference: args.atc_reference.clone(),
        heatmap_rows: args.heatmap_rows,
        buckets: args.buckets,
    };
    let staging;
    let local = if args.out.contains("://") {
        staging = tempfile::tempdir().context("a temporary directory for the report")?;
        staging.path().to_path_buf()
    } else {
        PathBuf::from(&args.out)
    };
    let written = write_report(&args.location, &local, &options)?;
    if args.out.contains("://") {
        upload_dir(&local, &args.out)?;
    }
    let a = &written.analysis;
    for warning in &a.warnings {
        println!("warning: {warning}");
    }
    println!("memorization threshold p: {}", a.threshold);
    let pm_out = a.pm_vs_test.out_of_sample.as_ref();
    println!(
        "P-M vs test over {} checkpoints: R² out of sample {} ({}); in sample: R² vs y = x {}, least-squares R² {}",
        a.pm_vs_test.points.len(),
        pm_out
            .and_then(|o| o.r2)
            .map_or("–".into(), |v| format!("{v:.3}")),
        pm_out.map_or("nothing to hold out", |o| o.protocol.describe()),
        a.pm_vs_test
            .r2_identity
            .map_or("–".into(), |v| format!("{v:.3}")),
        a.pm_vs_test
            .fit
            .map_or("–".into(), |f| format!("{:.3}", f.r2)),
    );
    let gaps: usize = a.runs.iter().map(|r| r.missing.len()).sum();
    if gaps > 0 {
        println!("{gaps} gaps in the results (listed in report.md)");
    }
    println!("wrote {} files to {}", written.files.len(), args.out);
    Ok(())
}

/// Uploads every file under `dir` to the store at `url`, keeping relative
/// paths.
fn upload_dir(dir: &Path, url: &str) -> Result<()> {
    let store = BlockingStore::new(Store::open(url)?)?;
    store.run(store.store().check_writable())?;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("{}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(dir)
                .expect("under dir")
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            store.run(store.store().put_file(&relative, &path))?;
        }
    }
    Ok(())
}
