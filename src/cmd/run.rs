//! `premem run`: a whole job on this machine — a coordinator, the spec's
//! trainer ranks and evaluators as child processes on loopback, a live
//! progress display, and the report at the end.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use premem_core::JobSpec;
use premem_proto::{ClientConfig, Role, v1};

use crate::client::Jobs;
use crate::local_cluster::{
    ClusterOptions, LOCAL_RANK_TTL, LocalCluster, MAX_RESTARTS, write_report,
};
use crate::process::{cores, stop_flag};
use crate::watch::print_status;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The job spec (TOML): its [cluster] section says how many trainer ranks
    /// and evaluators to start. Default: examples/cluster.toml as built into
    /// this binary (the synthetic task; its data is made when missing).
    config: Option<PathBuf>,
    /// Where the coordinator state and the processes' logs go.
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Where the report goes (default: <run.output>-report).
    #[arg(long)]
    report: Option<String>,
    /// Skip the report at the end.
    #[arg(long)]
    no_report: bool,
    /// Serve the coordinator's dashboard and Prometheus metrics at this
    /// address (default: a free loopback port; the URL is printed).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Checkpoint cache of the evaluators.
    #[arg(long, default_value = "premem-cache")]
    cache_dir: PathBuf,
    /// Restarts of each child process (the coordinator, each trainer rank,
    /// each evaluator) before premem run gives up.
    #[arg(long, default_value_t = MAX_RESTARTS)]
    max_restarts: u32,
    /// Seconds an evaluator holds a task without renewing its lease (the
    /// coordinator's --lease-ttl; default: its default, 30).
    #[arg(long, value_parser = positive_seconds)]
    lease_ttl: Option<f64>,
    /// Seconds a trainer rank may go without a heartbeat (the ranks send
    /// one every 2 s) before the coordinator regroups its ranks (the
    /// coordinator's --rank-ttl).
    #[arg(long, value_parser = positive_seconds, default_value_t = LOCAL_RANK_TTL)]
    rank_ttl: f64,
}

/// A finite number of seconds above zero.
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(s),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

/// The default job of `premem run`.
const DEFAULT_JOB: &str = include_str!("../../examples/cluster.toml");

/// The embedded default job, with its synthetic data made if missing.
fn default_job() -> Result<JobSpec> {
    let spec = JobSpec::from_toml(DEFAULT_JOB, Path::new("examples/cluster.toml (built in)"))?;
    if let Some(config) = &spec.model.config
        && !Path::new(config).exists()
    {
        bail!(
            "the built-in job needs {config}: run premem from the repository root, or pass a job spec"
        );
    }
    let train = Path::new(&spec.data.train.path);
    if !train.exists() {
        let out = train.parent().unwrap_or(Path::new("."));
        eprintln!("making the synthetic task in {}", out.display());
        let status = Process::new(std::env::current_exe()?)
            .args(["data", "synth", "--out"])
            .arg(out)
            .status()
            .context("running premem data synth")?;
        if !status.success() {
            bail!("premem data synth failed ({status})");
        }
    }
    Ok(spec)
}

pub fn run(args: RunArgs) -> Result<()> {
    let spec = match &args.config {
        Some(config) => JobSpec::from_file(config)?,
        None => default_job()?,
    };
    crate::fit::check_local(&spec)?;
    let name = spec.run.name.clone();
    if spec.eval.enabled && spec.cluster.evaluators == 0 {
        bail!(
            "job '{name}': cluster.evaluators is 0, so no checkpoint would ever be evaluated and the run could not finish; set cluster.evaluators to 1 or more (or eval.enabled = false to train only)"
        );
    }
    let workdir = args
        .workdir
        .clone()
        .unwrap_or_else(|| PathBuf::from("premem-run").join(&name));
    let stop = stop_flag()?;
    let options = ClusterOptions {
        metrics_listen: args.metrics_listen.as_deref(),
        max_restarts: args.max_restarts,
        lease_ttl: args.lease_ttl,
        rank_ttl: args.rank_ttl,
    };
    let mut cluster = LocalCluster::start_with(&workdir, &options)?;
    cluster.print_dashboard();
    let result = drive(&args, &spec, &mut cluster, &stop);
    let logs = cluster.logs.clone();
    cluster.stop();
    let status = result?;
    let state = v1::JobState::try_from(status.state).unwrap_or(v1::JobState::Unspecified);
    print_status(&status);
    if state != v1::JobState::Done {
        bail!(
            "job '{name}' ended {}: {} (logs in {})",
            state.as_str_name(),
            status.message,
            logs.display()
        );
    }
    if !args.no_report {
        let out = args
            .report
            .clone()
            .unwrap_or_else(|| format!("{}-report", spec.run.output.trim_end_matches('/')));
        write_report(&spec.run.output, &out)?;
    }
    Ok(())
}

/// Submits the job, starts the trainers and evaluators, and watches them
/// until the job ends. Returns the final status.
fn drive(
    args: &RunArgs,
    spec: &JobSpec,
    cluster: &mut LocalCluster,
    stop: &AtomicBool,
) -> Result<v1::JobStatus> {
    let mut jobs = Jobs::connect(&ClientConfig::new(&cluster.address, &cluster.tokens.submit))?;
    jobs.submit(spec)?;
    add_workers(args, spec, cluster)?;
    jobs.watch_job(&spec.run.name, stop, &mut || cluster.supervise())
}

/// Whether the trainer ranks go one per GPU of this host (`--local-rank`:
/// rank r on cuda:r): a CUDA host and `train.device` `auto` or `cuda`. A
/// host with fewer GPUs than ranks is refused rather than doubling ranks up
/// on a GPU the memory plan sized for one.
fn one_rank_per_gpu(spec: &JobSpec) -> Result<bool> {
    let gpus = premem_model::runtime::cuda_device_count();
    let placed = gpus > 0 && matches!(spec.train.device.as_str(), "auto" | "cuda");
    if placed && spec.cluster.trainers > gpus {
        bail!(
            "job '{}': cluster.trainers is {} but this host has {gpus} CUDA device(s); premem run places one rank per GPU (lower cluster.trainers, or run the ranks on several hosts with premem trainer)",
            spec.run.name,
            spec.cluster.trainers
        );
    }
    Ok(placed)
}

/// The spec's trainer ranks and (when it evaluates) evaluators.
fn add_workers(args: &RunArgs, spec: &JobSpec, cluster: &mut LocalCluster) -> Result<()> {
    let name = &spec.run.name;
    // One machine for every process: split its cores between the trainer
    // ranks (which run together) and give each evaluator one thread, rather
    // than letting each libtorch take every core.
    let threads = cores() / spec.cluster.trainers.max(1);
    let on_gpus = one_rank_per_gpu(spec)?;
    for rank in 0..spec.cluster.trainers {
        let mut args = vec![
            "trainer".to_string(),
            "--job".into(),
            name.clone(),
            "--rank".into(),
            rank.to_string(),
            "--no-progress".into(),
        ];
        if on_gpus {
            args.extend(["--local-rank".into(), rank.to_string()]);
        }
        cluster.add(
            (&format!("trainer rank {rank}"), Role::Trainer),
            &format!("trainer-{rank}"),
            args,
            threads,
        )?;
    }
    let evaluators = if spec.eval.enabled {
        cluster.add_evaluators(spec.cluster.evaluators, &args.cache_dir)?;
        spec.cluster.evaluators
    } else {
        0
    };
    eprintln!(
        "job '{name}': coordinator at {}, {} trainer rank(s), {evaluators} evaluator(s); logs in {}",
        cluster.address,
        spec.cluster.trainers,
        cluster.logs.display()
    );
    Ok(())
}
