//! The distributed commands: `premem coordinator`, `premem trainer`,
//! `premem evaluator`, `premem submit|status|cancel`, and `premem run`, a
//! local cluster of child processes on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use premem_proto::v1;
use premem_proto::{ClientConfig, TOKEN_ENV};

use crate::DType;

/// How to reach the coordinator (trainers, evaluators, submit/status/cancel).
#[derive(clap::Args, Clone)]
pub struct ConnectArgs {
    /// The coordinator's gRPC address (https:// for TLS).
    #[arg(
        long,
        env = "PREMEM_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    coordinator: String,
    /// A file whose first line is the cluster token (default: $PREMEM_TOKEN).
    #[arg(long, env = "PREMEM_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// PEM of the CA that signed the coordinator's TLS certificate.
    #[arg(long, env = "PREMEM_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

impl ConnectArgs {
    pub(crate) fn config(&self) -> Result<ClientConfig> {
        let token = premem_proto::load_token(self.token_file.as_deref())?;
        let mut config = ClientConfig::new(self.coordinator.clone(), token);
        config.ca_certificate = self.tls_ca.clone();
        Ok(config)
    }
}

#[derive(clap::Args)]
pub struct CoordinatorArgs {
    /// gRPC address to listen on (port 0: any free port, see --address-file).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: String,
    /// Serve Prometheus metrics at http://<this>/metrics.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Where the coordinator keeps its state (a directory or object-store
    /// URL); a restarted coordinator resumes its jobs from there.
    #[arg(long, default_value = "premem-state")]
    state: String,
    /// A file whose first line is the cluster token (default: $PREMEM_TOKEN).
    #[arg(long, env = "PREMEM_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Serve TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds an evaluator holds a task without renewing its lease.
    #[arg(long, default_value_t = 30.0)]
    lease_ttl: f64,
    /// Seconds a trainer rank may go without a heartbeat before its group
    /// regroups.
    #[arg(long, default_value_t = 60.0)]
    rank_ttl: f64,
    /// Largest request accepted, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_request_bytes: usize,
    /// Write the address actually bound (http://host:port) to this file.
    #[arg(long)]
    address_file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct TrainerArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Run this job (its run name) as --rank. Without --job the trainer joins
    /// the pool: the coordinator assigns it ranks of queued jobs, one after
    /// another (sweeps, curation).
    #[arg(long, requires = "rank")]
    job: Option<String>,
    /// This process's rank in --job, 0..cluster.trainers.
    #[arg(long, env = "PREMEM_RANK", requires = "job")]
    rank: Option<u32>,
    /// A pool trainer's name, unique in the cluster and the same when the
    /// process restarts, so that it gets its rank back (default: the host
    /// name, which is the pod name on Kubernetes).
    #[arg(long, conflicts_with = "job")]
    name: Option<String>,
    /// A pool trainer exits after this many seconds without an assignment
    /// (default: never).
    #[arg(long, conflicts_with = "job")]
    idle_exit: Option<f64>,
    /// Host the ring listener binds (an address the other ranks reach).
    #[arg(long, default_value = "127.0.0.1")]
    bind_host: String,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 2.0)]
    heartbeat: f64,
    /// No progress bar on rank 0 (log lines instead).
    #[arg(long)]
    no_progress: bool,
}

#[derive(clap::Args)]
pub struct EvaluatorArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// A name for logs and metrics (default: host-pid).
    #[arg(long)]
    name: Option<String>,
    /// Local checkpoint cache.
    #[arg(long, default_value = "premem-cache")]
    cache_dir: PathBuf,
    /// Bound of the checkpoint cache, in GB.
    #[arg(long, default_value_t = 20.0)]
    cache_gb: f64,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long, value_enum, default_value_t = DType::Auto)]
    dtype: DType,
    /// Exit after this many seconds without work (default: never).
    #[arg(long)]
    idle_exit: Option<f64>,
    /// Fault injection for tests: hold each leased task this many seconds
    /// before evaluating it.
    #[arg(long, hide = true)]
    debug_hold_task: Option<f64>,
}

#[derive(clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The job spec (TOML).
    #[arg(long)]
    config: PathBuf,
}

#[derive(clap::Args)]
pub struct JobArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The job (its run name).
    #[arg(long)]
    job: String,
}

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
    /// Serve Prometheus metrics of the coordinator at this address.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Checkpoint cache of the evaluators.
    #[arg(long, default_value = "premem-cache")]
    cache_dir: PathBuf,
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A flag set by the first SIGTERM/SIGINT; a second one exits at once.
pub(crate) fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

pub fn coordinator(args: CoordinatorArgs) -> Result<()> {
    let token = premem_proto::load_token(args.token_file.as_deref())?;
    let mut options = premem_coordinator::ServeOptions::new(&args.listen, &args.state, token);
    options.metrics_listen = args.metrics_listen.clone();
    options.tls = args.tls_cert.clone().zip(args.tls_key.clone());
    options.timing = premem_coordinator::Timing {
        lease_ttl: Duration::from_secs_f64(args.lease_ttl),
        rank_ttl: Duration::from_secs_f64(args.rank_ttl),
    };
    options.max_request_bytes = args.max_request_bytes;
    let tls = options.tls.is_some();
    runtime()?.block_on(async move {
        let running = premem_coordinator::start(options).await?;
        let scheme = if tls { "https" } else { "http" };
        let address = format!("{scheme}://{}", running.address);
        if let Some(file) = &args.address_file {
            premem_core::files::write_atomic(file, address.as_bytes())
                .with_context(|| format!("writing {}", file.display()))?;
        }
        if let Some(metrics) = running.metrics_address {
            tracing::info!("metrics at http://{metrics}/metrics");
        }
        eprintln!("coordinator at {address}, state in {}", args.state);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping");
        running.stop().await?;
        Ok(())
    })
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "premem".into())
}

pub fn trainer(args: TrainerArgs) -> Result<()> {
    let mut options = premem_trainer::node::NodeOptions {
        coordinator: args.connect.config()?,
        job: String::new(),
        rank: 0,
        trainer: String::new(),
        bind_host: args.bind_host.clone(),
        progress: !args.no_progress,
        stop: Some(stop_flag()?),
        heartbeat: Duration::from_secs_f64(args.heartbeat),
        connect_timeout: Duration::from_secs(600),
    };
    let (Some(job), Some(rank)) = (args.job.clone(), args.rank) else {
        options.trainer = args.name.clone().unwrap_or_else(host_name);
        options.progress = false;
        let name = options.trainer.clone();
        let summary = premem_trainer::node::run_pool(&premem_trainer::node::PoolOptions {
            node: options,
            idle_exit: args.idle_exit.map(Duration::from_secs_f64),
        })?;
        println!(
            "pool trainer '{name}': {} assignment(s) ended, {} failed",
            summary.runs.len(),
            summary.failures
        );
        return Ok(());
    };
    options.job = job;
    options.rank = rank;
    let summary = premem_trainer::node::run_node(&options)?;
    println!(
        "rank {rank}: {} {}/{} steps, final loss {}",
        if summary.interrupted {
            "stopped at"
        } else {
            "trained"
        },
        summary.steps,
        summary.total_steps,
        summary.final_loss.map_or("-".into(), |l| format!("{l:.4}")),
    );
    Ok(())
}

pub fn evaluator(args: EvaluatorArgs) -> Result<()> {
    let device = crate::parse_device(&args.device)?;
    let kind = match args.dtype {
        DType::Auto => None,
        other => Some(other.kind(device)),
    };
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", host_name(), std::process::id()));
    let options = premem_evaluator::worker::WorkerOptions {
        coordinator: args.connect.config()?,
        name,
        cache_dir: args.cache_dir.clone(),
        cache_bytes: (args.cache_gb * 1e9) as u64,
        device,
        kind,
        stop: stop_flag()?,
        idle_exit: args.idle_exit.map(Duration::from_secs_f64),
        hold_task: args.debug_hold_task.map(Duration::from_secs_f64),
    };
    let summary = premem_evaluator::worker::run_worker(&options)?;
    println!("{summary:?}");
    Ok(())
}

pub(crate) fn call<T>(
    what: &str,
    address: &str,
    result: Result<tonic::Response<T>, tonic::Status>,
) -> Result<T> {
    result
        .map(tonic::Response::into_inner)
        .map_err(|s| anyhow::anyhow!("{what} at {address}: {} ({:?})", s.message(), s.code()))
}

pub fn submit(args: SubmitArgs) -> Result<()> {
    let spec = premem_core::JobSpec::from_file(&args.config)?;
    let config = args.connect.config()?;
    runtime()?.block_on(async {
        let mut client = premem_proto::client(&config)?;
        let reply = call(
            "submitting the job",
            &config.address,
            client
                .submit_job(v1::SubmitJobRequest {
                    spec_json: serde_json::to_string(&spec)?,
                })
                .await,
        )?;
        println!(
            "job '{}' {}",
            reply.job,
            if reply.created {
                "submitted"
            } else {
                "was already submitted"
            }
        );
        Ok(())
    })
}

fn print_status(status: &v1::JobStatus) {
    let state = v1::JobState::try_from(status.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("JOB_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into());
    println!(
        "job '{}': {state}{}; step {}/{}; ranks {}/{} (generation {}); tasks {} done, {} leased, {} pending; output {}",
        status.job,
        if status.message.is_empty() {
            String::new()
        } else {
            format!(" ({})", status.message)
        },
        status.step,
        status.total_steps,
        status.ranks_alive,
        status.world_size,
        status.generation,
        status.tasks_done,
        status.tasks_leased,
        status.tasks_pending,
        status.output
    );
    let pct = |v: Option<f64>| v.map_or("     -".to_string(), |v| format!("{:5.1}%", v * 100.0));
    if !status.checkpoints.is_empty() {
        println!("    step  tasks    P-M  train   test  memorized");
        for c in &status.checkpoints {
            println!(
                "{:>8} {:>3}/{:<3} {} {} {} {}",
                c.step,
                c.tasks_done,
                c.tasks_total,
                pct(c.pm_accuracy),
                pct(c.train_accuracy),
                pct(c.test_accuracy),
                pct(c.memorized_fraction)
            );
        }
    }
}

pub fn status(args: JobArgs) -> Result<()> {
    let config = args.connect.config()?;
    runtime()?.block_on(async {
        let mut client = premem_proto::client(&config)?;
        let status = call(
            "asking for the status",
            &config.address,
            client
                .get_status(v1::GetStatusRequest {
                    job: args.job.clone(),
                })
                .await,
        )?;
        print_status(&status);
        Ok(())
    })
}

pub fn cancel(args: JobArgs) -> Result<()> {
    let config = args.connect.config()?;
    runtime()?.block_on(async {
        let mut client = premem_proto::client(&config)?;
        call(
            "cancelling the job",
            &config.address,
            client
                .cancel_job(v1::CancelJobRequest {
                    job: args.job.clone(),
                })
                .await,
        )?;
        println!("job '{}' cancelled", args.job);
        Ok(())
    })
}

/// A child process of `premem run`, restarted when it dies.
struct Member {
    name: String,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    log: PathBuf,
    child: Child,
    restarts: u32,
}

const MAX_RESTARTS: u32 = 3;

fn spawn(args: &[String], log: &Path, env: &[(&str, String)]) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut command = Process::new(std::env::current_exe().context("finding this binary")?);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: prctl is async-signal-safe; the child dies with this process.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("starting {}", args.join(" ")))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn terminate(child: &mut Child) {
    // SAFETY: sending a signal to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The default job of `premem run`.
const DEFAULT_JOB: &str = include_str!("../examples/cluster.toml");

/// The embedded default job, with its synthetic data made if missing.
fn default_job() -> Result<premem_core::JobSpec> {
    let spec = premem_core::JobSpec::from_toml(
        DEFAULT_JOB,
        Path::new("examples/cluster.toml (built in)"),
    )?;
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

/// A coordinator and its workers as child processes of this one, on
/// loopback: `premem run`, `premem sweep` and `premem curate`.
pub(crate) struct LocalCluster {
    pub address: String,
    pub token: String,
    pub logs: PathBuf,
    coordinator: Child,
    members: Vec<Member>,
}

impl LocalCluster {
    /// Starts a coordinator whose state lives in `workdir/state` (a second
    /// start over the same workdir resumes its jobs); logs go to
    /// `workdir/logs`.
    pub fn start(workdir: &Path, metrics_listen: Option<&str>) -> Result<LocalCluster> {
        let logs = workdir.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let token = match std::env::var(TOKEN_ENV) {
            Ok(token) if !token.is_empty() => token,
            _ => format!("{:032x}", rand::random::<u128>()),
        };
        let address_file = workdir.join("coordinator.address");
        let _ = std::fs::remove_file(&address_file);
        let mut coordinator_args = vec![
            "coordinator".to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--state".into(),
            workdir.join("state").to_string_lossy().into_owned(),
            "--address-file".into(),
            address_file.to_string_lossy().into_owned(),
            // Local workers heartbeat every 2 s: notice a dead one sooner,
            // and wait less before reassigning ranks after a restart.
            "--rank-ttl".into(),
            "15".into(),
        ];
        if let Some(metrics) = metrics_listen {
            coordinator_args.extend(["--metrics-listen".into(), metrics.to_string()]);
        }
        let coordinator_log = logs.join("coordinator.log");
        let env = vec![(TOKEN_ENV, token.clone())];
        let mut coordinator = spawn(&coordinator_args, &coordinator_log, &env)?;
        let started = Instant::now();
        let address = loop {
            if let Ok(text) = std::fs::read_to_string(&address_file) {
                break text.trim().to_string();
            }
            if let Some(status) = coordinator.try_wait()? {
                bail!(
                    "the coordinator exited ({status}) before listening; its log ({}):\n{}",
                    coordinator_log.display(),
                    log_tail(&coordinator_log)
                );
            }
            if started.elapsed() > Duration::from_secs(60) {
                terminate(&mut coordinator);
                bail!(
                    "the coordinator did not start within 60 s; see {}",
                    coordinator_log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok(LocalCluster {
            address,
            token,
            logs,
            coordinator,
            members: vec![],
        })
    }

    /// The environment of a worker: the token, the coordinator, and
    /// `threads` OpenMP threads (one machine for every process), unless
    /// OMP_NUM_THREADS is set for this process.
    fn env(&self, threads: usize) -> Vec<(&'static str, String)> {
        let threads = std::env::var("OMP_NUM_THREADS")
            .ok()
            .filter(|t| t.parse::<usize>().is_ok_and(|t| t > 0))
            .unwrap_or_else(|| threads.max(1).to_string());
        vec![
            (TOKEN_ENV, self.token.clone()),
            ("PREMEM_COORDINATOR", self.address.clone()),
            ("OMP_NUM_THREADS", threads),
        ]
    }

    /// Starts a worker (`premem <args>`), logging to `logs/<log>.log`.
    pub fn add(&mut self, name: &str, log: &str, args: Vec<String>, threads: usize) -> Result<()> {
        let log = self.logs.join(format!("{log}.log"));
        let env = self.env(threads);
        self.members.push(Member {
            name: name.to_string(),
            child: spawn(&args, &log, &env)?,
            env,
            args,
            log,
            restarts: 0,
        });
        Ok(())
    }

    /// Starts `count` pool trainers sharing the machine's cores.
    pub fn add_pool_trainers(&mut self, count: usize) -> Result<()> {
        let threads = cores() / count.max(1);
        for i in 0..count {
            let args = vec![
                "trainer".to_string(),
                "--name".into(),
                format!("trainer-{i}"),
                "--no-progress".into(),
            ];
            self.add(
                &format!("pool trainer {i}"),
                &format!("trainer-{i}"),
                args,
                threads,
            )?;
        }
        Ok(())
    }

    pub fn add_evaluators(&mut self, count: usize, cache_dir: &Path) -> Result<()> {
        for i in 0..count {
            let args = vec![
                "evaluator".to_string(),
                "--name".into(),
                format!("evaluator-{i}"),
                "--cache-dir".into(),
                cache_dir.to_string_lossy().into_owned(),
            ];
            self.add(
                &format!("evaluator {i}"),
                &format!("evaluator-{i}"),
                args,
                1,
            )?;
        }
        Ok(())
    }

    /// Restarts workers that died (a trainer of one job that exited
    /// successfully is done); fails after [`MAX_RESTARTS`] restarts of one.
    pub fn supervise(&mut self) -> Result<()> {
        for member in self.members.iter_mut() {
            if let Some(status) = member.child.try_wait()? {
                let trainer_done = member.name.starts_with("trainer rank") && status.success();
                if trainer_done {
                    continue;
                }
                if member.restarts >= MAX_RESTARTS {
                    bail!(
                        "{} exited ({status}) {MAX_RESTARTS} times; its log ({}):\n{}",
                        member.name,
                        member.log.display(),
                        log_tail(&member.log)
                    );
                }
                member.restarts += 1;
                tracing::warn!(member = member.name, %status, restart = member.restarts, "restarting");
                member.child = spawn(&member.args, &member.log, &member.env)?;
            }
        }
        Ok(())
    }

    /// Stops the workers, then the coordinator.
    pub fn stop(mut self) {
        for member in self.members.iter_mut() {
            terminate(&mut member.child);
        }
        terminate(&mut self.coordinator);
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn run(args: RunArgs) -> Result<()> {
    let spec = match &args.config {
        Some(config) => premem_core::JobSpec::from_file(config)?,
        None => default_job()?,
    };
    let name = spec.run.name.clone();
    let workdir = args
        .workdir
        .clone()
        .unwrap_or_else(|| PathBuf::from("premem-run").join(&name));
    let stop = stop_flag()?;
    let mut cluster = LocalCluster::start(&workdir, args.metrics_listen.as_deref())?;
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

/// `premem report <location> --out <out>` in a child process; `out` is a
/// local directory or an object-store URL.
pub(crate) fn write_report(location: &str, out: &str) -> Result<()> {
    let status = Process::new(std::env::current_exe()?)
        .args(["report", location, "--out", out])
        .status()
        .context("running premem report")?;
    if !status.success() {
        bail!("premem report failed ({status})");
    }
    println!("report: {}/report.html", out.trim_end_matches('/'));
    Ok(())
}

/// Submits the job, starts and watches the trainers and evaluators, and
/// shows progress until the job ends. Returns the final status.
fn drive(
    args: &RunArgs,
    spec: &premem_core::JobSpec,
    cluster: &mut LocalCluster,
    stop: &AtomicBool,
) -> Result<v1::JobStatus> {
    let name = spec.run.name.clone();
    let address = cluster.address.clone();
    let config = ClientConfig::new(&address, &cluster.token);
    let rt = runtime()?;
    // The channel's background task needs the runtime's context.
    let _context = rt.enter();
    let mut client = premem_proto::client(&config)?;
    rt.block_on(async {
        call(
            "submitting the job",
            &address,
            client
                .submit_job(v1::SubmitJobRequest {
                    spec_json: serde_json::to_string(spec)?,
                })
                .await,
        )
    })?;

    // One machine for every process: split its cores between the trainer
    // ranks (which run together) and give each evaluator one thread, rather
    // than letting each libtorch take every core.
    let threads = cores() / spec.cluster.trainers.max(1);
    for rank in 0..spec.cluster.trainers {
        let args = vec![
            "trainer".to_string(),
            "--job".into(),
            name.clone(),
            "--rank".into(),
            rank.to_string(),
            "--no-progress".into(),
        ];
        cluster.add(
            &format!("trainer rank {rank}"),
            &format!("trainer-{rank}"),
            args,
            threads,
        )?;
    }
    if spec.eval.enabled {
        cluster.add_evaluators(spec.cluster.evaluators, &args.cache_dir)?;
    }
    eprintln!(
        "job '{name}': coordinator at {address}, {} trainer rank(s), {} evaluator(s); logs in {}",
        spec.cluster.trainers,
        if spec.eval.enabled {
            spec.cluster.evaluators
        } else {
            0
        },
        cluster.logs.display()
    );

    let bars = indicatif::MultiProgress::new();
    let style =
        indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> ");
    let train_bar = bars.add(indicatif::ProgressBar::new(1).with_style(style.clone()));
    train_bar.set_prefix("train");
    let eval_bar = bars.add(indicatif::ProgressBar::new(0).with_style(style));
    eval_bar.set_prefix("evaluate");

    let outcome = (|| -> Result<v1::JobStatus> {
        let mut last_log = Instant::now();
        loop {
            if stop.load(Ordering::SeqCst) {
                let _ = rt.block_on(client.cancel_job(v1::CancelJobRequest { job: name.clone() }));
                bail!("interrupted: job cancelled");
            }
            cluster.supervise()?;
            let status = rt.block_on(client.get_status(v1::GetStatusRequest { job: name.clone() }));
            let status = match status {
                Ok(s) => s.into_inner(),
                Err(e) => {
                    tracing::warn!(error = %e.message(), "coordinator status");
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            };
            let state = v1::JobState::try_from(status.state).unwrap_or(v1::JobState::Unspecified);
            train_bar.set_length(status.total_steps.max(1));
            train_bar.set_position(status.step);
            train_bar.set_message(format!(
                "ranks {}/{} gen {}",
                status.ranks_alive, status.world_size, status.generation
            ));
            let total: u32 = status.checkpoints.iter().map(|c| c.tasks_total).sum();
            eval_bar.set_length(total as u64);
            eval_bar.set_position(status.tasks_done as u64);
            let newest = status
                .checkpoints
                .iter()
                .rev()
                .find(|c| c.pm_accuracy.is_some());
            eval_bar.set_message(match newest {
                Some(c) => format!(
                    "P-M {:.1}% at step {}{}",
                    c.pm_accuracy.unwrap_or(0.0) * 100.0,
                    c.step,
                    c.test_accuracy
                        .map_or(String::new(), |t| format!(", test {:.1}%", t * 100.0))
                ),
                None => format!("{} leased", status.tasks_leased),
            });
            if bars.is_hidden() && last_log.elapsed() > Duration::from_secs(10) {
                last_log = Instant::now();
                eprintln!(
                    "step {}/{}, tasks {}/{total}{}",
                    status.step,
                    status.total_steps,
                    status.tasks_done,
                    newest.map_or(String::new(), |c| format!(
                        ", P-M {:.1}% at step {}",
                        c.pm_accuracy.unwrap_or(0.0) * 100.0,
                        c.step
                    ))
                );
            }
            if matches!(
                state,
                v1::JobState::Done | v1::JobState::Failed | v1::JobState::Cancelled
            ) {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    })();
    train_bar.finish_and_clear();
    eval_bar.finish_and_clear();
    outcome
}
