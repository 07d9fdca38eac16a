//! `premem eval-run` (every checkpoint of a run into its result files) and
//! `premem report` (P-M accuracy, baselines and charts from those files).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use premem_core::pm::{Grid, Threshold};
use premem_core::spec::DEFAULT_EVAL_BATCH_SIZE;
use premem_core::store::{BlockingStore, Store};
use premem_core::{SamplingSpec, Split};
use premem_evaluator::run::{RunEvalOptions, evaluate_run};
use premem_report::{ReportOptions, write_report};

use crate::DType;

/// How to sample, shared by `premem eval` and `premem eval-run`.
#[derive(clap::Args)]
pub struct SamplingArgs {
    #[command(flatten)]
    pub sampling: SamplingSpec,
    /// Prompts per generation batch (each with its K samples).
    #[arg(long, default_value_t = DEFAULT_EVAL_BATCH_SIZE)]
    pub batch_size: usize,
    /// Where published checkpoints are downloaded.
    #[arg(long, default_value = ".premem-cache/checkpoints")]
    pub cache_dir: PathBuf,
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, value_enum, default_value_t = DType::Auto)]
    pub dtype: DType,
}

impl SamplingArgs {
    /// The sampling settings, checked (the flags' one validation).
    pub fn sampling(&self) -> Result<&SamplingSpec> {
        self.sampling
            .validate()
            .map_err(|e| anyhow::anyhow!(e.as_flag()))?;
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        Ok(&self.sampling)
    }
}

#[derive(clap::Args)]
pub struct EvalRunArgs {
    /// The run: its output directory or URL (as in the job spec's
    /// run.output). Its run.json gives the data, prompt template and seed.
    #[arg(long)]
    run: String,
    /// Splits to evaluate (train: the examples the run trains on).
    #[arg(long, value_delimiter = ',', default_value = "train,test")]
    splits: Vec<Split>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Only the first N examples of each split.
    #[arg(long)]
    limit: Option<usize>,
    /// Only these checkpoint steps (comma-separated; default: all published).
    #[arg(long, value_delimiter = ',')]
    steps: Option<Vec<u64>>,
    /// Evaluate again where results already exist (default: skip them).
    #[arg(long)]
    redo: bool,
}

pub fn eval_run(args: EvalRunArgs) -> Result<()> {
    let sampling = &args.sampling;
    let device = crate::parse_device(&sampling.device)?;
    let options = RunEvalOptions {
        splits: args.splits.clone(),
        sampling: sampling.sampling()?.clone(),
        batch_size: sampling.batch_size,
        limit: args.limit,
        steps: args.steps.clone(),
        redo: args.redo,
        cache_dir: sampling.cache_dir.clone(),
        device,
        kind: match sampling.dtype {
            DType::Auto => None,
            other => Some(other.kind(device)),
        },
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} {msg} [{bar:30}] {pos}/{len} examples",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let reports = evaluate_run(&args.run, &options, &|step, split, done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(format!("step {step} {}", split.name()));
    })?;
    bar.finish_and_clear();
    let (done, skipped): (Vec<_>, Vec<_>) = reports.iter().partition(|r| !r.skipped);
    for r in &done {
        println!(
            "step {:>8} {:<5} {} examples: accuracy {:.1}%",
            r.step,
            r.split.name(),
            r.examples,
            100.0 * r.accuracy.unwrap_or(f64::NAN)
        );
    }
    println!(
        "evaluated {} checkpoint splits of {}; {} already had results",
        done.len(),
        args.run,
        skipped.len()
    );
    Ok(())
}

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
}

#[derive(Clone, Copy, ValueEnum)]
enum Scale {
    Perplexity,
    Loglog,
}

pub fn report(args: ReportArgs) -> Result<()> {
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
    println!("memorization threshold p: {}", a.threshold);
    println!(
        "P-M vs test over {} checkpoints: R² vs y = x {}, least-squares R² {}",
        a.pm_vs_test.points.len(),
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
