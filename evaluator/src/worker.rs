//! The evaluator worker of a cluster: leases evaluation tasks from the
//! coordinator (`LeaseTask`), evaluates each on this thread while the lease
//! is renewed in the background (`RenewLease`), writes the task's rows to its
//! result file in the run's store, and reports the rows P-M accuracy needs
//! (`CompleteTask`), or the error (`FailTask`).
//!
//! A task's rows depend only on the run (its spec's `[eval]` sampling
//! settings and batch size, read from `run.json`), the checkpoint and the
//! task's examples, in order:
//! sampling seeds derive from the run seed, the checkpoint step, the example
//! id and the sample index, so neither the worker nor how many there are
//! changes a result.
//!
//! The worker outlives the coordinator: an unreachable coordinator is
//! retried with backoff. A refused token ends it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::BlockingRetryable;
use premem_core::data::results::{ResultsError, from_parquet, to_parquet};
use premem_core::retry::{Retry, RetryParams};
use premem_core::spec::record::{RunRecord, read_run_record};
use premem_core::{BlockingStore, Example, Split, Store};
use premem_proto::v1::{
    CompleteTaskRequest, Completion, ExampleRow, FailTaskRequest, LeaseTaskReply, LeaseTaskRequest,
    RenewLeaseRequest, Task,
};
use premem_proto::{Client, ClientConfig};
use tch::{Device, Kind};
use tonic::{Code, Status};

use crate::cache::CheckpointCache;
use crate::checkpoint::LoadedModel;
use crate::error::{EvalError, Result};
use crate::evaluate::{EvalSettings, Evaluator, ExampleResult};
use crate::split::{answer_style, split_examples};

/// The model a worker holds between tasks (reused while tasks name the same
/// checkpoint), and the examples of the split it evaluated last.
#[derive(Default)]
pub struct ModelSlot {
    model: Option<Loaded>,
    examples: Option<SplitExamples>,
}

struct Loaded {
    /// The checkpoint's cache directory (it names the checkpoint and its
    /// publication), device and dtype.
    dir: PathBuf,
    device: Device,
    kind: Kind,
    loaded: LoadedModel,
}

struct SplitExamples {
    run: String,
    split: Split,
    /// The run record they were selected with.
    training_hash: String,
    inputs_digest: String,
    examples: Vec<Example>,
}

impl ModelSlot {
    pub fn new() -> ModelSlot {
        ModelSlot::default()
    }

    /// The directory of the checkpoint whose model is loaded.
    pub fn loaded(&self) -> Option<&Path> {
        self.model.as_ref().map(|m| m.dir.as_path())
    }

    /// Frees the model (and its device memory) and the cached examples.
    pub fn clear(&mut self) {
        self.model = None;
        self.examples = None;
    }
}

/// The model of the checkpoint in `dir`, loaded unless the slot holds it.
fn load_model<'a>(
    slot: &'a mut Option<Loaded>,
    dir: &Path,
    device: Device,
    kind: Kind,
) -> Result<&'a LoadedModel> {
    let held = slot
        .as_ref()
        .is_some_and(|m| m.dir == dir && m.device == device && m.kind == kind);
    if !held {
        // Free the old model before the new one takes its memory.
        *slot = None;
        let started = Instant::now();
        let loaded = LoadedModel::load(dir, device, kind)?;
        tracing::info!(
            dir = %dir.display(),
            seconds = started.elapsed().as_secs_f64(),
            "loaded model"
        );
        *slot = Some(Loaded {
            dir: dir.to_path_buf(),
            device,
            kind,
            loaded,
        });
    }
    Ok(&slot.as_ref().expect("loaded").loaded)
}

/// The examples of a run's split, loaded unless the slot holds them.
fn load_examples<'a>(
    slot: &'a mut Option<SplitExamples>,
    run: &str,
    record: &RunRecord,
    split: Split,
) -> Result<&'a [Example]> {
    let held = slot.as_ref().is_some_and(|s| {
        s.run == run
            && s.split == split
            && s.training_hash == record.training_hash
            && s.inputs_digest == record.inputs_digest
    });
    if !held {
        *slot = None;
        *slot = Some(SplitExamples {
            run: run.to_string(),
            split,
            training_hash: record.training_hash.clone(),
            inputs_digest: record.inputs_digest.clone(),
            examples: split_examples(record, split)?,
        });
    }
    Ok(&slot.as_ref().expect("loaded").examples)
}

/// Evaluates one task: the examples `task.example_ids` (in that order) of
/// the run's split at checkpoint `task.step`, with the run's sampling
/// settings, seed and prompt template; writes the rows as Parquet to
/// `task.result_file` in the run's store and returns them.
/// `kind` `None`: the device's default dtype (fp32 on CPU, bf16 on CUDA).
pub fn evaluate_task(
    task: &Task,
    cache: &CheckpointCache,
    models: &mut ModelSlot,
    device: Device,
    kind: Option<Kind>,
) -> Result<Vec<ExampleResult>> {
    let fail = |message: String| task_error(task, message);
    let (split, result_file) = check_task(task)?;
    let run = BlockingStore::new(Store::open(&task.run)?)?;
    let store = run.store();
    let record = run.run(read_run_record(store))?;
    let style = answer_style(&record, split)?;
    let examples = load_examples(&mut models.examples, &task.run, &record, split)?;
    let selected = select_task_examples(task, examples, split)?;

    let checkpoint = cache.get(&task.run, task.step)?;
    let kind = kind.unwrap_or_else(|| premem_model::default_kind(device));
    let loaded = load_model(&mut models.model, &checkpoint.dir, device, kind)?;
    let evaluator = Evaluator {
        model: &loaded.model,
        tokenizer: &loaded.tokenizer,
        template: &record.spec.prompt,
        style,
        eos: loaded.eos,
        pad: loaded.pad(),
    };
    // The run's spec is the one source of the sampling settings.
    let eval = &record.spec.eval;
    let settings = EvalSettings {
        split,
        checkpoint_step: task.step,
        seed: record.spec.run.seed,
        sampling: eval.sampling.for_split(split),
        batch_size: eval.batch_size,
        max_length: loaded.model.config().max_position_embeddings as usize,
        loss_chunk_tokens: record.spec.train.loss_chunk_tokens,
        sampler: crate::SamplerKind::Continuous,
    };
    let rows = evaluator
        .evaluate(&selected, &settings, &|_| {})
        .map_err(|e| match e {
            EvalError::Invalid(message) => fail(message),
            e => e,
        })?;
    write_result_once(&run, result_file, rows)
}

/// Writes a task's rows where no result file is yet, and returns them. A
/// readable file of the same examples already there stands, and its rows
/// are returned: another evaluator, which got the task while this one
/// stalled past its lease, finished first (issue 39, item 12; a finished
/// result is never rewritten). An unreadable file is replaced.
fn write_result_once(
    run: &BlockingStore,
    result_file: &str,
    rows: Vec<ExampleResult>,
) -> Result<Vec<ExampleResult>> {
    let store = run.store();
    let location = store.url_of(result_file);
    let bytes = to_parquet(&rows).map_err(|message| ResultsError {
        location: location.clone(),
        message,
    })?;
    if run.run(store.put_if_absent(result_file, bytes.clone()))? {
        return Ok(rows);
    }
    let ids = |rows: &[ExampleResult]| -> Vec<(String, String)> {
        rows.iter()
            .map(|r| (r.id.clone(), r.preamble.clone()))
            .collect()
    };
    match from_parquet(run.run(store.get(result_file))?, &location) {
        Ok(existing) if ids(&existing) == ids(&rows) => {
            tracing::warn!(
                file = location,
                "the result was written by another evaluator first: it stands"
            );
            Ok(existing)
        }
        other => {
            let why = other
                .err()
                .map_or("other examples".into(), |e| e.to_string());
            tracing::warn!(
                file = location,
                why,
                "replacing a result file that is not this task's"
            );
            run.run(store.put(result_file, bytes))?;
            Ok(rows)
        }
    }
}

fn task_error(task: &Task, message: String) -> EvalError {
    EvalError::Task {
        task: task.task_id.clone(),
        run: task.run.clone(),
        message,
    }
}

/// The task's split and result file (relative to the run), once its fields
/// are checked: a known split, some examples, a result file inside the run,
/// and a run location that exists.
fn check_task(task: &Task) -> Result<(Split, &str)> {
    let fail = |message: String| Err(task_error(task, message));
    let Some(split) = Split::from_name(&task.split) else {
        return fail(format!("unknown split '{}' (train or test)", task.split));
    };
    if task.example_ids.is_empty() {
        return fail("no examples".into());
    }
    let result_file = task.result_file.trim_matches('/');
    if result_file.is_empty() || result_file.split('/').any(|part| part == "..") {
        return fail(format!(
            "result file '{}' is not a path inside the run",
            task.result_file
        ));
    }
    if !task.run.contains("://") && !Path::new(&task.run).is_dir() {
        return fail("no such directory (the run's output is not here)".into());
    }
    Ok((split, result_file))
}

/// The task's examples, in its order; an id the split lacks is an error.
fn select_task_examples<'a>(
    task: &Task,
    examples: &'a [Example],
    split: Split,
) -> Result<Vec<&'a Example>> {
    let by_id: std::collections::HashMap<&str, &Example> =
        examples.iter().map(|e| (e.id.as_str(), e)).collect();
    task.example_ids
        .iter()
        .map(|id| {
            by_id.get(id.as_str()).copied().ok_or_else(|| {
                task_error(
                    task,
                    format!(
                        "no example with id '{id}' in the run's {} split ({} examples)",
                        split.name(),
                        examples.len()
                    ),
                )
            })
        })
        .collect()
}

/// How a worker runs.
#[derive(Clone)]
pub struct WorkerOptions {
    pub coordinator: ClientConfig,
    /// Shown in the coordinator's logs and metrics (host and pid, say).
    pub name: String,
    pub cache_dir: PathBuf,
    /// Bound of the checkpoint cache.
    pub cache_bytes: u64,
    pub device: Device,
    /// `None`: the device's default dtype.
    pub kind: Option<Kind>,
    /// Set to stop: the task under way is finished and reported first.
    pub stop: Arc<AtomicBool>,
    /// Return after this long without a task (for tests).
    pub idle_exit: Option<Duration>,
    /// Fault injection for tests: hold each leased task this long (lease
    /// renewed) before evaluating it, so a test can kill the worker while
    /// it holds one.
    pub hold_task: Option<Duration>,
}

/// What a worker did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Tasks evaluated whose completion the coordinator accepted.
    pub tasks_completed: u64,
    /// Rows (without preamble) of those tasks.
    pub rows: u64,
    /// Tasks whose evaluation failed (reported with `FailTask`).
    pub tasks_failed: u64,
    /// Tasks evaluated whose completion was ignored: a duplicate, an
    /// expired lease, or never delivered.
    pub reports_ignored: u64,
}

/// Shortest and longest wait between `LeaseTask` calls with nothing to do.
const MIN_POLL: Duration = Duration::from_millis(50);
const MAX_POLL: Duration = Duration::from_secs(30);
/// Longest wait for one call.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a finished task's report is retried while the coordinator is
/// unreachable (after that the lease has long expired and the task is
/// leased again).
const REPORT_PATIENCE: Duration = Duration::from_secs(300);
/// ... and once the worker was told to stop.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// Runs a worker until `options.stop` is set (or it idled `idle_exit`).
/// Blocking: the calls to the coordinator run on a small runtime of its
/// own, the evaluation on the calling thread.
pub fn run_worker(options: &WorkerOptions) -> Result<WorkerSummary> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("premem-worker-rpc")
        .enable_all()
        .build()
        .map_err(|e| EvalError::Coordinator {
            address: options.coordinator.address.clone(),
            message: format!("cannot start a runtime: {e}"),
        })?;
    let client = {
        // The channel spawns its connection task on the runtime; the guard
        // must not outlive this block (the evaluation blocks on runtimes of
        // its own).
        let _guard = runtime.enter();
        premem_proto::client(&options.coordinator)?
    };
    let cache = CheckpointCache::new(&options.cache_dir, options.cache_bytes)?;
    tracing::info!(
        coordinator = options.coordinator.address,
        name = options.name,
        device = ?options.device,
        "evaluator worker started"
    );
    let mut worker = Worker {
        options,
        runtime,
        client,
        cache,
        slot: ModelSlot::new(),
        summary: WorkerSummary::default(),
    };
    let result = worker.run();
    let summary = worker.summary;
    tracing::info!(
        completed = summary.tasks_completed,
        rows = summary.rows,
        failed = summary.tasks_failed,
        ignored = summary.reports_ignored,
        "evaluator worker stopped"
    );
    result.map(|()| summary)
}

struct Worker<'a> {
    options: &'a WorkerOptions,
    runtime: tokio::runtime::Runtime,
    client: Client,
    cache: CheckpointCache,
    slot: ModelSlot,
    summary: WorkerSummary,
}

/// The answer to a call that was retried while the coordinator was unreachable.
enum Answer<T> {
    Reply(T),
    /// An error retrying cannot fix (other than a refused token).
    Refused(Status),
    /// Stopped, or out of patience, before an answer came.
    GaveUp,
}

/// When a call stops being retried.
#[derive(Clone, Copy)]
enum Patience {
    /// Until the deadline, or at once when the worker is told to stop.
    Lease(Option<Instant>),
    /// Until the deadline, or `STOP_PATIENCE` after the worker is told to stop.
    Report(Instant),
}

impl Worker<'_> {
    fn stopped(&self) -> bool {
        self.options.stop.load(Ordering::Relaxed)
    }

    fn run(&mut self) -> Result<()> {
        let mut last_work = Instant::now();
        loop {
            if self.stopped() {
                return Ok(());
            }
            let deadline = self.options.idle_exit.map(|d| last_work + d);
            if deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::info!("no work for {:?}: exiting", self.options.idle_exit.unwrap());
                return Ok(());
            }
            let request = LeaseTaskRequest {
                evaluator: self.options.name.clone(),
            };
            let reply: LeaseTaskReply =
                match self.call("LeaseTask", Patience::Lease(deadline), |mut c| {
                    let request = request.clone();
                    async move { c.lease_task(request).await }
                })? {
                    Answer::Reply(reply) => reply,
                    Answer::GaveUp => continue,
                    Answer::Refused(status) => {
                        return Err(EvalError::Coordinator {
                            address: self.options.coordinator.address.clone(),
                            message: format!(
                                "LeaseTask refused ({:?}): {}",
                                status.code(),
                                status.message()
                            ),
                        });
                    }
                };
            match reply.task {
                None => {
                    let mut wait =
                        Duration::from_millis(reply.retry_after_ms).clamp(MIN_POLL, MAX_POLL);
                    if let Some(deadline) = deadline {
                        wait = wait.min(deadline.saturating_duration_since(Instant::now()));
                    }
                    sleep_unless_stopped(wait, &self.options.stop);
                }
                Some(task) => {
                    self.run_task(task, reply.lease_ttl_ms)?;
                    last_work = Instant::now();
                }
            }
        }
    }

    /// Evaluates a leased task under a renewed lease and reports it.
    fn run_task(&mut self, task: Task, lease_ttl_ms: u64) -> Result<()> {
        tracing::info!(
            task = task.task_id,
            examples = task.example_ids.len(),
            step = task.step,
            split = task.split,
            "leased task"
        );
        let started = Instant::now();
        let (result, lost) = self.evaluate_leased(&task, lease_ttl_ms);
        let seconds = started.elapsed().as_secs_f64();
        let rows = match result {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(task = task.task_id, seconds, %error, "task failed");
                self.summary.tasks_failed += 1;
                return self.fail(&task, error.to_string());
            }
        };
        let rows: Vec<ExampleRow> = rows
            .iter()
            .filter(|r| r.preamble.is_empty())
            .map(|r| ExampleRow {
                example_id: r.id.clone(),
                accuracy: r.accuracy,
                perplexity: r.target_perplexity,
            })
            .collect();
        let accuracy = rows.iter().map(|r| r.accuracy).sum::<f64>() / rows.len().max(1) as f64;
        tracing::info!(
            task = task.task_id,
            examples = rows.len(),
            seconds,
            accuracy,
            "task done"
        );
        if lost {
            tracing::warn!(
                task = task.task_id,
                "the lease expired during the evaluation: reporting anyway (the coordinator may ignore it)"
            );
        }
        self.complete(&task, rows)
    }

    /// Evaluates `task` while its lease is renewed in the background; a
    /// panic is the task's failure, not the worker's. Also says whether the
    /// lease was lost meanwhile.
    fn evaluate_leased(
        &mut self,
        task: &Task,
        lease_ttl_ms: u64,
    ) -> (Result<Vec<ExampleResult>>, bool) {
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = self.runtime.spawn(renew(
            self.client.clone(),
            task.lease_id.clone(),
            task.task_id.clone(),
            renew_interval(lease_ttl_ms),
            lost.clone(),
        ));
        let options = self.options;
        if let Some(hold) = options.hold_task {
            std::thread::sleep(hold);
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            evaluate_task(
                task,
                &self.cache,
                &mut self.slot,
                options.device,
                options.kind,
            )
        }));
        renewer.abort();
        let result = outcome.unwrap_or_else(|panic| {
            // The model may be half-built: load it afresh next time.
            self.slot.clear();
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(EvalError::Invalid(format!(
                "the evaluation panicked: {what}"
            )))
        });
        (result, lost.load(Ordering::Relaxed))
    }

    /// Reports a task's rows (`CompleteTask`), retried while the coordinator
    /// is unreachable; rows it refuses as invalid fail the task.
    fn complete(&mut self, task: &Task, rows: Vec<ExampleRow>) -> Result<()> {
        let count = rows.len() as u64;
        let request = CompleteTaskRequest {
            lease_id: task.lease_id.clone(),
            task_id: task.task_id.clone(),
            rows,
        };
        let patience = Patience::Report(Instant::now() + REPORT_PATIENCE);
        let answer = self.call("CompleteTask", patience, |mut c| {
            let request = request.clone();
            async move { c.complete_task(request).await }
        })?;
        match answer {
            Answer::Reply(reply) => match reply.completion() {
                Completion::Accepted => {
                    self.summary.tasks_completed += 1;
                    self.summary.rows += count;
                }
                Completion::Duplicate => {
                    tracing::info!(task = task.task_id, "task was already completed");
                    self.summary.reports_ignored += 1;
                }
                Completion::Expired | Completion::Unspecified => {
                    tracing::warn!(
                        task = task.task_id,
                        "completion ignored: the lease had expired (the task is leased again)"
                    );
                    self.summary.reports_ignored += 1;
                }
            },
            Answer::Refused(status) => {
                tracing::warn!(
                    task = task.task_id,
                    code = ?status.code(),
                    message = status.message(),
                    "the coordinator refused the results"
                );
                self.summary.reports_ignored += 1;
                if status.code() == Code::InvalidArgument {
                    return self.fail(
                        task,
                        format!("the coordinator refused the results: {}", status.message()),
                    );
                }
            }
            Answer::GaveUp => {
                tracing::warn!(
                    task = task.task_id,
                    "could not report the task: its lease will expire and it will be leased again"
                );
                self.summary.reports_ignored += 1;
            }
        }
        Ok(())
    }

    /// Gives a task back with the reason it failed.
    fn fail(&self, task: &Task, message: String) -> Result<()> {
        let request = FailTaskRequest {
            lease_id: task.lease_id.clone(),
            task_id: task.task_id.clone(),
            message,
        };
        let patience = Patience::Report(Instant::now() + REPORT_PATIENCE);
        match self.call("FailTask", patience, |mut c| {
            let request = request.clone();
            async move { c.fail_task(request).await }
        })? {
            Answer::Reply(_) => {}
            Answer::Refused(status) => tracing::warn!(
                task = task.task_id,
                code = ?status.code(),
                message = status.message(),
                "the coordinator refused the failure report"
            ),
            Answer::GaveUp => tracing::warn!(
                task = task.task_id,
                "could not report the failure: the lease will expire and the task will be leased again"
            ),
        }
        Ok(())
    }

    /// One call to the coordinator, retried with backoff
    /// ([`RetryParams::COORDINATOR`]) while it is unreachable, for as long
    /// as `patience` allows; a refused token is an error.
    fn call<T, F, Fut>(&self, what: &str, patience: Patience, mut call: F) -> Result<Answer<T>>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let address = &self.options.coordinator.address;
        let retry = Retry::new(
            format!("{what} to coordinator {address}"),
            RetryParams::COORDINATOR,
        );
        let retry = match patience {
            Patience::Lease(deadline) => retry
                .until(deadline)
                .unless_stopped(&self.options.stop, Duration::ZERO),
            Patience::Report(deadline) => retry
                .until(Some(deadline))
                .unless_stopped(&self.options.stop, STOP_PATIENCE),
        };
        let attempt = || {
            if matches!(patience, Patience::Lease(_)) && self.stopped() {
                return Err(Status::cancelled("the worker was told to stop"));
            }
            let attempt = call(self.client.clone());
            match self
                .runtime
                .block_on(async { tokio::time::timeout(RPC_TIMEOUT, attempt).await })
            {
                Ok(reply) => reply,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer in {RPC_TIMEOUT:?}"
                ))),
            }
        };
        let stop = self.options.stop.clone();
        let answer = attempt
            .retry(retry.backoff())
            .sleep(move |wait| sleep_unless_stopped(wait, &stop))
            .when(|status| unreachable(status.code()))
            .notify(|status, wait| {
                retry.note(
                    &format_args!("{:?}: {}", status.code(), status.message()),
                    wait,
                )
            })
            .call();
        match answer {
            Ok(reply) => Ok(Answer::Reply(reply.into_inner())),
            Err(status) if status.code() == Code::Unauthenticated => Err(EvalError::TokenRefused {
                address: address.clone(),
                message: status.message().to_string(),
            }),
            Err(status) if unreachable(status.code()) => Ok(Answer::GaveUp),
            Err(status) => Ok(Answer::Refused(status)),
        }
    }
}

/// Sleeps `wait`, waking early when `stop` is set.
fn sleep_unless_stopped(wait: Duration, stop: &AtomicBool) {
    let until = Instant::now() + wait;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            break;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// Whether a call that failed with `code` may succeed when retried: the
/// coordinator is unreachable, restarting or overloaded.
fn unreachable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
    )
}

/// A third of the lease's time to live (10 s when the coordinator gave none).
fn renew_interval(lease_ttl_ms: u64) -> Duration {
    match lease_ttl_ms {
        0 => Duration::from_secs(10),
        ttl => Duration::from_millis(ttl / 3).max(Duration::from_millis(10)),
    }
}

/// Renews a lease until aborted, or until the coordinator says it expired
/// (then `lost` is set: the evaluation goes on, and its completion will be
/// answered EXPIRED).
async fn renew(
    mut client: Client,
    lease_id: String,
    task_id: String,
    mut every: Duration,
    lost: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(every).await;
        let request = RenewLeaseRequest {
            lease_id: lease_id.clone(),
            task_id: task_id.clone(),
        };
        match tokio::time::timeout(RPC_TIMEOUT, client.renew_lease(request)).await {
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                if !reply.valid {
                    tracing::warn!(
                        task = task_id,
                        "lease expired (the task may be leased to another evaluator): finishing it anyway"
                    );
                    lost.store(true, Ordering::Relaxed);
                    return;
                }
                if reply.lease_ttl_ms > 0 {
                    every = renew_interval(reply.lease_ttl_ms);
                }
            }
            Ok(Err(status)) => tracing::warn!(
                task = task_id,
                code = ?status.code(),
                message = status.message(),
                "cannot renew the lease"
            ),
            Err(_) => tracing::warn!(task = task_id, "cannot renew the lease: no answer"),
        }
    }
}
