//! The dashboard's JSON: everything the page shows, read from the state in
//! one pass under its lock. `/api/overview` is jobs, groups (sweeps and
//! curations) and the evaluator fleet; `/api/jobs/<name>/heatmap` is one
//! job's learning progression.

use std::collections::BTreeMap;
use std::time::Instant;

use premem_core::science::advice::{RunAdvice, advise_sweep};
use serde::Serialize;

use crate::state::{Job, Phase, State};

#[derive(Serialize)]
pub struct Overview {
    pub coordinator: About,
    pub jobs: Vec<JobView>,
    pub groups: Vec<GroupView>,
    pub evaluators: Vec<EvaluatorView>,
}

#[derive(Serialize)]
pub struct About {
    pub version: &'static str,
    pub uptime_s: f64,
    pub now_unix_ms: u128,
}

#[derive(Serialize)]
pub struct JobView {
    pub name: String,
    pub group: Option<String>,
    pub state: &'static str,
    pub message: String,
    pub step: u64,
    pub total_steps: u64,
    pub lr: f64,
    pub epochs: u64,
    pub tasks: TaskCounts,
    pub checkpoints: Vec<CheckpointView>,
    pub trainers: TrainersView,
    pub advice: AdviceView,
}

#[derive(Serialize)]
pub struct TaskCounts {
    pub pending: usize,
    pub leased: usize,
    pub done: usize,
}

/// A checkpoint as the advice sees it ([`Job::view_at`]), with its tasks
/// and memorized fraction.
#[derive(Serialize)]
pub struct CheckpointView {
    #[serde(flatten)]
    pub folded: premem_core::science::advice::CheckpointView,
    pub tasks_done: usize,
    pub tasks_total: usize,
    pub memorized_fraction: Option<f64>,
}

#[derive(Serialize)]
pub struct TrainersView {
    pub world_size: u32,
    pub ranks_alive: usize,
    pub generation: u64,
    pub ranks: Vec<RankView>,
}

#[derive(Serialize)]
pub struct RankView {
    pub rank: u32,
    pub step: u64,
    pub last_seen_s: f64,
    pub tokens_per_s: Option<f64>,
}

#[derive(Serialize)]
pub struct AdviceView {
    pub findings: Vec<FindingView>,
    pub keep: Option<KeepView>,
    pub stop: Option<String>,
}

#[derive(Serialize)]
pub struct FindingView {
    pub rule: &'static str,
    pub text: String,
}

#[derive(Serialize)]
pub struct KeepView {
    pub step: u64,
    pub text: String,
}

#[derive(Serialize)]
pub struct GroupView {
    pub name: String,
    pub kind: String,
    pub runs: Vec<String>,
    pub points: Vec<PointView>,
    pub advice: Vec<String>,
}

#[derive(Serialize)]
pub struct PointView {
    pub job: String,
    pub pm: f64,
    pub test_accuracy: f64,
    pub lr: f64,
    pub epochs: u64,
}

#[derive(Serialize)]
pub struct EvaluatorView {
    pub name: String,
    pub leases: usize,
    pub tasks_done: u64,
    pub rows: u64,
    pub failures: u64,
    pub tasks_per_min: f64,
    pub last_seen_s: f64,
}

#[derive(Serialize)]
pub struct Heatmap {
    pub job: String,
    pub steps: Vec<u64>,
    pub examples: Vec<String>,
    /// `accuracy[example][checkpoint]`; `None`: no row yet.
    pub accuracy: Vec<Vec<Option<f64>>>,
}

/// The most examples a heatmap shows (evenly chosen among them when there
/// are more): enough to see the progression, small enough for a browser.
pub const HEATMAP_EXAMPLES: usize = 400;

/// The overview of `state` at `now`; `started`: when the coordinator
/// started.
pub fn overview(state: &State, started: Instant, now: Instant) -> Overview {
    let jobs: Vec<JobView> = state.jobs.values().map(|j| job_view(j, now)).collect();
    Overview {
        coordinator: About {
            version: env!("CARGO_PKG_VERSION"),
            uptime_s: now.saturating_duration_since(started).as_secs_f64(),
            now_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
        },
        groups: groups(state),
        evaluators: evaluators(state, now),
        jobs,
    }
}

/// The state shown for a job: the gRPC status's, with an early stop named.
fn state_name(job: &Job) -> &'static str {
    match &job.phase {
        Phase::Cancelled => "cancelled",
        Phase::Failed(_) => "failed",
        Phase::Active if job.complete() && job.early_stop.is_some() => "stopped early",
        Phase::Active if job.complete() => "complete",
        Phase::Active if job.trained => "evaluating",
        Phase::Active if job.group.running => "training",
        Phase::Active => "waiting for ranks",
    }
}

fn job_view(job: &Job, now: Instant) -> JobView {
    let message = match &job.phase {
        Phase::Failed(m) => m.clone(),
        _ => job.early_stop.clone().unwrap_or_default(),
    };
    JobView {
        name: job.name.clone(),
        group: job.spec.run.group.clone(),
        state: state_name(job),
        message,
        step: job.step(),
        total_steps: job.total_steps,
        lr: job.spec.train.lr,
        epochs: job.spec.train.epochs,
        tasks: TaskCounts {
            pending: job.pending_tasks(),
            leased: job.leased_tasks(),
            done: job.done_tasks(),
        },
        checkpoints: checkpoints(job),
        trainers: trainers(job, now),
        advice: advice(job),
    }
}

fn checkpoints(job: &Job) -> Vec<CheckpointView> {
    job.checkpoints()
        .iter()
        .map(|(&step, c)| CheckpointView {
            folded: job.view_at(step),
            tasks_done: c.done() as usize,
            tasks_total: c.tasks() as usize,
            memorized_fraction: job.pm_by_step.get(&step).map(|p| p.memorized_fraction),
        })
        .collect()
}

fn trainers(job: &Job, now: Instant) -> TrainersView {
    let g = &job.group;
    TrainersView {
        world_size: job.world_size(),
        ranks_alive: if g.running { g.members.len() } else { 0 },
        generation: g.generation,
        ranks: g
            .members
            .iter()
            .map(|(&rank, m)| RankView {
                rank,
                step: m.step,
                last_seen_s: now.saturating_duration_since(m.last_seen).as_secs_f64(),
                tokens_per_s: m.tokens_per_s,
            })
            .collect(),
    }
}

fn advice(job: &Job) -> AdviceView {
    AdviceView {
        findings: job
            .advice
            .findings
            .iter()
            .map(|f| FindingView {
                rule: f.rule(),
                text: f.text(),
            })
            .collect(),
        keep: job.advice.keep.as_ref().map(|k| KeepView {
            step: k.step,
            text: k.text(),
        }),
        stop: job.early_stop.clone(),
    }
}

/// Runs by `run.group`, with their newest P-M and test accuracy and the
/// sweep's advice.
fn groups(state: &State) -> Vec<GroupView> {
    let mut by_group: BTreeMap<&str, Vec<&Job>> = BTreeMap::new();
    for job in state.jobs.values() {
        if let Some(group) = &job.spec.run.group {
            by_group.entry(group).or_default().push(job);
        }
    }
    by_group
        .into_iter()
        .map(|(name, jobs)| GroupView {
            name: name.to_string(),
            kind: name.split('/').next().unwrap_or_default().to_string(),
            runs: jobs.iter().map(|j| j.name.clone()).collect(),
            points: jobs.iter().filter_map(|j| point(j)).collect(),
            advice: advise_sweep(&jobs.iter().map(|j| run_advice(j)).collect::<Vec<_>>()).text,
        })
        .collect()
}

/// A job's newest checkpoint with both P-M and test accuracy.
fn point(job: &Job) -> Option<PointView> {
    let (pm, test) = job.pm_by_step.iter().rev().find_map(|(step, p)| {
        let test = job.test.get(step)?;
        Some((p.pm?, test.accuracy))
    })?;
    Some(PointView {
        job: job.name.clone(),
        pm,
        test_accuracy: test,
        lr: job.spec.train.lr,
        epochs: job.spec.train.epochs,
    })
}

fn run_advice(job: &Job) -> RunAdvice {
    RunAdvice {
        run: job.name.clone(),
        lr: job.spec.train.lr,
        epochs: job.spec.train.epochs,
        advice: job.advice.clone(),
        final_test_accuracy: job.test.values().last().map(|t| t.accuracy),
    }
}

fn evaluators(state: &State, now: Instant) -> Vec<EvaluatorView> {
    state
        .evaluators
        .iter()
        .map(|(name, e)| EvaluatorView {
            name: name.clone(),
            leases: state.queue.held_by(name),
            tasks_done: e.tasks_done,
            rows: e.rows,
            failures: e.failures,
            tasks_per_min: e.tasks_per_min(now),
            last_seen_s: now.saturating_duration_since(e.last_seen).as_secs_f64(),
        })
        .collect()
}

/// The learning progression of `job`'s train examples: accuracy per
/// checkpoint, examples ordered by the first checkpoint where they reach
/// accuracy 0.5 (never: last), then by id.
pub fn heatmap(job: &Job) -> Heatmap {
    let steps: Vec<u64> = job.checkpoint_steps().collect();
    let columns: Vec<&[f64]> = job
        .checkpoints()
        .values()
        .map(|c| c.train_accuracy.as_slice())
        .collect();
    let mut rows: Vec<(&str, Vec<Option<f64>>)> = job
        .examples
        .train
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let cells = columns.iter().map(|c| Some(c[i]).filter(|a| !a.is_nan()));
            (id.as_str(), cells.collect())
        })
        .collect();
    let learned = |cells: &[Option<f64>]| cells.iter().position(|a| a.is_some_and(|a| a >= 0.5));
    rows.sort_by_key(|(id, cells)| (learned(cells).unwrap_or(usize::MAX), *id));
    let rows = evenly(rows, HEATMAP_EXAMPLES);
    Heatmap {
        job: job.name.clone(),
        steps,
        examples: rows.iter().map(|(id, _)| id.to_string()).collect(),
        accuracy: rows.into_iter().map(|(_, cells)| cells).collect(),
    }
}

/// At most `n` of `items`, evenly spaced, in order.
fn evenly<T>(items: Vec<T>, n: usize) -> Vec<T> {
    let len = items.len();
    if len <= n {
        return items;
    }
    let keep: std::collections::BTreeSet<usize> = (0..n).map(|i| i * len / n).collect();
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, item)| item)
        .collect()
}
