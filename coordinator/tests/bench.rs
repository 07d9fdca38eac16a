//! A load benchmark of the coordinator's lease path: a small run as a
//! test, and the big one on demand:
//!
//! ```text
//! cargo test --release -p premem-coordinator --test bench -- --ignored --nocapture
//! ```
//!
//! [`run`] starts a coordinator over a temporary state directory and run,
//! submits a job whose published checkpoints make about
//! [`BenchOptions::tasks`] evaluation tasks, and lets simulated evaluators
//! (tokio tasks, each with its own client connection) loop
//! `LeaseTask` → write a placeholder result file → `CompleteTask` until no
//! task is left. It does that twice on fresh coordinators: once with one
//! evaluator (the reference) and once with [`BenchOptions::evaluators`], and
//! reports completed tasks per second and the client-side latency of every
//! `LeaseTask` call for both, with their ratios.
//!
//! Every run checks that each task was accepted exactly once (no duplicate
//! or expired completion: the lease TTL is an hour), that the job ends DONE
//! and that its P-M accuracy equals an independent computation.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use premem_core::JobSpec;
use premem_proto::v1::{self, Completion, JobState};
use premem_proto::{Client, ClientConfig};

use premem_coordinator::Timing;
use premem_coordinator::server::{ServeError, ServeOptions, start};

const TOKEN: &str = "bench-token";
const JOB: &str = "bench";
/// The memorization threshold (perplexity scale) of the benchmark job.
const THRESHOLD: f64 = 1.5;
/// At most this many checkpoints share the tasks.
const MAX_CHECKPOINTS: usize = 4;

/// The workload.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Concurrent simulated evaluators of the measured run.
    pub evaluators: usize,
    /// Evaluation tasks in all (rounded up to a multiple of the checkpoints).
    pub tasks: usize,
    /// Examples per task (`eval.task_examples`): rows per completion.
    pub examples_per_task: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            evaluators: 8,
            tasks: 64,
            examples_per_task: 4,
        }
    }
}

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
    /// A check of the outcome failed: the coordinator misbehaved.
    #[error("check failed: {0}")]
    Check(String),
}

/// One workload run against a fresh coordinator.
#[derive(Clone, Debug)]
pub struct RunStats {
    pub evaluators: usize,
    pub tasks: usize,
    /// From the start of the first lease to the last completion.
    pub seconds: f64,
    pub tasks_per_second: f64,
    /// Every `LeaseTask` call, the final empty ones included.
    pub lease_calls: usize,
    pub lease_p50_ms: f64,
    pub lease_p99_ms: f64,
    pub lease_max_ms: f64,
    pub complete_p50_ms: f64,
    pub complete_p99_ms: f64,
    pub accepted: usize,
    pub duplicate: usize,
    pub expired: usize,
    /// The job's P-M accuracy at its final checkpoint, as GetStatus reports it.
    pub pm_accuracy: f64,
}

/// Both runs and their comparison.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub options: BenchOptions,
    pub checkpoints: usize,
    /// The single-evaluator reference.
    pub reference: RunStats,
    /// With `options.evaluators` evaluators.
    pub load: RunStats,
}

impl BenchReport {
    /// Throughput with N evaluators over throughput with 1.
    pub fn throughput_ratio(&self) -> f64 {
        self.load.tasks_per_second / self.reference.tasks_per_second
    }

    pub fn lease_p50_ratio(&self) -> f64 {
        self.load.lease_p50_ms / self.reference.lease_p50_ms
    }

    pub fn lease_p99_ratio(&self) -> f64 {
        self.load.lease_p99_ms / self.reference.lease_p99_ms
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "coordinator load benchmark: {} tasks ({} checkpoints × {} tasks of {} examples), lease TTL 1 h",
            self.load.tasks,
            self.checkpoints,
            self.load.tasks / self.checkpoints,
            o.examples_per_task
        )?;
        writeln!(
            f,
            "{:<10} {:>10} {:>10} {:>12} {:>13} {:>13} {:>13} {:>15} {:>15} {:>8}",
            "run",
            "evaluators",
            "tasks/s",
            "lease calls",
            "lease p50 ms",
            "lease p99 ms",
            "lease max ms",
            "complete p50 ms",
            "complete p99 ms",
            "wall s"
        )?;
        for (name, s) in [("reference", &self.reference), ("load", &self.load)] {
            writeln!(
                f,
                "{:<10} {:>10} {:>10.1} {:>12} {:>13.3} {:>13.3} {:>13.3} {:>15.3} {:>15.3} {:>8.2}",
                name,
                s.evaluators,
                s.tasks_per_second,
                s.lease_calls,
                s.lease_p50_ms,
                s.lease_p99_ms,
                s.lease_max_ms,
                s.complete_p50_ms,
                s.complete_p99_ms,
                s.seconds
            )?;
        }
        writeln!(
            f,
            "ratio {} vs 1 evaluator: tasks/s ×{:.2}, lease p50 ×{:.2}, lease p99 ×{:.2}",
            self.load.evaluators,
            self.throughput_ratio(),
            self.lease_p50_ratio(),
            self.lease_p99_ratio()
        )?;
        write!(
            f,
            "exactly once: {} accepted of {} tasks, {} duplicate, {} expired (reference: {} accepted); P-M accuracy {:.6} (both runs)",
            self.load.accepted,
            self.load.tasks,
            self.load.duplicate,
            self.load.expired,
            self.reference.accepted,
            self.load.pm_accuracy
        )
    }
}

/// Runs the workload with 1 evaluator, then with `options.evaluators`.
pub async fn run(options: BenchOptions) -> Result<BenchReport, BenchError> {
    if options.evaluators == 0 || options.tasks == 0 || options.examples_per_task == 0 {
        return Err(BenchError::Options(
            "evaluators, tasks and examples_per_task must be positive".into(),
        ));
    }
    let workload = Workload::new(&options);
    let reference = workload.run(1).await?;
    let load = workload.run(options.evaluators).await?;
    if (reference.pm_accuracy - load.pm_accuracy).abs() > 1e-12 {
        return Err(BenchError::Check(format!(
            "P-M accuracy depends on the number of evaluators: {} with 1, {} with {}",
            reference.pm_accuracy, load.pm_accuracy, options.evaluators
        )));
    }
    Ok(BenchReport {
        checkpoints: workload.checkpoints,
        options,
        reference,
        load,
    })
}

/// The job the benchmark evaluates: `checkpoints` checkpoints, each with
/// `tasks_per_checkpoint` train tasks of `examples_per_task` examples.
struct Workload {
    checkpoints: usize,
    tasks_per_checkpoint: usize,
    examples_per_task: usize,
}

impl Workload {
    fn new(options: &BenchOptions) -> Workload {
        let checkpoints = options.tasks.min(MAX_CHECKPOINTS);
        Workload {
            checkpoints,
            tasks_per_checkpoint: options.tasks.div_ceil(checkpoints),
            examples_per_task: options.examples_per_task,
        }
    }

    fn tasks(&self) -> usize {
        self.checkpoints * self.tasks_per_checkpoint
    }

    fn train_examples(&self) -> usize {
        self.tasks_per_checkpoint * self.examples_per_task
    }

    /// One optimizer step per 2 examples and one epoch per checkpoint: the
    /// checkpoints are the ends of the epochs, the last one the final step.
    fn steps_per_epoch(&self) -> u64 {
        self.train_examples().div_ceil(2) as u64
    }

    fn checkpoint_steps(&self) -> Vec<u64> {
        (1..=self.checkpoints as u64)
            .map(|k| k * self.steps_per_epoch())
            .collect()
    }

    fn write_dataset(&self, path: &Path) -> std::io::Result<()> {
        let mut text = String::new();
        for i in 0..self.train_examples() {
            let line = serde_json::json!({
                "id": example_id(i),
                "question": format!("What is {i} + 1?"),
                "answer": format!("{i} + 1 = {}\n#### {}", i + 1, i + 1),
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        std::fs::write(path, text)
    }

    fn spec_json(&self, dir: &Path, run: &Path) -> Result<String, BenchError> {
        let spec = serde_json::json!({
            "run": { "name": JOB, "output": run.display().to_string() },
            "model": { "config": "tiny.json", "tokenizer": "tokenizer.json" },
            "data": {
                "train": { "path": dir.join("train.jsonl").display().to_string(), "format": "gsm8k" }
            },
            "train": {
                "lr": 1e-4,
                "schedule": { "type": "constant" },
                "batch_size": 2,
                "micro_batch_size": 1,
                "epochs": self.checkpoints,
            },
            "eval": {
                "task_examples": self.examples_per_task,
                "threshold": { "perplexity": THRESHOLD },
            },
            "cluster": { "trainers": 2 },
        });
        let spec: JobSpec = serde_json::from_value(spec)
            .map_err(|e| BenchError::Check(format!("the benchmark's job spec: {e}")))?;
        spec.validate()
            .map_err(|e| BenchError::Check(format!("the benchmark's job spec: {e}")))?;
        Ok(serde_json::to_string(&spec).expect("a spec serialises"))
    }

    /// The expected final P-M accuracy, computed independently of
    /// `premem_core::pm`: `PM_m(i) = min(max_{m' ≤ m} masked_{m'}(i), acc_m(i))`
    /// with `masked = acc · [ppl ≥ p]`, averaged over the examples.
    fn expected_pm(&self) -> f64 {
        let steps = self.checkpoint_steps();
        let n = self.train_examples();
        let mut sum = 0.0;
        for i in 0..n {
            let mut best: f64 = 0.0;
            let mut pm = 0.0;
            for &step in &steps {
                let (accuracy, perplexity) = observation(i, step);
                let masked = if perplexity >= THRESHOLD {
                    accuracy
                } else {
                    0.0
                };
                best = best.max(masked);
                pm = best.min(accuracy);
            }
            sum += pm;
        }
        sum / n as f64
    }

    async fn run(&self, evaluators: usize) -> Result<RunStats, BenchError> {
        let dir = tempfile::tempdir()?;
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(&run_dir)?;
        self.write_dataset(&dir.path().join("train.jsonl"))?;
        // Publish every checkpoint up front: all tasks exist before the
        // evaluators start, so "no task" means "every task is taken".
        for step in self.checkpoint_steps() {
            let published = run_dir.join(format!("checkpoints/step-{step:08}"));
            std::fs::create_dir_all(&published)?;
            std::fs::write(published.join("MANIFEST.json"), b"{}")?;
        }
        let mut serve = ServeOptions::new(
            "127.0.0.1:0",
            dir.path().join("state").display().to_string(),
            TOKEN,
        );
        serve.timing = Timing {
            lease_ttl: Duration::from_secs(3600),
            rank_ttl: Duration::from_secs(3600),
        };
        serve.scan_interval = Duration::from_millis(100);
        let running = start(serve).await?;
        let config = ClientConfig::new(format!("http://{}", running.address), TOKEN);
        let outcome = self.drive(&config, dir.path(), &run_dir, evaluators).await;
        running.stop().await?;
        outcome
    }

    async fn drive(
        &self,
        config: &ClientConfig,
        dir: &Path,
        run_dir: &Path,
        evaluators: usize,
    ) -> Result<RunStats, BenchError> {
        let tasks = self.tasks();
        let mut client = premem_proto::client(config)?;
        let spec_json = self.spec_json(dir, run_dir)?;
        client
            .submit_job(v1::SubmitJobRequest { spec_json })
            .await?;
        // Wait for the scanner to turn the checkpoints into tasks.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = status(&mut client).await?;
            if status.tasks_pending as usize == tasks {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Check(format!(
                    "{} of {tasks} tasks pending after 60 s",
                    status.tasks_pending
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Every evaluator connects (one GetStatus) before the clock starts.
        let barrier = Arc::new(tokio::sync::Barrier::new(evaluators + 1));
        let mut handles = Vec::with_capacity(evaluators);
        for e in 0..evaluators {
            let client = premem_proto::client(config)?;
            let evaluator = Evaluator {
                name: format!("bench-evaluator-{e}"),
                client,
                run_dir: run_dir.to_path_buf(),
            };
            let barrier = barrier.clone();
            handles.push(tokio::spawn(evaluator.work(barrier)));
        }
        barrier.wait().await;
        let started = Instant::now();
        let mut tallies = Vec::with_capacity(evaluators);
        for handle in handles {
            tallies.push(
                handle
                    .await
                    .map_err(|e| BenchError::Check(format!("an evaluator panicked: {e}")))??,
            );
        }
        let seconds = started.elapsed().as_secs_f64();

        let mut lease = vec![];
        let mut complete = vec![];
        let (mut accepted, mut duplicate, mut expired) = (0, 0, 0);
        let mut accepted_ids = BTreeSet::new();
        for t in tallies {
            lease.extend(t.lease);
            complete.extend(t.complete);
            accepted += t.accepted.len();
            duplicate += t.duplicate;
            expired += t.expired;
            for id in t.accepted {
                if !accepted_ids.insert(id.clone()) {
                    return Err(BenchError::Check(format!("task {id} was accepted twice")));
                }
            }
        }
        if accepted != tasks || accepted_ids.len() != tasks || duplicate != 0 || expired != 0 {
            return Err(BenchError::Check(format!(
                "{evaluators} evaluators: {accepted} accepted ({} distinct), {duplicate} duplicate, {expired} expired; want exactly {tasks} accepted",
                accepted_ids.len()
            )));
        }
        let status = status(&mut client).await?;
        if status.state != JobState::Done as i32 || status.tasks_done as usize != tasks {
            return Err(BenchError::Check(format!(
                "after every task: state {:?}, {} of {tasks} tasks done ({})",
                JobState::try_from(status.state),
                status.tasks_done,
                status.message
            )));
        }
        let pm_accuracy = status
            .checkpoints
            .last()
            .and_then(|c| c.pm_accuracy)
            .ok_or_else(|| BenchError::Check("no P-M accuracy at the final checkpoint".into()))?;
        let expected = self.expected_pm();
        if (pm_accuracy - expected).abs() > 1e-9 {
            return Err(BenchError::Check(format!(
                "P-M accuracy {pm_accuracy}, expected {expected}"
            )));
        }
        lease.sort_unstable();
        complete.sort_unstable();
        Ok(RunStats {
            evaluators,
            tasks,
            seconds,
            tasks_per_second: accepted as f64 / seconds,
            lease_calls: lease.len(),
            lease_p50_ms: percentile_ms(&lease, 0.50),
            lease_p99_ms: percentile_ms(&lease, 0.99),
            lease_max_ms: percentile_ms(&lease, 1.0),
            complete_p50_ms: percentile_ms(&complete, 0.50),
            complete_p99_ms: percentile_ms(&complete, 0.99),
            accepted,
            duplicate,
            expired,
            pm_accuracy,
        })
    }
}

async fn status(client: &mut Client) -> Result<v1::JobStatus, BenchError> {
    Ok(client
        .get_status(v1::GetStatusRequest { job: JOB.into() })
        .await?
        .into_inner())
}

fn example_id(i: usize) -> String {
    format!("ex{i:07}")
}

fn example_index(id: &str) -> Option<usize> {
    id.strip_prefix("ex")?.parse().ok()
}

/// The simulated evaluation of example `i` at checkpoint `step`: accuracy in
/// {0, ¼, ½, ¾, 1}, perplexity in [1, 2.5], about a third memorized.
fn observation(i: usize, step: u64) -> (f64, f64) {
    let step = step as usize;
    let accuracy = ((i * 7 + step * 3) % 5) as f64 / 4.0;
    let perplexity = 1.0 + ((i * 11 + step * 5) % 7) as f64 / 4.0;
    (accuracy, perplexity)
}

/// The result file of `task` holding `rows` (accuracies in quarters: four
/// samples), as an evaluator writes it.
fn result_file(task: &v1::Task, rows: &[v1::ExampleRow]) -> Vec<u8> {
    let results: Vec<premem_core::results::ExampleResult> = rows
        .iter()
        .map(|r| premem_core::results::ExampleResult {
            id: r.example_id.clone(),
            split: task.split.clone(),
            checkpoint_step: task.step,
            preamble: String::new(),
            n_correct: (r.accuracy * 4.0).round() as u32,
            samples: 4,
            accuracy: r.accuracy,
            target_nll: r.perplexity.ln(),
            target_tokens: 1,
            target_perplexity: r.perplexity,
            mean_sample_tokens: 1.0,
            frac_equal_target: 0.0,
            sample_confidences: vec![],
            sample_texts: vec![],
            distinct_samples: None,
        })
        .collect();
    premem_core::results::to_parquet(&results).expect("rows serialise")
}

/// The nearest-rank percentile of sorted durations, in milliseconds.
fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

struct Evaluator {
    name: String,
    client: Client,
    run_dir: PathBuf,
}

#[derive(Default)]
struct Tally {
    lease: Vec<Duration>,
    complete: Vec<Duration>,
    accepted: Vec<String>,
    duplicate: usize,
    expired: usize,
}

impl Evaluator {
    async fn work(mut self, start: Arc<tokio::sync::Barrier>) -> Result<Tally, BenchError> {
        let warm_up = status(&mut self.client).await;
        start.wait().await;
        warm_up?;
        let mut tally = Tally::default();
        loop {
            let asked = Instant::now();
            let reply = self
                .client
                .lease_task(v1::LeaseTaskRequest {
                    evaluator: self.name.clone(),
                })
                .await?
                .into_inner();
            tally.lease.push(asked.elapsed());
            // Every task exists from the start and no lease expires: no
            // task now means none is left for this evaluator.
            let Some(task) = reply.task else {
                return Ok(tally);
            };
            let file = self.run_dir.join(&task.result_file);
            if let Some(parent) = file.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            let rows = task
                .example_ids
                .iter()
                .map(|id| {
                    let i = example_index(id).ok_or_else(|| {
                        BenchError::Check(format!(
                            "task {} has unknown example '{id}'",
                            task.task_id
                        ))
                    })?;
                    let (accuracy, perplexity) = observation(i, task.step);
                    Ok(v1::ExampleRow {
                        example_id: id.clone(),
                        accuracy,
                        perplexity,
                    })
                })
                .collect::<Result<Vec<_>, BenchError>>()?;
            // The coordinator takes a task's rows from its result file.
            tokio::fs::write(&file, result_file(&task, &rows)).await?;
            let asked = Instant::now();
            let completion = self
                .client
                .complete_task(v1::CompleteTaskRequest {
                    lease_id: task.lease_id,
                    task_id: task.task_id.clone(),
                    rows,
                })
                .await?
                .into_inner()
                .completion();
            tally.complete.push(asked.elapsed());
            match completion {
                Completion::Accepted => tally.accepted.push(task.task_id),
                Completion::Duplicate => tally.duplicate += 1,
                Completion::Expired => tally.expired += 1,
                Completion::Unspecified => {
                    return Err(BenchError::Check(format!(
                        "task {}: completion UNSPECIFIED",
                        task.task_id
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_splits_tasks_over_checkpoints() {
        let w = Workload::new(&BenchOptions {
            evaluators: 3,
            tasks: 10,
            examples_per_task: 3,
        });
        assert_eq!(
            (w.checkpoints, w.tasks_per_checkpoint, w.tasks()),
            (4, 3, 12)
        );
        assert_eq!(w.train_examples(), 9);
        assert_eq!(w.checkpoint_steps(), vec![5, 10, 15, 20]);
        let w = Workload::new(&BenchOptions {
            evaluators: 1,
            tasks: 2,
            examples_per_task: 1,
        });
        assert_eq!(w.checkpoint_steps(), vec![1, 2]);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&d, 0.5), 50.0);
        assert_eq!(percentile_ms(&d, 0.99), 99.0);
        assert_eq!(percentile_ms(&d, 1.0), 100.0);
        assert_eq!(percentile_ms(&d[..1], 0.99), 1.0);
    }

    #[test]
    fn observations_are_valid_rows() {
        for i in 0..50 {
            for step in [1, 7, 12] {
                let (a, p) = observation(i, step);
                assert!((0.0..=1.0).contains(&a) && (1.0..=2.5).contains(&p));
            }
        }
    }
}

// ---- the benchmark as tests ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_evaluators_complete_64_tasks_exactly_once() {
    let report = run(BenchOptions {
        evaluators: 8,
        tasks: 64,
        examples_per_task: 4,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    println!("{report}");
    assert_eq!((report.reference.accepted, report.load.accepted), (64, 64));
    assert_eq!(report.load.duplicate + report.load.expired, 0);
    // One empty lease per evaluator ends its loop.
    assert_eq!(report.reference.lease_calls, 64 + 1);
    assert_eq!(report.load.lease_calls, 64 + 8);
}

/// 256 evaluators, 4096 tasks: build with `--release` (see the module docs).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "load benchmark: run with --release -- --ignored --nocapture"]
async fn bench_256_evaluators_4096_tasks() {
    let report = run(BenchOptions {
        evaluators: 256,
        tasks: 4096,
        examples_per_task: 4,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    println!("{report}");
    assert_eq!(report.load.accepted, 4096);
}
