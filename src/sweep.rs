//! `premem sweep`: every run of a sweep file submitted to one coordinator,
//! trained on a pool of trainers and evaluated by one evaluator fleet, then
//! one report over all of them. Also the job-watching loop `premem curate`
//! uses.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use premem_core::JobSpec;
use premem_core::sweep::{SweepRun, SweepSpec};
use premem_proto::v1;
use premem_proto::{Client, ClientConfig};
use tonic::Code;

use crate::cluster::{ConnectArgs, LocalCluster, call, runtime, stop_flag, write_report};

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
    /// Print the runs and exit.
    #[arg(long)]
    dry_run: bool,
    /// Submit to the coordinator of --coordinator (a running cluster) and
    /// watch, instead of starting a local one.
    #[arg(long)]
    remote: bool,
    #[command(flatten)]
    connect: ConnectArgs,
    /// Serve Prometheus metrics of the local coordinator at this address.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Checkpoint cache of the local evaluators.
    #[arg(long, default_value = "premem-cache")]
    cache_dir: PathBuf,
}

/// A connection to a coordinator for submitting and watching jobs.
pub(crate) struct Jobs {
    rt: tokio::runtime::Runtime,
    client: Client,
    address: String,
}

/// How long to wait for an unreachable coordinator (it may be restarting).
const UNREACHABLE_LIMIT: Duration = Duration::from_secs(600);

fn terminal(state: v1::JobState) -> bool {
    matches!(
        state,
        v1::JobState::Done | v1::JobState::Failed | v1::JobState::Cancelled
    )
}

fn state_of(status: &v1::JobStatus) -> v1::JobState {
    v1::JobState::try_from(status.state).unwrap_or(v1::JobState::Unspecified)
}

pub(crate) fn state_name(status: &v1::JobStatus) -> String {
    state_of(status)
        .as_str_name()
        .trim_start_matches("JOB_STATE_")
        .to_lowercase()
}

impl Jobs {
    pub fn connect(config: &ClientConfig) -> Result<Jobs> {
        let rt = runtime()?;
        let client = {
            let _context = rt.enter();
            premem_proto::client(config)?
        };
        Ok(Jobs {
            rt,
            client,
            address: config.address.clone(),
        })
    }

    /// Submits a job (a no-op when the same spec was submitted before),
    /// waiting for an unreachable coordinator.
    pub fn submit(&mut self, spec: &JobSpec) -> Result<bool> {
        let request = v1::SubmitJobRequest {
            spec_json: serde_json::to_string(spec)?,
        };
        let started = Instant::now();
        loop {
            match self.rt.block_on(self.client.submit_job(request.clone())) {
                Ok(reply) => return Ok(reply.into_inner().created),
                Err(s)
                    if s.code() == Code::Unavailable && started.elapsed() < UNREACHABLE_LIMIT =>
                {
                    tracing::warn!(error = %s.message(), "coordinator unreachable; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(s) => {
                    return call(
                        &format!("submitting job '{}'", spec.run.name),
                        &self.address,
                        Err::<tonic::Response<v1::SubmitJobReply>, _>(s),
                    )
                    .map(|r| r.created);
                }
            }
        }
    }

    /// Waits until every job of `specs` ended, showing progress; resubmits a
    /// job the coordinator does not know (it lost its state) and waits out
    /// a coordinator that restarts. `tick` runs every round (restarting
    /// local workers). Returns the final statuses by job name.
    pub fn wait(
        &mut self,
        what: &str,
        specs: &[JobSpec],
        stop: &AtomicBool,
        tick: &mut dyn FnMut() -> Result<()>,
    ) -> Result<BTreeMap<String, v1::JobStatus>> {
        let bars = indicatif::MultiProgress::new();
        let style =
            indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> ");
        let runs_bar =
            bars.add(indicatif::ProgressBar::new(specs.len() as u64).with_style(style.clone()));
        runs_bar.set_prefix(what.to_string());
        let tasks_bar = bars.add(indicatif::ProgressBar::new(0).with_style(style));
        tasks_bar.set_prefix("evaluate");
        let mut statuses: BTreeMap<String, v1::JobStatus> = BTreeMap::new();
        let mut unreachable_since: Option<Instant> = None;
        let mut last_log = Instant::now();
        let outcome = loop {
            if stop.load(Ordering::SeqCst) {
                break Err(anyhow::anyhow!(
                    "interrupted; run the same command again to resume"
                ));
            }
            if let Err(e) = tick() {
                break Err(e);
            }
            let mut reachable = true;
            for spec in specs {
                let name = &spec.run.name;
                if statuses.get(name).is_some_and(|s| terminal(state_of(s))) {
                    continue;
                }
                let request = v1::GetStatusRequest { job: name.clone() };
                match self.rt.block_on(self.client.get_status(request)) {
                    Ok(status) => {
                        statuses.insert(name.clone(), status.into_inner());
                    }
                    Err(s) if s.code() == Code::NotFound => {
                        tracing::warn!(
                            job = name,
                            "the coordinator does not know the job: submitting it again"
                        );
                        self.submit(spec)?;
                    }
                    // Unknown: the connection broke mid-call (a restart).
                    Err(s) if matches!(s.code(), Code::Unavailable | Code::Unknown) => {
                        reachable = false;
                        break;
                    }
                    Err(s) => {
                        break_with(&mut statuses, name, &s);
                    }
                }
            }
            if reachable {
                unreachable_since = None;
            } else {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > UNREACHABLE_LIMIT {
                    break Err(anyhow::anyhow!(
                        "the coordinator at {} was unreachable for {:?}",
                        self.address,
                        UNREACHABLE_LIMIT
                    ));
                }
            }
            let ended = statuses.values().filter(|s| terminal(state_of(s))).count();
            let count =
                |state: v1::JobState| statuses.values().filter(|s| state_of(s) == state).count();
            let (training, evaluating, failed) = (
                count(v1::JobState::Training),
                count(v1::JobState::Evaluating),
                count(v1::JobState::Failed),
            );
            runs_bar.set_position(ended as u64);
            runs_bar.set_message(format!(
                "{training} training, {evaluating} evaluating, {failed} failed{}",
                if reachable {
                    ""
                } else {
                    "; coordinator unreachable"
                }
            ));
            let total: u64 = statuses
                .values()
                .flat_map(|s| s.checkpoints.iter())
                .map(|c| c.tasks_total as u64)
                .sum();
            let done: u64 = statuses.values().map(|s| s.tasks_done as u64).sum();
            tasks_bar.set_length(total);
            tasks_bar.set_position(done);
            if bars.is_hidden() && last_log.elapsed() > Duration::from_secs(10) {
                last_log = Instant::now();
                eprintln!(
                    "{what}: {ended}/{} ended ({training} training, {evaluating} evaluating, {failed} failed); tasks {done}/{total}",
                    specs.len()
                );
            }
            if ended == specs.len() {
                break Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        runs_bar.finish_and_clear();
        tasks_bar.finish_and_clear();
        outcome.map(|()| statuses)
    }
}

/// A status error other than unreachable/unknown: the job counts as failed
/// with that message.
fn break_with(statuses: &mut BTreeMap<String, v1::JobStatus>, name: &str, s: &tonic::Status) {
    statuses.insert(
        name.to_string(),
        v1::JobStatus {
            job: name.to_string(),
            state: v1::JobState::Failed as i32,
            message: format!("status: {} ({:?})", s.message(), s.code()),
            ..Default::default()
        },
    );
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

/// The newest checkpoint's P-M and test accuracy of a status.
pub(crate) fn final_accuracies(status: &v1::JobStatus) -> (Option<f64>, Option<f64>) {
    let last = status.checkpoints.last();
    (
        last.and_then(|c| c.pm_accuracy),
        last.and_then(|c| c.test_accuracy),
    )
}

fn overrides_text(run: &SweepRun) -> String {
    run.overrides
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn sweep(args: SweepArgs) -> Result<()> {
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
    if args.dry_run {
        return Ok(());
    }
    let specs: Vec<JobSpec> = runs.iter().map(|r| r.spec.clone()).collect();
    let stop = stop_flag()?;
    let statuses = if args.remote {
        let config = args.connect.config()?;
        let mut jobs = Jobs::connect(&config)?;
        for spec in &specs {
            jobs.submit(spec)?;
        }
        eprintln!(
            "submitted to {}; the cluster's pool trainers and evaluators run them",
            config.address
        );
        jobs.wait("runs", &specs, &stop, &mut || Ok(()))?
    } else {
        let workdir = args
            .workdir
            .clone()
            .unwrap_or_else(|| PathBuf::from("premem-run").join(&spec.sweep.name));
        let mut cluster = LocalCluster::start(&workdir, args.metrics_listen.as_deref())?;
        let outcome = (|| {
            let mut jobs = Jobs::connect(&ClientConfig::new(&cluster.address, &cluster.token))?;
            let mut created = 0;
            for spec in &specs {
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
            jobs.wait("runs", &specs, &stop, &mut || cluster.supervise())
        })();
        cluster.stop();
        outcome?
    };

    println!(
        "{:<28} {:<10} {:>7} {:>7}  overrides",
        "run", "state", "P-M", "test"
    );
    let mut failed = vec![];
    for run in &runs {
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
    if !args.no_report {
        let out = args
            .report
            .clone()
            .unwrap_or_else(|| format!("{}-report", spec.sweep.output.trim_end_matches('/')));
        write_report(&spec.sweep.output, &out).context("the sweep report")?;
    }
    Ok(())
}
