//! What the coordinator sends out besides its gRPC replies, off the
//! state's lock, a few times a second:
//!
//! - TensorBoard event files in `<run>/tensorboard/`: the trainer's
//!   per-step metrics (`train/<key>`, read from `metrics/step-N.jsonl` once
//!   checkpoint N is found) and each checkpoint's P-M, train and test
//!   accuracy, test perplexity, sample diversity and advice flags
//!   (`eval/…`, `advice/…`) once it is folded. One immutable file per
//!   checkpoint and kind, so it works on object stores, and a restarted
//!   coordinator writes only what the directory lacks.
//! - MLflow, when `[tracking] mlflow` is set: the spec as parameters, the
//!   same metrics, the run's end.
//! - `<run>/early-stop.json` when `[advice] stop_when` fired.
//!
//! A failed write is logged and tried again on the next round.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use premem_core::science::advice::{CheckpointView, Finding, advise};
use premem_core::spec::JobSpec;
use premem_core::storage::checkpoint::{
    EARLY_STOP_FILE, EarlyStopRecord, TENSORBOARD_DIR, metrics_file, step_name,
};
use premem_core::{Store, StoreError};
use premem_tracking::mlflow::{Metric, Mlflow, RunStatus, flatten_params};
use premem_tracking::tensorboard::{Scalar, event_file, file_name};

use crate::runs::RunStores;
use crate::state::{Job, Phase, State};

/// How often the publisher looks for something new.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// A job as the publisher needs it, copied out under the lock.
struct Snapshot {
    name: String,
    spec: JobSpec,
    spec_json: String,
    /// Checkpoints found (their metrics files are complete).
    found: Vec<u64>,
    /// Checkpoints folded, with what the advice saw.
    folded: Vec<CheckpointView>,
    early_stop: Option<EarlyStopRecord>,
    /// The run ended: how, for MLflow.
    ended: Option<RunStatus>,
}

impl Snapshot {
    fn of(job: &Job) -> Snapshot {
        let folded: Vec<CheckpointView> = job
            .checkpoint_views()
            .into_iter()
            .filter(|c| folded_at(job, c.step))
            .collect();
        let early_stop = job.early_stop.as_ref().map(|reason| EarlyStopRecord {
            reason: reason.clone(),
            checkpoint: job.pm_by_step.keys().next_back().copied().unwrap_or(0),
            stopped_at_step: job.trained.then_some(job.total_steps),
        });
        let ended = match &job.phase {
            Phase::Cancelled => Some(RunStatus::Killed),
            Phase::Failed(_) => Some(RunStatus::Failed),
            Phase::Active if job.complete() => Some(RunStatus::Finished),
            Phase::Active => None,
        };
        Snapshot {
            name: job.name.clone(),
            spec: job.spec.clone(),
            spec_json: job.spec_json.clone(),
            found: job.checkpoint_steps().collect(),
            folded,
            early_stop,
            ended,
        }
    }
}

/// Every split of checkpoint `step` is folded (P-M, and the test split
/// when there is one).
fn folded_at(job: &Job, step: u64) -> bool {
    job.pm_by_step.contains_key(&step)
        && (job.examples.test.is_empty() || job.test.contains_key(&step))
}

/// What was sent for one job.
#[derive(Default)]
struct Sent {
    /// Suffixes of the event files in its `tensorboard/` (listed once).
    events: Option<BTreeSet<String>>,
    /// Per-step scalars read from the store that MLflow has not taken yet:
    /// each metrics file is read once.
    train: BTreeMap<u64, Vec<Scalar>>,
    mlflow: Option<MlflowRun>,
    /// No MLflow call before this, after a failure.
    mlflow_after: Option<std::time::Instant>,
    early_stop: Option<EarlyStopRecord>,
}

struct MlflowRun {
    client: Mlflow,
    run_id: String,
    train: BTreeSet<u64>,
    eval: BTreeSet<u64>,
    ended: bool,
}

/// How long the last round, after the stop, may take.
const LAST_ROUND: Duration = Duration::from_secs(10);

/// Publishes every `interval` until `stopped` resolves, then once more (a
/// run that ended just before the stop is published whole); the task ends
/// after that round.
pub fn spawn(
    state: Arc<Mutex<State>>,
    runs: RunStores,
    interval: Duration,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::pin!(stopped);
        let mut sent: HashMap<String, Sent> = HashMap::new();
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tokio::time::sleep(interval) => {}
            }
            round(&state, &runs, &mut sent).await;
        }
        if tokio::time::timeout(LAST_ROUND, round(&state, &runs, &mut sent))
            .await
            .is_err()
        {
            tracing::warn!("publishing: the last round took over {LAST_ROUND:?}; left unfinished");
        }
    })
}

/// One round over every job.
async fn round(state: &Mutex<State>, runs: &RunStores, sent: &mut HashMap<String, Sent>) {
    let snapshots: Vec<Snapshot> = {
        let state = state.lock().unwrap_or_else(|p| p.into_inner());
        state.jobs.values().map(Snapshot::of).collect()
    };
    for job in snapshots {
        let store = match runs.get(&job.spec.run.output) {
            Ok(store) => store,
            Err(e) => {
                tracing::warn!(job = job.name, error = %e, "publishing: cannot open the run's store");
                continue;
            }
        };
        let sent = sent.entry(job.name.clone()).or_default();
        publish_job(&job, &store, sent).await;
    }
}

/// One round for one job; failures are logged, and retried next round.
async fn publish_job(job: &Snapshot, store: &Store, sent: &mut Sent) {
    if let Err(e) = write_early_stop(job, store, sent).await {
        tracing::warn!(job = job.name, error = %e, "cannot write the early-stop record");
    }
    let (train, eval) = match write_events(job, store, sent).await {
        Ok(scalars) => scalars,
        Err(e) => {
            tracing::warn!(job = job.name, error = %e, "cannot write TensorBoard events");
            return;
        }
    };
    if sent
        .mlflow_after
        .is_some_and(|t| std::time::Instant::now() < t)
    {
        return;
    }
    match send_mlflow(job, sent, &train, &eval).await {
        Ok(()) => sent.mlflow_after = None,
        Err(e) => {
            tracing::warn!(job = job.name, error = %e, retry_in = ?MLFLOW_RETRY, "cannot log to MLflow");
            sent.mlflow_after = Some(std::time::Instant::now() + MLFLOW_RETRY);
        }
    }
}

/// How long after a failed MLflow call the next is tried.
const MLFLOW_RETRY: Duration = Duration::from_secs(10);

async fn write_early_stop(job: &Snapshot, store: &Store, sent: &mut Sent) -> Result<(), String> {
    let Some(record) = &job.early_stop else {
        return Ok(());
    };
    if sent.early_stop.as_ref() == Some(record) {
        return Ok(());
    }
    let json = serde_json::to_vec_pretty(record).map_err(|e| e.to_string())?;
    store
        .put(EARLY_STOP_FILE, json)
        .await
        .map_err(|e| e.to_string())?;
    sent.early_stop = Some(record.clone());
    Ok(())
}

/// Per-step scalars of each found checkpoint, and per-checkpoint scalars
/// of each folded one, by step; event files written for those the run's
/// `tensorboard/` lacks.
async fn write_events(
    job: &Snapshot,
    store: &Store,
    sent: &mut Sent,
) -> Result<(Scalars, Scalars), StoreError> {
    if sent.events.is_none() {
        let names = store.list_files(TENSORBOARD_DIR).await?;
        sent.events = Some(names.iter().filter_map(|n| suffix_of(n)).collect());
    }
    let mut train = Scalars::new();
    for &step in &job.found {
        let suffix = format!("train-{}", step_name(step));
        let written = sent.events.as_ref().is_some_and(|e| e.contains(&suffix));
        let tracked_elsewhere = sent
            .mlflow
            .as_ref()
            .is_some_and(|m| m.train.contains(&step));
        if written && (job.spec.tracking.mlflow.is_none() || tracked_elsewhere) {
            continue;
        }
        let scalars = match sent.train.get(&step) {
            Some(scalars) => scalars.clone(),
            None => train_scalars(store, step).await?,
        };
        if !written {
            put_events(store, &suffix, &scalars, sent).await?;
        }
        if job.spec.tracking.mlflow.is_some() {
            sent.train.insert(step, scalars.clone());
        }
        train.insert(step, scalars);
    }
    let mut eval = Scalars::new();
    for (i, checkpoint) in job.folded.iter().enumerate() {
        let suffix = format!("eval-{}", step_name(checkpoint.step));
        let scalars = eval_scalars(&job.spec, &job.folded[..=i]);
        if !sent.events.as_ref().is_some_and(|e| e.contains(&suffix)) {
            put_events(store, &suffix, &scalars, sent).await?;
        }
        eval.insert(checkpoint.step, scalars);
    }
    Ok((train, eval))
}

type Scalars = BTreeMap<u64, Vec<Scalar>>;

/// The suffix premem gave an event file's name (`…premem.<suffix>`).
fn suffix_of(name: &str) -> Option<String> {
    name.split_once(".premem.").map(|(_, s)| s.to_string())
}

async fn put_events(
    store: &Store,
    suffix: &str,
    scalars: &[Scalar],
    sent: &mut Sent,
) -> Result<(), StoreError> {
    let now = wall_time();
    let name = format!("{TENSORBOARD_DIR}/{}", file_name(now, suffix));
    store.put(&name, event_file(scalars, now)).await?;
    if let Some(events) = &mut sent.events {
        events.insert(suffix.to_string());
    }
    Ok(())
}

fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The numbers of each line of `metrics/step-N.jsonl` as `train/<key>` at
/// the line's step; a missing file is no scalars.
async fn train_scalars(store: &Store, step: u64) -> Result<Vec<Scalar>, StoreError> {
    let bytes = match store.get(&metrics_file(step)).await {
        Ok(bytes) => bytes,
        Err(StoreError::NotFound { .. }) => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let now = wall_time();
    let mut scalars = vec![];
    for line in String::from_utf8_lossy(&bytes).lines() {
        let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(line) else {
            continue;
        };
        let Some(at) = fields.get("step").and_then(|s| s.as_i64()) else {
            continue;
        };
        for (key, value) in &fields {
            if let Some(value) = value.as_f64().filter(|_| key != "step") {
                scalars.push(Scalar {
                    tag: format!("train/{key}"),
                    step: at,
                    value,
                    wall_time: now,
                });
            }
        }
    }
    Ok(scalars)
}

/// The newest checkpoint of `prefix`'s values, and the advice's flags as
/// they were at it.
fn eval_scalars(spec: &JobSpec, prefix: &[CheckpointView]) -> Vec<Scalar> {
    let Some(c) = prefix.last() else {
        return vec![];
    };
    let advice = advise(&spec.advice, prefix);
    let fired = |rule: &str| {
        let any = advice.findings.iter().any(|f: &Finding| f.rule() == rule);
        Some(f64::from(u8::from(any)))
    };
    let values = [
        ("eval/pm_accuracy", c.pm),
        ("eval/train_accuracy", c.train_accuracy),
        ("eval/test_accuracy", c.test_accuracy),
        ("eval/test_perplexity", c.test_perplexity),
        ("eval/distinct_fraction", c.distinct_fraction),
        ("advice/over_memorization", fired("over-memorization")),
        ("advice/pm_stalled", fired("pm-stalled")),
    ];
    let now = wall_time();
    values
        .into_iter()
        .filter_map(|(tag, value)| {
            Some(Scalar {
                tag: tag.to_string(),
                step: c.step as i64,
                value: value?,
                wall_time: now,
            })
        })
        .collect()
}

/// Logs to MLflow what it lacks: the parameters once, the metrics of each
/// checkpoint, the end.
async fn send_mlflow(
    job: &Snapshot,
    sent: &mut Sent,
    train: &Scalars,
    eval: &Scalars,
) -> Result<(), String> {
    let Some(url) = &job.spec.tracking.mlflow else {
        return Ok(());
    };
    if sent.mlflow.is_none() {
        sent.mlflow = Some(open_mlflow(job, url).await?);
    }
    let Sent {
        mlflow,
        train: read,
        ..
    } = sent;
    let run = mlflow.as_mut().expect("opened above");
    for (is_train, scalars) in [(true, train), (false, eval)] {
        for (step, values) in scalars {
            let logged = if is_train {
                &mut run.train
            } else {
                &mut run.eval
            };
            if logged.contains(step) {
                continue;
            }
            let metrics: Vec<Metric> = values.iter().map(metric).collect();
            run.client
                .log(&run.run_id, &[], &metrics)
                .await
                .map_err(|e| e.to_string())?;
            logged.insert(*step);
            if is_train {
                read.remove(step);
            }
        }
    }
    if let Some(status) = job.ended.filter(|_| !run.ended) {
        run.client
            .finish(&run.run_id, status)
            .await
            .map_err(|e| e.to_string())?;
        run.ended = true;
    }
    Ok(())
}

/// The job's MLflow run, created with its parameters when new.
async fn open_mlflow(job: &Snapshot, url: &str) -> Result<MlflowRun, String> {
    let client = Mlflow::new(url).map_err(|e| e.to_string())?;
    let experiment = job
        .spec
        .tracking
        .experiment
        .clone()
        .or_else(|| job.spec.run.group.clone())
        .unwrap_or_else(|| "premem".to_string());
    let experiment = client
        .experiment(&experiment)
        .await
        .map_err(|e| e.to_string())?;
    let run_id = client
        .run(&experiment, &job.name)
        .await
        .map_err(|e| e.to_string())?;
    let spec: serde_json::Value =
        serde_json::from_str(&job.spec_json).map_err(|e| e.to_string())?;
    client
        .log(&run_id, &flatten_params(&spec), &[])
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(job = job.name, url, run_id, "logging to MLflow");
    Ok(MlflowRun {
        client,
        run_id,
        train: BTreeSet::new(),
        eval: BTreeSet::new(),
        ended: false,
    })
}

fn metric(s: &Scalar) -> Metric {
    Metric {
        key: s.tag.clone(),
        value: s.value,
        timestamp_ms: (s.wall_time * 1000.0) as i64,
        step: s.step,
    }
}
