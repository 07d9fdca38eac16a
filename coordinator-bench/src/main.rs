//! `premem-coordinator-bench`: the coordinator's load benchmark and soak
//! (see `benches/README.md` and the `premem_coordinator_bench` library).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use premem_coordinator_bench::{self as bench, Behaviour, BenchError, BenchOptions, RunStats};

/// Load benchmark of the premem coordinator: a real coordinator in this
/// process, simulated evaluators in client processes, a sweep of jobs whose
/// checkpoints are published up front. Every run checks exactly-once
/// completion, that every job ends DONE, and its P-M accuracy.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One run: tasks/s, lease and completion latency at the clients.
    Load(LoadArgs),
    /// The table of `benches/README.md` in one run: 1 evaluator at 4,096,
    /// 8,192 and 100,000 tasks (a sweep of 48 jobs, then restarted), 256
    /// at 4,096, 1,000 at 8,192 and at the 100,000 of the sweep, and 1,000
    /// that spend 1-3 s on each task.
    Table {
        /// Client processes sharing the evaluators.
        #[arg(long, default_value_t = 1)]
        client_processes: usize,
    },
    /// Minutes of leases with simulated work, evaluator deaths and lease
    /// expiries; reports the coordinator's memory over time.
    Soak(SoakArgs),
    /// A client process (started by the others; the plan on stdin).
    #[command(hide = true)]
    Clients,
}

#[derive(Args)]
struct LoadArgs {
    /// Concurrent simulated evaluators.
    #[arg(long, default_value_t = 256)]
    evaluators: usize,
    /// Evaluation tasks in all (rounded up to whole checkpoints).
    #[arg(long, default_value_t = 4096)]
    tasks: usize,
    /// Jobs sharing the tasks (a sweep).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Examples per task: rows per completion.
    #[arg(long, default_value_t = 4)]
    examples_per_task: usize,
    /// Client processes sharing the evaluators.
    #[arg(long, default_value_t = 1)]
    client_processes: usize,
    /// Restart the coordinator over the finished state and time the rebuild.
    #[arg(long)]
    restart: bool,
}

#[derive(Args)]
struct SoakArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// How long the soak's behaviour lasts; the remaining tasks are then
    /// finished plainly.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Simulated evaluation time per task, uniform in LOW..HIGH ms.
    #[arg(long, default_value = "2000..8000", value_parser = parse_range)]
    work_ms: (u64, u64),
    /// Chance per task that its evaluator dies holding it.
    #[arg(long, default_value_t = 0.02)]
    deaths: f64,
    /// Chance per task that its evaluator stops renewing and completes late.
    #[arg(long, default_value_t = 0.02)]
    expiries: f64,
    /// The lease TTL, seconds.
    #[arg(long, default_value_t = 6.0)]
    lease_ttl_s: f64,
    /// Memory sample interval, seconds.
    #[arg(long, default_value_t = 15.0)]
    memory_every_s: f64,
    /// Seconds of warm-up before memory should be flat: the evaluators
    /// arrive, their one-minute rate windows fill, and the dead ones are
    /// forgotten after ten lease TTLs.
    #[arg(long, default_value_t = 120.0)]
    warm_up_s: f64,
    /// Seed of the evaluators' draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (low, high) = text
        .split_once("..")
        .ok_or_else(|| format!("'{text}': want LOW..HIGH (milliseconds)"))?;
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|e| format!("'{text}': {s}: {e}"))
    };
    Ok((parse(low)?, parse(high)?))
}

fn exe() -> Result<PathBuf, BenchError> {
    Ok(std::env::current_exe()?)
}

impl LoadArgs {
    fn options(&self) -> Result<BenchOptions, BenchError> {
        let mut o = BenchOptions::new(self.evaluators, self.tasks, exe()?);
        o.jobs = self.jobs;
        o.examples_per_task = self.examples_per_task;
        o.client_processes = self.client_processes;
        o.restart = self.restart;
        o.heap_bytes = Some(heap_bytes);
        Ok(o)
    }
}

/// The process's allocator, counting what its heap holds (the soak reports
/// it next to the RSS, which also holds what the allocator kept of freed
/// memory).
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

fn heap_bytes() -> usize {
    ALLOCATOR.allocated()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let done = match cli.command {
        Command::Clients => bench::client_process(),
        command => tokio::runtime::Runtime::new()
            .map_err(BenchError::from)
            .and_then(|runtime| runtime.block_on(serve(command))),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("premem-coordinator-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(command: Command) -> Result<(), BenchError> {
    match command {
        Command::Load(args) => {
            let stats = bench::run(args.options()?).await?;
            println!("{}\n{stats}", RunStats::header());
            println!("{}", stats.time_line());
            println!("{}", bench::exactly_once_line(&stats));
            Ok(())
        }
        Command::Table { client_processes } => table(client_processes).await,
        Command::Soak(args) => soak(args).await,
        Command::Clients => unreachable!("handled in main"),
    }
}

async fn table(client_processes: usize) -> Result<(), BenchError> {
    // (evaluators, tasks, jobs, restart, simulated work per task in ms);
    // 1 evaluator at 4,096 tasks runs before and after the 100k-task run,
    // so that the ratio of the two sizes does not take the box's drift
    // for the coordinator's.
    let rows = [
        (1, 4096, 1, false, (0, 0)),
        (1, 8192, 1, false, (0, 0)),
        (1, 100_000, 48, true, (0, 0)),
        (1, 4096, 1, false, (0, 0)),
        (256, 4096, 1, false, (0, 0)),
        (1000, 8192, 1, false, (0, 0)),
        (1000, 100_000, 48, false, (0, 0)),
        (1000, 8192, 1, false, (1000, 3000)),
    ];
    println!(
        "clients in {client_processes} other process(es); 4 examples per task; lease TTL 1 h; latencies in ms"
    );
    println!("{}", RunStats::header());
    let mut all = vec![];
    for (evaluators, tasks, jobs, restart, work_ms) in rows {
        let mut options = BenchOptions::new(evaluators, tasks, exe()?);
        options.jobs = jobs;
        options.client_processes = client_processes.min(evaluators);
        options.restart = restart;
        options.behaviour.work_ms = work_ms;
        let stats = bench::run(options).await?;
        println!("{stats}");
        all.push(stats);
    }
    println!("{}", one_evaluator_ratio(&all));
    for s in &all {
        println!("{}", s.time_line());
        println!("{}", bench::exactly_once_line(s));
    }
    Ok(())
}

/// The 1-evaluator rate of the 100k-task run over the mean of the 4,096-task
/// runs around it.
fn one_evaluator_ratio(all: &[RunStats]) -> String {
    let rates = |tasks: std::ops::RangeInclusive<usize>| -> Vec<f64> {
        all.iter()
            .filter(|s| s.evaluators == 1 && tasks.contains(&s.tasks))
            .map(|s| s.tasks_per_second)
            .collect()
    };
    let (small, big) = (rates(4096..=4096), rates(100_000..=usize::MAX));
    let mean = small.iter().sum::<f64>() / small.len() as f64;
    let small_text: Vec<String> = small.iter().map(|r| format!("{r:.0}")).collect();
    format!(
        "1 evaluator: tasks/s at 100,000 tasks / at 4,096 tasks (mean of {}) = {:.3}",
        small_text.join(" and "),
        big.first().copied().unwrap_or(f64::NAN) / mean
    )
}

async fn soak(args: SoakArgs) -> Result<(), BenchError> {
    let mut options = args.load.options()?;
    options.lease_ttl = Duration::from_secs_f64(args.lease_ttl_s);
    options.memory_every = Duration::from_secs_f64(args.memory_every_s);
    options.behaviour = Behaviour {
        work_ms: args.work_ms,
        deaths: args.deaths,
        expiries: args.expiries,
        soak_seconds: Some(args.minutes * 60.0),
        seed: args.seed,
    };
    let stats = bench::run(options).await?;
    println!("{}\n{stats}", RunStats::header());
    println!("{}", stats.time_line());
    println!(
        "renewals {} (p99 {:.3} ms), deaths {}, late completions {}",
        stats.renewals, stats.renew_p99_ms, stats.deaths, stats.late
    );
    println!("{}", bench::exactly_once_line(&stats));
    println!("{}", stats.memory_table(args.warm_up_s));
    Ok(())
}
