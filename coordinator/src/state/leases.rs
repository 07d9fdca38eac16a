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

/// Checks a completion's rows against its task (named `task_id` in the
/// refusal): exactly one row per example of the task, with valid values.
fn check_task_rows(task: &Task, task_id: &str, rows: &[Row]) -> Refused<()> {
    let wanted: BTreeSet<&str> = task.examples.iter().map(String::as_str).collect();
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

impl Job {
    /// Takes rows found in the run's store for a task that is not done (its
    /// result file, written before this coordinator knew the task) if they
    /// match the task, as a completion that needs no lease.
    pub fn adopt_result(&mut self, key: TaskKey, rows: Vec<Row>) -> Refused<()> {
        let task = self
            .tasks
            .get(&key)
            .ok_or_else(|| Refusal::NotFound(format!("no task '{}'", key.id(&self.name))))?;
        check_task_rows(task, &key.id(&self.name), &rows)?;
        self.finish_task(key, rows);
        Ok(())
    }
}

impl State {
    /// Leased tasks whose lease ran out become pending again.
    pub fn expire_leases(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        for job in self.jobs.values_mut() {
            let mut back = vec![];
            for (key, task) in job.tasks.iter_mut() {
                if let TaskState::Leased {
                    expires, evaluator, ..
                } = &task.state
                    && *expires <= now
                {
                    tracing::info!(
                        job = job.name,
                        task = key.id(&job.name),
                        evaluator,
                        "lease expired"
                    );
                    task.state = TaskState::Pending;
                    back.push(*key);
                }
            }
            expired += back.len();
            job.pending.extend(back);
        }
        expired
    }

    fn new_lease_id(&mut self) -> String {
        self.lease_counter += 1;
        format!("{:016x}{:08x}", self.lease_salt, self.lease_counter)
    }

    /// Leases the first pending task of the oldest active job.
    pub fn lease(&mut self, evaluator: &str, now: Instant) -> Option<Leased> {
        let leased = self.lease_task(evaluator, now);
        let event = Event::Polled {
            leased: leased.is_some(),
        };
        self.note_evaluator(evaluator, event, now);
        leased
    }

    fn lease_task(&mut self, evaluator: &str, now: Instant) -> Option<Leased> {
        let ttl = self.timing.lease_ttl;
        // The task whose checkpoint was found first (ties: job order).
        let name = self
            .order
            .iter()
            .filter(|name| {
                let job = &self.jobs[*name];
                job.phase == Phase::Active && !job.pending.is_empty()
            })
            .min_by_key(|name| {
                let job = &self.jobs[*name];
                let first = job.pending.first().expect("non-empty");
                job.found.get(&first.step).copied()
            })?;
        let name = name.clone();
        let lease = self.new_lease_id();
        let job = self.jobs.get_mut(&name).expect("ordered job exists");
        let key = job.pending.pop_first().expect("non-empty");
        let task = job.tasks.get_mut(&key).expect("pending task exists");
        task.state = TaskState::Leased {
            lease: lease.clone(),
            evaluator: evaluator.to_string(),
            expires: now + ttl,
        };
        Some(Leased {
            examples: task.examples.clone(),
            job: name,
            key,
            lease,
        })
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

    fn task_mut(&mut self, job: &str, key: TaskKey) -> &mut Task {
        self.jobs
            .get_mut(job)
            .and_then(|j| j.tasks.get_mut(&key))
            .expect("looked up by its id first")
    }

    pub fn renew(&mut self, lease_id: &str, task_id: &str, now: Instant) -> Refused<bool> {
        let ttl = self.timing.lease_ttl;
        let (name, key) = {
            let (job, key, _) = self.task(task_id)?;
            (job.name.clone(), key)
        };
        let task = self.task_mut(&name, key);
        if !lease_valid(task, lease_id, now) {
            return Ok(false);
        }
        if let TaskState::Leased { expires, .. } = &mut task.state {
            *expires = now + ttl;
        }
        Ok(true)
    }

    /// Checks a completion's rows against its task: exactly one row per
    /// example of the task, with valid values. Returns the task's run and
    /// result file for the caller to check the file exists.
    pub fn check_rows(&self, task_id: &str, rows: &[Row]) -> Refused<(String, TaskKey)> {
        let (job, key, task) = self.task(task_id)?;
        check_task_rows(task, task_id, rows)?;
        Ok((job.spec.run.output.clone(), key))
    }

    /// Takes a completion (rows already checked by [`State::check_rows`]).
    pub fn complete(
        &mut self,
        lease_id: &str,
        task_id: &str,
        rows: Vec<Row>,
        now: Instant,
    ) -> Refused<Completed> {
        let (name, key, state) = {
            let (job, key, task) = self.task(task_id)?;
            (job.name.clone(), key, task.state.clone())
        };
        let evaluator = match state {
            TaskState::Done => return Ok(Completed::Duplicate),
            TaskState::Leased {
                ref lease,
                expires,
                evaluator,
            } if lease == lease_id && expires > now => evaluator,
            _ => return Ok(Completed::Expired),
        };
        self.rows_accepted += rows.len() as u64;
        let event = Event::Completed {
            rows: rows.len() as u64,
        };
        self.note_evaluator(&evaluator, event, now);
        self.jobs
            .get_mut(&name)
            .expect("found above")
            .finish_task(key, rows);
        Ok(Completed::Accepted)
    }

    /// Gives a task back after a failure; the job fails after
    /// `eval.max_attempts` failures of one task. Ignored for a stale lease.
    pub fn fail(
        &mut self,
        lease_id: &str,
        task_id: &str,
        message: &str,
        now: Instant,
    ) -> Refused<()> {
        let (name, key, evaluator) = {
            let (job, key, task) = self.task(task_id)?;
            let evaluator = match &task.state {
                TaskState::Leased { evaluator, .. } if lease_valid(task, lease_id, now) => {
                    evaluator.clone()
                }
                _ => return Ok(()),
            };
            (job.name.clone(), key, evaluator)
        };
        self.note_evaluator(&evaluator, Event::Failed, now);
        let job = self.jobs.get_mut(&name).expect("found above");
        let max = job.spec.eval.max_attempts;
        let task = job.tasks.get_mut(&key).expect("found above");
        task.attempts += 1;
        task.state = TaskState::Pending;
        tracing::warn!(
            job = name,
            task = task_id,
            attempt = task.attempts,
            message,
            "task failed"
        );
        if task.attempts >= max {
            job.phase = Phase::Failed(format!(
                "task '{task_id}' failed {} times; last error: {message}",
                task.attempts
            ));
        } else {
            job.pending.insert(key);
        }
        Ok(())
    }
}
