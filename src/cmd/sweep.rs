//! `premem sweep`: every run of a sweep file submitted to one coordinator,
//! trained on a pool of trainers and evaluated by one evaluator fleet, then
//! one report over all of them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use premem_core::JobSpec;
use premem_core::spec::sweep::{SweepRun, SweepSpec};
use premem_proto::{ClientConfig, v1};

use crate::client::{ConnectArgs, Jobs, final_accuracies, state_name, state_of};
use crate::local_cluster::{LocalCluster, write_report};
use crate::process::stop_flag;

#[derive(clap::Args)]
pub struct SweepArgs {
    /// The sweep file (see examples/synth-sweep.toml and examples/sweeps/).
    config: PathBuf,
    /// Write the runs under this location instead of the file's sweep.output
    /// (run names, and so the ids, do not change).
    #[arg(long)]
    output: Option<String>,
    /// Where the local coordinator keeps its state and the processes their
    /// logs (default: premem-run/<sweep name>). Running the sweep again with
    /// the same workdir skips finished runs and resumes the others.
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Where the report goes (default: <output>-report).
    #[arg(long)]
    report: Option<String>,
    /// Skip the report at the end.
    #[arg(long)]
    no_report: bool,
    /// Print the runs, check that each fits its GPUs, and exit.
    #[arg(long)]
    dry_run: bool,
    /// Submit to the coordinator of --coordinator (a running cluster) and
    /// watch, instead of starting a local one.
    #[arg(long)]
    remote: bool,
    #[command(flatten)]
    connect: ConnectArgs,
    /// Serve the coordinator's dashboard and Prometheus metrics at this
    /// address (default: a free loopback port; the URL is printed).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Checkpoint cache of the local evaluators.
    #[arg(long, default_value = "premem-cache")]
    cache_dir: PathBuf,
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

fn overrides_text(run: &SweepRun) -> String {
    run.overrides
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(args: SweepArgs) -> Result<()> {
    let mut spec = SweepSpec::from_file(&args.config)?;
    if let Some(output) = &args.output {
        spec.sweep.output = output.clone();
    }
    let runs = spec.expand()?;
    println!(
        "sweep '{}': {} run(s) into {}",
        spec.sweep.name,
        runs.len(),
        spec.sweep.output
    );
    for run in &runs {
        println!("  {}  {}", run.name, overrides_text(run));
    }
    let specs: Vec<JobSpec> = runs.iter().map(|r| r.spec.clone()).collect();
    // Before anything starts: every run must fit (a remote cluster's GPUs
    // are known only as the spec declares them; its coordinator checks too).
    for spec in &specs {
        if args.remote {
            premem_core::spec::plan::check_declared(spec)?;
        } else {
            crate::fit::check_local(spec)?;
        }
    }
    if args.dry_run {
        return Ok(());
    }
    let stop = stop_flag()?;
    let statuses = if args.remote {
        run_remote(&args, &specs, &stop)?
    } else {
        run_local(&args, &spec, &specs, &stop)?
    };
    print_outcome(&runs, &statuses)?;
    if !args.no_report {
        let out = args
            .report
            .clone()
            .unwrap_or_else(|| format!("{}-report", spec.sweep.output.trim_end_matches('/')));
        write_report(&spec.sweep.output, &out).context("the sweep report")?;
    }
    Ok(())
}

/// Submits the runs to the cluster of `--coordinator` and watches them.
fn run_remote(
    args: &SweepArgs,
    specs: &[JobSpec],
    stop: &AtomicBool,
) -> Result<BTreeMap<String, v1::JobStatus>> {
    let config = args.connect.config()?;
    let mut jobs = Jobs::connect(&config)?;
    for spec in specs {
        jobs.submit(spec)?;
    }
    eprintln!(
        "submitted to {}; the cluster's pool trainers and evaluators run them",
        config.address
    );
    jobs.wait("runs", specs, stop, &mut || Ok(()))
}

/// Runs the sweep on a local cluster of pool trainers and evaluators.
fn run_local(
    args: &SweepArgs,
    spec: &SweepSpec,
    specs: &[JobSpec],
    stop: &AtomicBool,
) -> Result<BTreeMap<String, v1::JobStatus>> {
    let workdir = args
        .workdir
        .clone()
        .unwrap_or_else(|| PathBuf::from("premem-run").join(&spec.sweep.name));
    let mut cluster = LocalCluster::start(&workdir, args.metrics_listen.as_deref())?;
    cluster.print_dashboard();
    let outcome = (|| {
        let mut jobs = Jobs::connect(&ClientConfig::new(&cluster.address, &cluster.tokens.submit))?;
        let mut created = 0;
        for spec in specs {
            created += jobs.submit(spec)? as usize;
        }
        if created < specs.len() {
            eprintln!(
                "{} run(s) were submitted before (workdir {}): finished ones are skipped, the others resume",
                specs.len() - created,
                workdir.display()
            );
        }
        let any_eval = specs.iter().any(|s| s.eval.enabled);
        cluster.add_pool_trainers(spec.sweep.trainers)?;
        if any_eval {
            cluster.add_evaluators(spec.sweep.evaluators, &args.cache_dir)?;
        }
        eprintln!(
            "coordinator at {}, {} pool trainer(s), {} evaluator(s); logs in {}",
            cluster.address,
            spec.sweep.trainers,
            if any_eval { spec.sweep.evaluators } else { 0 },
            cluster.logs.display()
        );
        jobs.wait("runs", specs, stop, &mut || cluster.supervise())
    })();
    cluster.stop();
    outcome
}

/// The table of runs (state, final P-M and test accuracy); an error naming
/// the runs that did not finish.
fn print_outcome(runs: &[SweepRun], statuses: &BTreeMap<String, v1::JobStatus>) -> Result<()> {
    println!(
        "{:<28} {:<10} {:>7} {:>7}  overrides",
        "run", "state", "P-M", "test"
    );
    let mut failed = vec![];
    for run in runs {
        let status = &statuses[&run.name];
        let (pm, test) = final_accuracies(status);
        println!(
            "{:<28} {:<10} {:>7} {:>7}  {}",
            run.name,
            state_name(status),
            pct(pm),
            pct(test),
            overrides_text(run)
        );
        if state_of(status) != v1::JobState::Done {
            failed.push(format!(
                "{}: {} {}",
                run.name,
                state_name(status),
                status.message
            ));
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} run(s) did not finish:\n  {}",
            failed.len(),
            runs.len(),
            failed.join("\n  ")
        );
    }
    Ok(())
}
