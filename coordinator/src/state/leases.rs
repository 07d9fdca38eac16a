//! **Leases.** A task is leased to one evaluator for the lease TTL, renewed
//! by `RenewLease`; when it runs out the task is pending again. A completion
//! counts once: later ones are duplicates; one under an expired or unknown
//! lease is ignored. Tasks are leased in the order their checkpoints were
//! found, across jobs (train before test within one). The lease lives in the
//! task's state, the one record of who holds it.

use std::collections::BTreeSet;
use std::time::Instant;

use super::evaluators::Event;
use super::{Job, Phase, Refusal, Refused, Row, State, Task, TaskKey, TaskState, parse_task_id};

/// How a completion was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completed {
    Accepted,
    Duplicate,
    Expired,
}

/// A leased task as the evaluator gets it.
#[derive(Clone, Debug)]
pub struct Leased {
    pub job: String,
    pub key: TaskKey,
    pub lease: String,
    pub examples: Vec<String>,
}

/// Checks a completion's rows against its task's examples (the task named
/// `task_id` in the refusal): exactly one row per example, with valid
/// values.
pub fn check_task_rows(examples: &[String], task_id: &str, rows: &[Row]) -> Refused<()> {
    let wanted: BTreeSet<&str> = examples.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    for row in rows {
        if !wanted.contains(row.id.as_str()) {
            return Err(Refusal::Invalid(format!(
                "row for example '{}', which is not in task '{task_id}'",
                row.id
            )));
        }
        if !seen.insert(row.id.as_str()) {
            return Err(Refusal::Invalid(format!(
                "two rows for example '{}' in task '{task_id}'",
                row.id
            )));
        }
        check_row_values(row)?;
    }
    if seen.len() != wanted.len() {
        let missing: Vec<&&str> = wanted.difference(&seen).take(5).collect();
        return Err(Refusal::Invalid(format!(
            "task '{task_id}' has {} examples, the report has rows for {} (missing e.g. {missing:?})",
            wanted.len(),
            seen.len()
        )));
    }
    Ok(())
}

fn check_row_values(row: &Row) -> Refused<()> {
    if !(0.0..=1.0).contains(&row.accuracy) {
        return Err(Refusal::Invalid(format!(
            "example '{}': accuracy {} is not in [0, 1]",
            row.id, row.accuracy
        )));
    }
    if row.perplexity.is_nan() || row.perplexity < 1.0 - 1e-9 || row.perplexity.is_infinite() {
        return Err(Refusal::Invalid(format!(
            "example '{}': perplexity {} is not a finite number ≥ 1",
            row.id, row.perplexity
        )));
    }
    Ok(())
}

fn lease_valid(task: &Task, lease_id: &str, now: Instant) -> bool {
    matches!(&task.state, TaskState::Leased { lease, expires, .. } if lease == lease_id && *expires > now)
}

impl State {
    /// Takes rows found in the run's store for a task that is not done (its
    /// result file, written before this coordinator knew the task) if they
    /// match the task, as a completion that needs no lease.
    pub fn adopt_result(&mut self, job: &str, key: TaskKey, rows: Vec<Row>) -> Refused<()> {
        let j = self.job(job)?;
        let id = key.id(job);
        let task = j
            .tasks
            .get(&key)
            .ok_or_else(|| Refusal::NotFound(format!("no task '{id}'")))?;
        if task.state == TaskState::Done {
            return Ok(());
        }
        check_task_rows(j.task_examples(key), &id, &rows)?;
        self.finish_task(job, key, rows);
        Ok(())
    }

    /// Marks task `key` of `job` done with its rows (checked by the caller)
    /// and folds what it finished.
    fn finish_task(&mut self, job: &str, key: TaskKey, rows: Vec<Row>) {
        self.set_task_state(job, key, TaskState::Done);
        self.jobs
            .get_mut(job)
            .expect("a known job")
            .fold_task(key, rows);
    }

    /// Leased tasks whose lease ran out become pending again.
    pub fn expire_leases(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        while let Some((index, key)) = self.queue.first_expired(now) {
            let job = self.job_at(index).to_string();
            let old = self.set_task_state(&job, key, TaskState::Pending);
            if let TaskState::Leased { evaluator, .. } = old {
                tracing::info!(job, task = key.id(&job), evaluator, "lease expired");
            }
            expired += 1;
        }
        expired
    }

    fn new_lease_id(&mut self) -> String {
        self.lease_counter += 1;
        format!("{:016x}{:08x}", self.lease_salt, self.lease_counter)
    }

    /// Leases the first pending task: that of the checkpoint found first
    /// (ties: job order, then step, split and index) among the active jobs.
    pub fn lease(&mut self, evaluator: &str, now: Instant) -> Option<Leased> {
        let leased = self.lease_task(evaluator, now);
        let event = Event::Polled {
            leased: leased.is_some(),
        };
        self.note_evaluator(evaluator, event, now);
        leased
    }

    fn lease_task(&mut self, evaluator: &str, now: Instant) -> Option<Leased> {
        let (index, key) = self.queue.first_pending()?;
        let name = self.job_at(index).to_string();
        let lease = self.new_lease_id();
        let state = TaskState::Leased {
            lease: lease.clone(),
            evaluator: evaluator.to_string(),
            expires: now + self.timing.lease_ttl,
        };
        self.set_task_state(&name, key, state);
        Some(Leased {
            examples: self.jobs[&name].task_examples(key).to_vec(),
            job: name,
            key,
            lease,
        })
    }

    /// Gives task `task_id`, if it is pending, back to the lease `lease` of
    /// `evaluator` recorded before a restart, for a lease TTL from `now`;
    /// `false` when there is no such pending task.
    pub fn restore_lease(
        &mut self,
        task_id: &str,
        lease: &str,
        evaluator: &str,
        now: Instant,
    ) -> bool {
        let Ok((job, key, task)) = self.task(task_id) else {
            return false;
        };
        if task.state != TaskState::Pending || job.phase != Phase::Active {
            return false;
        }
        let name = job.name.clone();
        let state = TaskState::Leased {
            lease: lease.to_string(),
            evaluator: evaluator.to_string(),
            expires: now + self.timing.lease_ttl,
        };
        self.set_task_state(&name, key, state);
        tracing::info!(job = name, task = task_id, evaluator, "lease restored");
        true
    }

    /// Looks a task up by the id an evaluator sent.
    pub fn task(&self, task_id: &str) -> Refused<(&Job, TaskKey, &Task)> {
        let (name, key) = parse_task_id(task_id)
            .ok_or_else(|| Refusal::Invalid(format!("'{task_id}' is not a task id")))?;
        let job = self.job(name)?;
        let task = job
            .tasks
            .get(&key)
            .ok_or_else(|| Refusal::NotFound(format!("no task '{task_id}'")))?;
        Ok((job, key, task))
    }

    pub fn renew(&mut self, lease_id: &str, task_id: &str, now: Instant) -> Refused<bool> {
        let (name, key, state) = {
            let (job, key, task) = self.task(task_id)?;
            if !lease_valid(task, lease_id, now) {
                return Ok(false);
            }
            (job.name.clone(), key, task.state.clone())
        };
        if let TaskState::Leased {
            lease, evaluator, ..
        } = state
        {
            let expires = now + self.timing.lease_ttl;
            let renewed = TaskState::Leased {
                lease,
                evaluator,
                expires,
            };
            self.set_task_state(&name, key, renewed);
        }
        Ok(true)
    }

    /// What a completion's rows are checked against, outside the lock: the
    /// task's run, key and examples ([`check_task_rows`]).
    pub fn completion_target(&self, task_id: &str) -> Refused<(String, TaskKey, Vec<String>)> {
        let (job, key, _) = self.task(task_id)?;
        let examples = job.task_examples(key).to_vec();
        Ok((job.spec.run.output.clone(), key, examples))
    }

    /// Checks a completion's rows against its task: exactly one row per
    /// example of the task, with valid values. Returns the task's run and
    /// key for the caller to check its result file.
    pub fn check_rows(&self, task_id: &str, rows: &[Row]) -> Refused<(String, TaskKey)> {
        let (run, key, examples) = self.completion_target(task_id)?;
        check_task_rows(&examples, task_id, rows)?;
        Ok((run, key))
    }

    /// Takes a completion (rows already checked by [`check_task_rows`]).
    pub fn complete(
        &mut self,
        lease_id: &str,
        task_id: &str,
        rows: Vec<Row>,
        now: Instant,
    ) -> Refused<Completed> {
        let (name, key, evaluator) = {
            let (job, key, task) = self.task(task_id)?;
            let evaluator = match &task.state {
                TaskState::Done => return Ok(Completed::Duplicate),
                TaskState::Leased { evaluator, .. } if lease_valid(task, lease_id, now) => {
                    evaluator.clone()
                }
                _ => return Ok(Completed::Expired),
            };
            (job.name.clone(), key, evaluator)
        };
        self.rows_accepted += rows.len() as u64;
        let event = Event::Completed {
            rows: rows.len() as u64,
        };
        self.note_evaluator(&evaluator, event, now);
        self.finish_task(&name, key, rows);
        Ok(Completed::Accepted)
    }

    /// Gives a task back after a failure; the job fails after
    /// `eval.max_attempts` failures of one task. Ignored for a stale lease;
    /// `true` when the task was given back.
    pub fn fail(
        &mut self,
        lease_id: &str,
        task_id: &str,
        message: &str,
        now: Instant,
    ) -> Refused<bool> {
        let (name, key, evaluator, attempts, max) = {
            let (job, key, task) = self.task(task_id)?;
            let evaluator = match &task.state {
                TaskState::Leased { evaluator, .. } if lease_valid(task, lease_id, now) => {
                    evaluator.clone()
                }
                _ => return Ok(false),
            };
            let max = job.spec.eval.max_attempts;
            (job.name.clone(), key, evaluator, task.attempts + 1, max)
        };
        self.note_evaluator(&evaluator, Event::Failed, now);
        tracing::warn!(
            job = name,
            task = task_id,
            attempt = attempts,
            message,
            "task failed"
        );
        if attempts >= max {
            let why = format!("task '{task_id}' failed {attempts} times; last error: {message}");
            self.deactivate(&name, Phase::Failed(why));
        }
        self.set_task_state(&name, key, TaskState::Pending);
        let job = self.jobs.get_mut(&name).expect("found above");
        job.tasks.get_mut(&key).expect("found above").attempts = attempts;
        Ok(true)
    }
}
