//! **Queue.** The indexes over every job's tasks that let a lease, a
//! renewal, a completion and the expiry of leases touch only what they
//! change: the pending tasks of active jobs in leasing order, the leased
//! tasks by expiry, and the leases each evaluator holds. Every change of a
//! task's state goes through [`State::set_task_state`], which keeps the
//! job's counts ([`Job::set_task_state`]) and these indexes together.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::{Phase, State, TaskKey, TaskState};

/// A task in an index: the time that orders it, its job's index in the
/// state's job order, and its key.
type Entry = (Instant, u32, TaskKey);

#[derive(Default)]
pub struct Queue {
    /// Pending tasks of active jobs: the checkpoint's found time first,
    /// then job order, then the key (step, split, index).
    pending: BTreeSet<Entry>,
    /// Leased tasks by the expiry of their lease.
    expiring: BTreeSet<Entry>,
    /// Leases held, by evaluator.
    held: HashMap<String, usize>,
}

impl Queue {
    /// The next task to lease.
    pub(super) fn first_pending(&self) -> Option<(u32, TaskKey)> {
        self.pending.first().map(|&(_, job, key)| (job, key))
    }

    /// The first lease that has run out at `now`.
    pub(super) fn first_expired(&self, now: Instant) -> Option<(u32, TaskKey)> {
        self.expiring
            .first()
            .filter(|(expires, ..)| *expires <= now)
            .map(|&(_, job, key)| (job, key))
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn leased(&self) -> usize {
        self.expiring.len()
    }

    /// Leases `evaluator` holds now.
    pub fn held_by(&self, evaluator: &str) -> usize {
        self.held.get(evaluator).copied().unwrap_or(0)
    }

    /// Takes every pending task of job `job` out (it stopped being active).
    pub(super) fn drop_job(&mut self, job: u32) {
        self.pending.retain(|&(_, j, _)| j != job);
    }

    fn hold(&mut self, evaluator: &str, delta: isize) {
        let held = self.held.entry(evaluator.to_string()).or_insert(0);
        *held = held.saturating_add_signed(delta);
        if *held == 0 {
            self.held.remove(evaluator);
        }
    }
}

impl State {
    /// Moves task `key` of job `job` (known) to `state`: the job's counts,
    /// the queue of pending tasks (only an active job's are leased), the
    /// expiries and the evaluators' leases follow. Returns the old state.
    pub(super) fn set_task_state(
        &mut self,
        job: &str,
        key: TaskKey,
        state: TaskState,
    ) -> TaskState {
        let j = self.jobs.get_mut(job).expect("a known job");
        let (index, found, active) = (j.index, j.found(key.step), j.phase == Phase::Active);
        let old = j.set_task_state(key, state);
        let state = &j.tasks[&key].state;
        let queue = &mut self.queue;
        match &old {
            TaskState::Pending => {
                queue.pending.remove(&(found, index, key));
            }
            TaskState::Leased {
                evaluator, expires, ..
            } => {
                queue.expiring.remove(&(*expires, index, key));
                queue.hold(evaluator, -1);
            }
            TaskState::Done => {}
        }
        match state {
            TaskState::Pending if active => {
                queue.pending.insert((found, index, key));
            }
            TaskState::Leased {
                evaluator, expires, ..
            } => {
                queue.expiring.insert((*expires, index, key));
                queue.hold(evaluator, 1);
            }
            _ => {}
        }
        old
    }

    /// The checkpoint of `step` of job `job` is published (seen at `now`):
    /// adds its tasks if they are new, and the final step's checkpoint ends
    /// training even when nothing is evaluated. Returns the new tasks' keys.
    pub fn checkpoint_published(&mut self, job: &str, step: u64, now: Instant) -> Vec<TaskKey> {
        let Some(j) = self.jobs.get_mut(job) else {
            return vec![];
        };
        let keys = j.add_checkpoint(step, now);
        if !keys.is_empty() {
            tracing::info!(job, step, "checkpoint found: evaluation tasks added");
        }
        if step >= j.total_steps {
            j.trained = true;
        }
        if j.phase == Phase::Active {
            let index = j.index;
            self.queue
                .pending
                .extend(keys.iter().map(|&key| (now, index, key)));
        }
        keys
    }

    /// Fails the job `name` (if active) with `why`.
    pub fn fail_job(&mut self, name: &str, why: String) {
        self.deactivate(name, Phase::Failed(why));
    }

    /// The job `name` stopped being active: none of its tasks is leased
    /// again.
    pub(super) fn deactivate(&mut self, name: &str, phase: Phase) {
        let Some(job) = self.jobs.get_mut(name) else {
            return;
        };
        if job.phase == Phase::Active {
            job.phase = phase;
            let index = job.index;
            self.queue.drop_job(index);
        }
    }
}
