//! **Tasks.** Every published checkpoint gets tasks of `eval.task_examples`
//! examples of the train subset (P-M accuracy) and of the test split;
//! identical for any number of evaluators. The run's store is the truth for
//! which checkpoints are published; a checkpoint's tasks are added once,
//! whether a trainer reported it or a listing found it.

use std::collections::BTreeSet;
use std::time::Instant;

use premem_core::Split;

use super::{Job, Row, TaskKey};

#[derive(Clone, Debug, PartialEq)]
pub enum TaskState {
    Pending,
    Leased {
        lease: String,
        evaluator: String,
        expires: Instant,
    },
    Done,
}

#[derive(Clone, Debug)]
pub struct Task {
    pub examples: Vec<String>,
    pub state: TaskState,
    pub attempts: u32,
    /// Rows of a done task.
    pub rows: Vec<Row>,
}

/// What a job's evaluation covers, fixed when the job is submitted.
#[derive(Clone, Debug)]
pub struct Examples {
    pub train: Vec<String>,
    pub test: Vec<String>,
}

impl Job {
    /// Checkpoint steps that have tasks.
    pub fn checkpoint_steps(&self) -> BTreeSet<u64> {
        self.tasks.keys().map(|k| k.step).collect()
    }

    /// Adds the tasks of a newly published checkpoint found at `now` (no-op
    /// if known). Returns the new tasks' keys.
    pub fn add_checkpoint(&mut self, step: u64, now: Instant) -> Vec<TaskKey> {
        if !self.spec.eval.enabled || self.tasks.keys().any(|k| k.step == step) {
            return vec![];
        }
        let size = self.spec.eval.task_examples;
        self.found.insert(step, now);
        let mut added = vec![];
        for (split, ids) in [
            (Split::Train, &self.examples.train),
            (Split::Test, &self.examples.test),
        ] {
            for (index, chunk) in ids.chunks(size).enumerate() {
                let key = TaskKey {
                    step,
                    split,
                    index: index as u32,
                };
                self.tasks.insert(
                    key,
                    Task {
                        examples: chunk.to_vec(),
                        state: TaskState::Pending,
                        attempts: 0,
                        rows: vec![],
                    },
                );
                self.pending.insert(key);
                added.push(key);
            }
        }
        if step >= self.total_steps {
            self.trained = true;
        }
        added
    }

    /// The checkpoint of `step` is published (seen at `now`): adds its tasks
    /// if they are new, and the final step's checkpoint ends training even
    /// when nothing is evaluated. Returns the new tasks' keys.
    pub fn checkpoint_published(&mut self, step: u64, now: Instant) -> Vec<TaskKey> {
        let keys = self.add_checkpoint(step, now);
        if !keys.is_empty() {
            tracing::info!(
                job = self.name,
                step,
                "checkpoint found: evaluation tasks added"
            );
        }
        if step >= self.total_steps {
            self.trained = true;
        }
        keys
    }

    pub fn done_tasks(&self) -> usize {
        self.tasks
            .values()
            .filter(|t| t.state == TaskState::Done)
            .count()
    }

    pub fn leased_tasks(&self) -> usize {
        self.tasks
            .values()
            .filter(|t| matches!(t.state, TaskState::Leased { .. }))
            .count()
    }

    pub fn pending_tasks(&self) -> usize {
        self.pending.len()
    }
}
