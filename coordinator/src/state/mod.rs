//! The coordinator's state: jobs, their trainer groups, evaluation tasks and
//! leases, and the live P-M accuracy. Plain data behind one lock, every
//! method a short synchronous transition that takes `now` as an argument, so
//! the lease rules are tested without a network or a clock.
//!
//! The rules, one module each:
//! - [`group`]: the generations of a job's trainer ranks and their rendezvous;
//! - [`tasks`]: the evaluation tasks of each published checkpoint;
//! - [`queue`]: the indexes over all jobs' tasks (pending, expiring, held);
//! - [`leases`]: handing tasks to evaluators, renewals, completions, failures;
//! - [`pool`]: packing jobs onto the trainers started without a job;
//! - [`fold`]: folding finished checkpoints into P-M and test accuracy;
//! - [`advice`]: the advice on them, and the early stop it may ask for;
//! - [`evaluators`]: what each evaluator has done, for the dashboard;
//! - [`task_id`]: the task ids of the wire and the result files they name.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use premem_core::science::advice::Advice;
use premem_core::science::pm::{CheckpointPm, PmTracker};
use premem_core::spec::JobSpec;
use premem_core::storage::location::Location;

pub mod advice;
pub mod evaluators;
pub mod fold;
pub mod group;
pub mod leases;
pub mod pool;
pub mod queue;
pub mod task_id;
pub mod tasks;

pub use evaluators::EvaluatorStats;
pub use fold::TestFold;
pub use group::{Action, Group, Member, Registered, Rendezvous};
pub use leases::{Completed, Leased, check_task_rows};
pub use pool::{Assignment, PoolTrainer};
pub use task_id::{TaskKey, parse_task_id};
pub use tasks::{Checkpoint, Examples, Progress, Row, Task, TaskCounts, TaskState};

#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    Active,
    Cancelled,
    Failed(String),
}

pub struct Job {
    pub name: String,
    /// Its place in the state's job order (set when the state takes it).
    index: u32,
    /// Ranks held by pool trainers: rank → trainer name.
    pub assigned: BTreeMap<u32, String>,
    /// A trainer started for this job (not from the pool) joined it.
    pub dedicated: bool,
    /// Checkpoints with tasks: when each was found (the leasing order) and
    /// its splits' progress.
    checkpoints: BTreeMap<u64, Checkpoint>,
    pub spec: JobSpec,
    /// The spec as submitted: stored, and sent to the trainer ranks.
    pub spec_json: String,
    pub examples: Examples,
    pub total_steps: u64,
    /// Steps of one epoch: which checkpoints the schedule has.
    pub steps_per_epoch: u64,
    pub phase: Phase,
    pub group: Group,
    /// Rank 0 finished every step (or the final checkpoint is published).
    pub trained: bool,
    /// A listing of the run's checkpoints held the final step's: every
    /// checkpoint the job will have is known (a trainer's report of the
    /// final one alone is not enough: an earlier report may have been lost).
    pub final_listed: bool,
    /// The run output's `run.json` was found to be this job's (same
    /// training hash): its listed checkpoints may be taken. Checked again
    /// after a restart.
    pub run_owned: bool,
    pub tasks: BTreeMap<TaskKey, Task>,
    counts: TaskCounts,
    pm: PmTracker,
    /// P-M values of checkpoints pushed into the tracker, in order (their
    /// summaries: `per_example` is left empty).
    pub pm_by_step: BTreeMap<u64, CheckpointPm>,
    /// Test accuracy, perplexity and diversity of checkpoints whose test
    /// tasks are all done.
    pub test: BTreeMap<u64, TestFold>,
    /// The advice on the folded checkpoints ([`advice`]), refreshed at each
    /// completion.
    pub advice: Advice,
    /// Set when `[advice] stop_when` fired: why the run stops early.
    pub early_stop: Option<String>,
}

/// A refused request: the gRPC status it maps to and a message naming the
/// offending field.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// Valid, but not now (e.g. a superseded generation).
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The caller may not do this (a missing member secret, a role its
    /// token does not hold, a path outside the allowed prefixes).
    #[error("{0}")]
    Denied(String),
    /// Not yet: retry later (a live rank's replacement).
    #[error("{0}")]
    Busy(String),
}

pub type Refused<T> = Result<T, Refusal>;

/// Lease and liveness timing.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub lease_ttl: Duration,
    pub rank_ttl: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_ttl: Duration::from_secs(30),
            rank_ttl: Duration::from_secs(60),
        }
    }
}

/// Everything the coordinator holds.
pub struct State {
    /// Pool trainers by name.
    pub pool: BTreeMap<String, PoolTrainer>,
    /// No ranks are assigned before this (set after a restart).
    pub assign_after: Option<Instant>,
    pub timing: Timing,
    /// Jobs in submission order of their names.
    pub jobs: BTreeMap<String, Job>,
    order: Vec<String>,
    /// Accepted result rows, for the results/s metric.
    pub rows_accepted: u64,
    /// Every evaluator seen, by name.
    pub evaluators: BTreeMap<String, EvaluatorStats>,
    /// The indexes over every job's tasks.
    pub queue: queue::Queue,
    lease_counter: u64,
    lease_salt: u64,
}

impl Job {
    pub fn new(
        spec: JobSpec,
        spec_json: String,
        examples: Examples,
        (total_steps, steps_per_epoch): (u64, u64),
    ) -> Job {
        let pm = PmTracker::new(spec.eval.threshold, examples.train.iter().cloned());
        Job {
            name: spec.run.name.clone(),
            index: 0,
            assigned: BTreeMap::new(),
            dedicated: false,
            checkpoints: BTreeMap::new(),
            spec,
            spec_json,
            examples,
            total_steps,
            steps_per_epoch: steps_per_epoch.max(1),
            phase: Phase::Active,
            group: Group {
                generation: 1,
                ..Group::default()
            },
            trained: false,
            final_listed: false,
            run_owned: false,
            tasks: BTreeMap::new(),
            counts: TaskCounts::default(),
            pm,
            pm_by_step: BTreeMap::new(),
            test: BTreeMap::new(),
            advice: Advice::default(),
            early_stop: None,
        }
    }

    /// Whether the checkpoint after `done` steps is one of the job's
    /// schedule (`[checkpoint]`, the final step, an early stop's): an
    /// interrupted run's extra checkpoint, written to resume from, is not
    /// evaluated (issue 39, item 6).
    pub fn scheduled(&self, done: u64) -> bool {
        let ends_epoch = done.is_multiple_of(self.steps_per_epoch);
        self.spec.checkpoint.due(done, self.total_steps, ends_epoch)
    }

    pub fn world_size(&self) -> u32 {
        self.spec.cluster.trainers as u32
    }

    /// Training finished, the final checkpoint has its tasks (it may be
    /// found after the ranks report finishing), and every task is done.
    pub fn complete(&self) -> bool {
        self.trained
            && self.done_tasks() == self.tasks.len()
            && (!self.spec.eval.enabled
                || self
                    .checkpoint_steps()
                    .next_back()
                    .is_some_and(|step| step >= self.total_steps))
    }

    /// New checkpoints of the job can still matter: it is active, no
    /// listing has shown its final checkpoint yet, and not every checkpoint
    /// it will have is evaluated. A sweep's finished runs cost the scanner
    /// nothing while their evaluation goes on.
    pub fn watches_checkpoints(&self) -> bool {
        self.phase == Phase::Active
            && !self.final_listed
            && !(self.trained && self.spec.eval.enabled && self.complete())
    }

    /// Optimizer steps the group reports (the slowest rank).
    pub fn step(&self) -> u64 {
        if self.trained {
            return self.total_steps;
        }
        let newest = self.checkpoint_steps().next_back().unwrap_or(0);
        self.group
            .members
            .values()
            .map(|m| m.step)
            .min()
            .unwrap_or(0)
            .max(newest)
    }
}

impl State {
    pub fn new(timing: Timing) -> State {
        State {
            pool: BTreeMap::new(),
            assign_after: None,
            timing,
            jobs: BTreeMap::new(),
            order: vec![],
            rows_accepted: 0,
            evaluators: BTreeMap::new(),
            queue: queue::Queue::default(),
            lease_counter: 0,
            lease_salt: rand::random(),
        }
    }

    /// Adds a job (a new submission, or one rebuilt after a restart).
    pub fn insert_job(&mut self, job: Job) -> Refused<bool> {
        if let Some(existing) = self.jobs.get(&job.name) {
            if existing.spec == job.spec {
                return Ok(false);
            }
            return Err(Refusal::AlreadyExists(format!(
                "job '{}' exists with another spec; give the run another name",
                job.name
            )));
        }
        let output = run_location(&job.spec.run.output);
        if let Some(other) = self.jobs.values().find(|other| {
            let theirs = run_location(&other.spec.run.output);
            output.contains(&theirs) || theirs.contains(&output)
        }) {
            return Err(Refusal::AlreadyExists(format!(
                "job '{}': run.output {} is, or is inside or around, job '{}''s run directory {}: two jobs never share one",
                job.name, job.spec.run.output, other.name, other.spec.run.output
            )));
        }
        let mut job = job;
        job.index = self.order.len() as u32;
        self.order.push(job.name.clone());
        self.jobs.insert(job.name.clone(), job);
        Ok(true)
    }

    pub fn job(&self, name: &str) -> Refused<&Job> {
        self.jobs
            .get(name)
            .ok_or_else(|| Refusal::NotFound(format!("no job '{name}'")))
    }

    pub fn job_mut(&mut self, name: &str) -> Refused<&mut Job> {
        self.jobs
            .get_mut(name)
            .ok_or_else(|| Refusal::NotFound(format!("no job '{name}'")))
    }

    /// Refuses a rank that the job does not have.
    pub fn rank_in_range(job: &Job, rank: u32) -> Refused<()> {
        if rank >= job.world_size() {
            return Err(Refusal::Invalid(format!(
                "rank {rank} out of range: job '{}' has {} trainer rank(s) (0..{})",
                job.name,
                job.world_size(),
                job.world_size()
            )));
        }
        Ok(())
    }

    pub fn cancel(&mut self, job: &str) -> Refused<()> {
        self.job(job)?;
        self.deactivate(job, Phase::Cancelled);
        Ok(())
    }

    /// The name of the job at `index` of the job order.
    fn job_at(&self, index: u32) -> &str {
        &self.order[index as usize]
    }
}

#[cfg(test)]
mod tests;

/// A run output as one comparable location: as the store opens it
/// (percent-encoding decoded, dot segments applied, a relative path from
/// the working directory), local paths with their symlinks followed. An
/// output the store cannot parse compares as its own text.
fn run_location(output: &str) -> Location {
    match Location::parse(output) {
        Ok(location) => location.resolved(),
        Err(_) => Location::Remote {
            scheme: String::new(),
            bucket: String::new(),
            segments: vec![output.to_string()],
        },
    }
}
