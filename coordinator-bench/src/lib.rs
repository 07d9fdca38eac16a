//! The coordinator's load benchmark (`premem-coordinator-bench`, see
//! `benches/README.md`): a real coordinator over a temporary state
//! directory and runs, a sweep of [`Workload`] jobs whose checkpoints are
//! all published up front, and simulated evaluators in separate client
//! processes ([`client`]), so that the latency they measure is the
//! server's. Each run checks that every task was accepted exactly once,
//! that every job ends DONE and that each job's P-M accuracy equals an
//! independent computation; it samples the coordinator process's memory,
//! and can restart the coordinator over the finished state and time the
//! rebuild.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use premem_proto::ClientConfig;
use premem_proto::v1::{self, JobState};

use premem_coordinator::Timing;
use premem_coordinator::server::{Running, ServeError, ServeOptions, start};

pub mod client;
mod report;
pub mod workload;

pub use client::{Behaviour, ClientPlan, Tally};
pub use report::{RunStats, percentile_ms};
pub use workload::Workload;

const TOKEN: &str = "bench-token";

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench options: {0}")]
    Options(String),
    #[error("coordinator: {0}")]
    Serve(#[from] ServeError),
    #[error("client: {0}")]
    Connect(#[from] premem_proto::ConnectError),
    #[error("RPC: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("a client process: {0}")]
    Client(String),
    /// A check of the outcome failed: the coordinator misbehaved.
    #[error("check failed: {0}")]
    Check(String),
}

/// One benchmark run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub evaluators: usize,
    /// Evaluation tasks in all (rounded up to whole checkpoints).
    pub tasks: usize,
    /// Jobs sharing the tasks.
    pub jobs: usize,
    /// Examples per task (`eval.task_examples`): rows per completion.
    pub examples_per_task: usize,
    /// Client processes sharing the evaluators.
    pub client_processes: usize,
    /// The program that runs a client process (`<exe> clients`, the plan
    /// on its standard input).
    pub client_exe: PathBuf,
    pub behaviour: Behaviour,
    pub lease_ttl: Duration,
    /// How often the coordinator process's memory is sampled.
    pub memory_every: Duration,
    /// The bytes the process's heap holds now, when its allocator counts
    /// them (the benchmark's binary does; a test does not).
    pub heap_bytes: Option<fn() -> usize>,
    /// After the run, restart the coordinator over its state and time it.
    pub restart: bool,
}

impl BenchOptions {
    pub fn new(evaluators: usize, tasks: usize, client_exe: PathBuf) -> BenchOptions {
        BenchOptions {
            evaluators,
            tasks,
            jobs: 1,
            examples_per_task: 4,
            client_processes: 1,
            client_exe,
            behaviour: Behaviour::default(),
            lease_ttl: Duration::from_secs(3600),
            memory_every: Duration::from_secs(5),
            heap_bytes: None,
            restart: false,
        }
    }

    fn check(&self) -> Result<(), BenchError> {
        let positive = [
            ("evaluators", self.evaluators),
            ("tasks", self.tasks),
            ("jobs", self.jobs),
            ("examples per task", self.examples_per_task),
            ("client processes", self.client_processes),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(BenchError::Options(format!("{name} must be positive")));
        }
        if self.client_processes > self.evaluators {
            return Err(BenchError::Options(format!(
                "{} client processes for {} evaluators: at most one process per evaluator",
                self.client_processes, self.evaluators
            )));
        }
        let b = &self.behaviour;
        if !(0.0..=1.0).contains(&(b.deaths + b.expiries)) || b.deaths < 0.0 || b.expiries < 0.0 {
            return Err(BenchError::Options(
                "deaths and expiries are chances per task: each ≥ 0, together ≤ 1".into(),
            ));
        }
        if b.work_ms.0 > b.work_ms.1 {
            return Err(BenchError::Options(format!(
                "work time {}..{} ms: the low end is above the high end",
                b.work_ms.0, b.work_ms.1
            )));
        }
        Ok(())
    }
}

/// Runs one benchmark: prepares the sweep, serves it, drives it to DONE
/// with the client processes and checks the outcome.
pub async fn run(options: BenchOptions) -> Result<RunStats, BenchError> {
    options.check()?;
    let workload = Workload::new(options.tasks, options.jobs, options.examples_per_task);
    let dir = tempfile::tempdir()?;
    let specs: Vec<String> = (0..workload.jobs)
        .map(|j| workload.prepare_job(dir.path(), j))
        .collect::<Result<_, _>>()?;
    let running = start(serve_options(dir.path(), options.lease_ttl)).await?;
    let address = format!("http://{}", running.address);
    submit(&address, &specs, workload.tasks()).await?;
    let (memory, log) = sample_memory(running.state.clone(), &options);
    let started = Instant::now();
    let cpu_before = cpu_seconds().unwrap_or(f64::NAN);
    let tally = drive(&options, &workload, dir.path(), &address).await;
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = cpu_seconds().unwrap_or(f64::NAN) - cpu_before;
    memory.abort();
    let samples = std::mem::take(&mut *log.lock().unwrap_or_else(|p| p.into_inner()));
    let tally = tally?;
    let pm = check_outcome(&options, &workload, &address, &tally).await?;
    let mut stats = RunStats::new(&options, &workload, tally, seconds, pm);
    stats.memory = samples;
    stats.server_cpu_seconds = server_cpu;
    (stats.server_lease_mean_ms, stats.server_lease_p99_ms) = server_lease_ms(&running);
    let state_dir = dir.path().join("state");
    running.stop().await?;
    if options.restart {
        stats.restart_seconds = Some(restart(&options, &workload, &state_dir).await?);
    }
    Ok(stats)
}

fn serve_options(dir: &Path, lease_ttl: Duration) -> ServeOptions {
    let mut serve = ServeOptions::new(
        "127.0.0.1:0",
        dir.join("state").display().to_string(),
        TOKEN,
    );
    serve.timing = Timing {
        lease_ttl,
        rank_ttl: Duration::from_secs(3600),
    };
    serve.scan_interval = Duration::from_millis(100);
    serve
}

/// Submits the jobs and waits until the scanner has made every task.
async fn submit(address: &str, specs: &[String], tasks: usize) -> Result<(), BenchError> {
    let mut client = premem_proto::client(&ClientConfig::new(address, TOKEN))?;
    let mut names = vec![];
    for spec_json in specs {
        let reply = client
            .submit_job(v1::SubmitJobRequest {
                spec_json: spec_json.clone(),
            })
            .await?;
        names.push(reply.into_inner().job);
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut pending = 0;
        for job in &names {
            pending += client::status(&mut client, job).await?.tasks_pending as usize;
        }
        if pending == tasks {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Check(format!(
                "{pending} of {tasks} tasks pending after 300 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the client processes, lets them go together once every one has
/// connected its evaluators, and merges their tallies.
async fn drive(
    options: &BenchOptions,
    workload: &Workload,
    dir: &Path,
    address: &str,
) -> Result<Tally, BenchError> {
    let plans = client_plans(options, workload, dir, address);
    let exe = options.client_exe.clone();
    tokio::task::spawn_blocking(move || drive_processes(&exe, plans))
        .await
        .map_err(|e| BenchError::Client(format!("the driver panicked: {e}")))?
}

fn client_plans(
    options: &BenchOptions,
    workload: &Workload,
    dir: &Path,
    address: &str,
) -> Vec<ClientPlan> {
    let n = options.client_processes;
    (0..n)
        .map(|p| {
            let first = p * options.evaluators / n;
            let end = (p + 1) * options.evaluators / n;
            ClientPlan {
                address: address.to_string(),
                token: TOKEN.to_string(),
                dir: dir.to_path_buf(),
                jobs: workload.job_names(),
                first,
                count: end - first,
                lease_ttl_ms: options.lease_ttl.as_millis() as u64,
                behaviour: options.behaviour.clone(),
            }
        })
        .collect()
}

/// The client processes' protocol: the plan as one JSON line on standard
/// input; `ready` on standard output once connected; `go` on standard
/// input to start; the tally as the last line of standard output.
fn drive_processes(exe: &Path, plans: Vec<ClientPlan>) -> Result<Tally, BenchError> {
    let mut children: Vec<(Child, BufReader<std::process::ChildStdout>)> = vec![];
    for plan in &plans {
        let mut child = Command::new(exe)
            .arg("clients")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::Client(format!("{}: {e}", exe.display())))?;
        let mut stdin = child.stdin.take().expect("piped");
        writeln!(
            stdin,
            "{}",
            serde_json::to_string(plan).expect("a plan serialises")
        )?;
        child.stdin = Some(stdin);
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        children.push((child, stdout));
    }
    for (_, stdout) in &mut children {
        let line = read_line(stdout)?;
        if line.trim() != "ready" {
            return Err(BenchError::Client(format!(
                "expected 'ready', got '{line}'"
            )));
        }
    }
    for (child, _) in &mut children {
        writeln!(child.stdin.as_mut().expect("kept"), "go")?;
    }
    let mut tally = Tally::default();
    for (mut child, mut stdout) in children {
        let line = read_line(&mut stdout)?;
        let status = child.wait()?;
        if !status.success() {
            return Err(BenchError::Client(format!("exited with {status}")));
        }
        let part: Tally = serde_json::from_str(&line)
            .map_err(|e| BenchError::Client(format!("its tally: {e}")))?;
        tally.merge(part);
    }
    Ok(tally)
}

fn read_line(stdout: &mut impl BufRead) -> Result<String, BenchError> {
    let mut line = String::new();
    if stdout.read_line(&mut line)? == 0 {
        return Err(BenchError::Client(
            "ended before answering (its error is above)".into(),
        ));
    }
    Ok(line)
}

/// The client process's side (`<exe> clients`): reads the plan, connects,
/// says `ready`, waits for `go`, drives, prints the tally.
pub fn client_process() -> Result<(), BenchError> {
    let input = std::io::stdin();
    let mut line = String::new();
    input.read_line(&mut line)?;
    let plan: ClientPlan =
        serde_json::from_str(&line).map_err(|e| BenchError::Client(format!("the plan: {e}")))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let go = runtime.spawn_blocking(move || {
        let mut line = String::new();
        input.read_line(&mut line).map(|_| ())
    });
    let tally = runtime.block_on(client::run(plan, || println!("ready"), async move {
        let _ = go.await;
    }))?;
    println!(
        "{}",
        serde_json::to_string(&tally).expect("a tally serialises")
    );
    Ok(())
}

/// Checks the outcome: every task accepted exactly once; without a soak no
/// rejected completion, with one exactly the late ones rejected; every job
/// DONE with its P-M accuracy as computed independently. Returns that P-M.
async fn check_outcome(
    options: &BenchOptions,
    workload: &Workload,
    address: &str,
    tally: &Tally,
) -> Result<f64, BenchError> {
    let tasks = workload.tasks();
    let distinct: std::collections::BTreeSet<&String> = tally.accepted.iter().collect();
    if tally.accepted.len() != tasks || distinct.len() != tasks {
        return Err(BenchError::Check(format!(
            "{} accepted ({} distinct); want each of {tasks} tasks accepted once",
            tally.accepted.len(),
            distinct.len()
        )));
    }
    let rejected = tally.duplicate + tally.expired;
    let want = if options.behaviour.soak_seconds.is_some() {
        tally.late
    } else {
        0
    };
    if rejected != want {
        return Err(BenchError::Check(format!(
            "{rejected} completions rejected ({} duplicate, {} expired); want {want} (the late ones)",
            tally.duplicate, tally.expired
        )));
    }
    check_jobs(workload, address).await
}

/// Every job DONE with all its tasks and the expected P-M accuracy.
async fn check_jobs(workload: &Workload, address: &str) -> Result<f64, BenchError> {
    let mut client = premem_proto::client(&ClientConfig::new(address, TOKEN))?;
    let per_job = workload.tasks() / workload.jobs;
    let expected = workload.expected_pm();
    for job in workload.job_names() {
        let status = client::status(&mut client, &job).await?;
        if status.state != JobState::Done as i32 || status.tasks_done as usize != per_job {
            return Err(BenchError::Check(format!(
                "job {job}: state {:?}, {} of {per_job} tasks done ({})",
                JobState::try_from(status.state),
                status.tasks_done,
                status.message
            )));
        }
        let pm = status.checkpoints.last().and_then(|c| c.pm_accuracy);
        if pm.is_none_or(|pm| (pm - expected).abs() > 1e-9) {
            return Err(BenchError::Check(format!(
                "job {job}: P-M accuracy {pm:?}, expected {expected}"
            )));
        }
    }
    Ok(expected)
}

/// The exactly-once check's figures, as one line.
pub fn exactly_once_line(s: &RunStats) -> String {
    format!(
        "exactly once ({} evaluators, {} tasks): {} accepted, each once; {} duplicate and {} expired completions, all {} of them sent late on purpose; every job DONE, P-M accuracy {:.6} as computed independently",
        s.evaluators, s.tasks, s.accepted, s.duplicate, s.expired, s.late, s.pm_accuracy
    )
}

/// Starts a coordinator over the finished state, times the rebuild, and
/// checks it sees what the first one did.
async fn restart(
    options: &BenchOptions,
    workload: &Workload,
    state_dir: &Path,
) -> Result<f64, BenchError> {
    let dir = state_dir
        .parent()
        .expect("the state is in the bench's directory");
    let started = Instant::now();
    let running: Running = start(serve_options(dir, options.lease_ttl)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let address = format!("http://{}", running.address);
    let checked = check_jobs(workload, &address).await;
    running.stop().await?;
    checked?;
    Ok(seconds)
}

/// One sample of the coordinator process's memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemorySample {
    /// Since the evaluators started.
    pub seconds: f64,
    /// Resident set size.
    pub rss: u64,
    /// What the heap holds (live allocations), when counted: unlike the
    /// RSS it does not include what the allocator keeps of freed memory.
    pub heap: Option<u64>,
    /// Tasks done by then.
    pub done: usize,
}

type MemoryLog = Arc<Mutex<Vec<MemorySample>>>;

/// Samples this process's memory every `options.memory_every` (the
/// coordinator: the evaluators are other processes).
fn sample_memory(
    state: Arc<Mutex<premem_coordinator::state::State>>,
    options: &BenchOptions,
) -> (tokio::task::JoinHandle<()>, MemoryLog) {
    let (every, heap) = (options.memory_every, options.heap_bytes);
    let log = MemoryLog::default();
    let kept = log.clone();
    let started = Instant::now();
    let task = tokio::spawn(async move {
        loop {
            let done = {
                let state = state.lock().unwrap_or_else(|p| p.into_inner());
                state.jobs.values().map(|j| j.done_tasks()).sum()
            };
            let sample = MemorySample {
                seconds: started.elapsed().as_secs_f64(),
                rss: resident_bytes().unwrap_or(0),
                heap: heap.map(|bytes| bytes() as u64),
                done,
            };
            log.lock().unwrap_or_else(|p| p.into_inner()).push(sample);
            tokio::time::sleep(every).await;
        }
    });
    (task, kept)
}

/// This process's CPU time, user and system, in seconds (Linux:
/// `/proc/self/stat`, in the kernel's fixed 100 ticks a second).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command's closing parenthesis; utime and stime
    // are the 14th and 15th of the line.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// The server's own time per `LeaseTask` (the lock, the state's work and
/// the reply, without the network): mean and the upper bound of the
/// bucket holding the 99th percentile, in milliseconds, from the
/// coordinator's `premem_lease_seconds` histogram.
fn server_lease_ms(running: &Running) -> (f64, f64) {
    let text = running.metrics.render(&running.state);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let (sum, count) = (
        value("premem_lease_seconds_sum "),
        value("premem_lease_seconds_count "),
    );
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("premem_lease_seconds_bucket{le=\"")?;
            let (le, n) = rest.split_once("\"} ")?;
            Some((le.parse().unwrap_or(f64::INFINITY), n.trim().parse().ok()?))
        })
        .collect();
    let p99 = buckets
        .iter()
        .find(|(_, n)| *n >= 0.99 * count)
        .map_or(f64::NAN, |(le, _)| *le);
    (sum / count * 1e3, p99 * 1e3)
}

/// This process's resident set size (Linux: `/proc/self/status`).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
