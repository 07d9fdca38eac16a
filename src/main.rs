//! The `premem` command line: argument parsing and dispatch. Each command
//! lives in its own module under `cmd/`; what several share (talking to a
//! coordinator, a local cluster of child processes, progress displays,
//! devices) has a module of its own beside them.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use premem_model::runtime;

mod bench_train;
mod client;
mod cmd;
mod device;
mod fit;
mod host_ranks;
mod local_cluster;
mod local_tokens;
mod panics;
mod process;
mod watch;

/// premem: distributed LLM finetuning that measures pre-memorization train
/// accuracy while it trains.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as human-readable text or as JSON objects (one per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "PREMEM_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Report what this binary finds: libtorch, CUDA devices, NCCL, and why
    /// anything is missing.
    Doctor,
    /// Generate text from a Hugging Face model directory (config.json,
    /// safetensors weights, tokenizer.json).
    Generate(cmd::generate::GenerateArgs),
    /// Write models in the Hugging Face layout.
    #[command(subcommand)]
    Model(cmd::model::ModelCommand),
    /// Make datasets.
    #[command(subcommand)]
    Data(cmd::data::DataCommand),
    /// Evaluate a checkpoint on a dataset split: K samples per example checked
    /// against the answer, and the perplexity of the target trace. Writes one
    /// row per example (and preamble) to Parquet and prints a summary.
    Eval(cmd::eval::EvalArgs),
    /// Evaluate every published checkpoint of a run (train and test splits)
    /// into the run's result files, skipping those already evaluated.
    EvalRun(cmd::eval_run::EvalRunArgs),
    /// Report P-M accuracy, its calibration, the baselines and the
    /// robustness view of a run or a sweep: report.md, report.html, PNG and
    /// SVG charts, Parquet tables.
    Report(cmd::report::ReportArgs),
    /// Measure throughput (see benches/README.md).
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// Print the GPU memory a job needs per trainer rank and per evaluator
    /// (weights, gradients, fp32 master, moments, activations, logits, KV
    /// cache) under each sharding, the ZeRO paper's figures beside them, and
    /// the sharding `auto` picks; exits non-zero when the job does not fit.
    Plan(cmd::plan::PlanArgs),
    /// Finetune a model as a job spec (TOML) says; checkpoints and metrics go
    /// to the spec's run.output. SIGTERM or Ctrl-C checkpoints and stops.
    Train(cmd::train::TrainArgs),
    /// Run the coordinator: job state, trainer rendezvous, evaluation leases,
    /// live P-M accuracy, Prometheus metrics.
    Coordinator(cmd::coordinator::CoordinatorArgs),
    /// Run one trainer rank of a submitted job under a coordinator.
    Trainer(cmd::trainer::TrainerArgs),
    /// Run an evaluator worker: lease tasks from the coordinator, evaluate
    /// checkpoints, write result files.
    Evaluator(cmd::evaluator::EvaluatorArgs),
    /// Submit a job spec to a coordinator.
    Submit(cmd::jobs::SubmitArgs),
    /// Show a job's state, progress and P-M accuracy so far.
    Status(cmd::jobs::JobArgs),
    /// Cancel a job: training stops at its next heartbeat, no more tasks go out.
    Cancel(cmd::jobs::JobArgs),
    /// Run a job end to end on this machine: a coordinator, the spec's
    /// trainer ranks and evaluators as child processes on loopback, a live
    /// progress display, and the report at the end. Ctrl-C stops it (the
    /// trainers checkpoint); the same command again resumes the job.
    Run(cmd::run::RunArgs),
    /// Run a sweep (a grid and/or list of runs over one base job): every run
    /// submitted to one coordinator, packed onto a pool of trainers, its
    /// checkpoints evaluated by one evaluator fleet in the order they appear,
    /// then one report over all runs. Running it again resumes: finished
    /// runs are skipped, unfinished ones continue from their checkpoints.
    Sweep(cmd::sweep::SweepArgs),
    /// Curate training data (paper Algorithm 1): n iterations per strategy
    /// (pm, iid, ifd, heuristic), each a full run on D + D' through the
    /// coordinator; new examples from a candidate pool or a generator
    /// command. Writes test accuracy vs training examples (table, plot) and
    /// the examples chosen each iteration; resumes from its state file.
    Curate(cmd::curate::CurateArgs),
    /// Summarize the curations of several seeds: test accuracy against
    /// training examples with 95 % intervals (table, plot), and each
    /// strategy's sample efficiency over iid — how many examples iid needs
    /// to reach its accuracy — with a 95 % interval over the seeds.
    CurationSummary(cmd::curation_summary::CurationSummaryArgs),
}

impl Command {
    /// The long-running roles whose product is not their standard output:
    /// a closed stdout must not stop them (they log to stderr).
    fn serves(&self) -> bool {
        matches!(
            self,
            Command::Coordinator(_)
                | Command::Trainer(_)
                | Command::Evaluator(_)
                | Command::Train(_)
        )
    }
}

/// Ends the process as `head`'s other writers end, by SIGPIPE, when its
/// standard output is closed (`premem status | head -1`), instead of
/// panicking in `println!` (Rust starts with SIGPIPE ignored). Sockets
/// are unaffected: the standard library writes them with MSG_NOSIGNAL.
fn quiet_on_a_closed_pipe() {
    // SAFETY: restores the default action of one signal, process-wide; no
    // handler of premem or its libraries is installed for it.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    panics::install();
    // Before any tensor work: registers CUDA when libtorch_cuda.so loads.
    runtime::init();
    premem_core::spec::provenance::set_git_revision(env!("PREMEM_GIT_REVISION"));
    let cli = Cli::parse();
    if !cli.command.serves() {
        quiet_on_a_closed_pipe();
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let result = match cli.command {
        Command::Doctor => cmd::doctor::run(),
        Command::Generate(args) => cmd::generate::run(args),
        Command::Model(command) => cmd::model::run(command),
        Command::Data(command) => cmd::data::run(command),
        Command::Plan(args) => cmd::plan::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::Bench(command) => cmd::bench::run(command),
        Command::Eval(args) => cmd::eval::run(args),
        Command::EvalRun(args) => cmd::eval_run::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::Coordinator(args) => cmd::coordinator::run(args),
        Command::Trainer(args) => cmd::trainer::run(args),
        Command::Evaluator(args) => cmd::evaluator::run(args),
        Command::Submit(args) => cmd::jobs::submit(args),
        Command::Status(args) => cmd::jobs::status(args),
        Command::Cancel(args) => cmd::jobs::cancel(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Sweep(args) => cmd::sweep::run(args),
        Command::Curate(args) => cmd::curate::run(args),
        Command::CurationSummary(args) => cmd::curation_summary::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: {}",
                premem_core::error_text::concise(&format!("{e:#}"))
            );
            ExitCode::FAILURE
        }
    }
}
