//! **Tasks.** Every published checkpoint gets tasks of `eval.task_examples`
//! examples of the train subset (P-M accuracy) and of the test split;
//! identical for any number of evaluators. The run's store is the truth for
//! which checkpoints are published; a checkpoint's tasks are added once,
//! whether a trainer reported it or a listing found it.
//!
//! A task's examples are a slice of the job's split, worked out from its
//! key ([`Job::task_examples`]), and the job counts its tasks by state and
//! each checkpoint's done tasks by split as they change
//! ([`Job::set_task_state`]), so no question about a job's progress scans
//! its tasks.

use std::time::Instant;

use premem_core::Split;

use super::{Job, TaskKey};

/// One example's row without preamble: what P-M accuracy and the advice
/// need.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub id: String,
    pub accuracy: f64,
    pub perplexity: f64,
    /// Distinct samples over samples (`None`: the file does not say).
    pub distinct: Option<f64>,
}

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
    pub state: TaskState,
    pub attempts: u32,
    /// A done task's rows, until its checkpoint's split is folded.
    pub rows: Vec<Row>,
}

/// What a job's evaluation covers, fixed when the job is submitted.
#[derive(Clone, Debug)]
pub struct Examples {
    pub train: Vec<String>,
    pub test: Vec<String>,
}

/// Tasks of one split of a checkpoint: how many, how many done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub tasks: u32,
    pub done: u32,
}

impl Progress {
    pub fn complete(&self) -> bool {
        self.done == self.tasks
    }
}

/// A checkpoint with tasks: when it was found (the leasing order), its
/// splits' progress and its train examples' accuracies.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub found: Instant,
    pub train: Progress,
    pub test: Progress,
    /// Each train example's accuracy, in the order of the job's train
    /// examples; NaN until its task is done (the dashboard's heatmap). Sized
    /// when the checkpoint is found, so completions allocate nothing that
    /// outlives the fold.
    pub train_accuracy: Vec<f64>,
}

impl Checkpoint {
    pub fn progress(&self, split: Split) -> &Progress {
        match split {
            Split::Train => &self.train,
            Split::Test => &self.test,
        }
    }

    fn progress_mut(&mut self, split: Split) -> &mut Progress {
        match split {
            Split::Train => &mut self.train,
            Split::Test => &mut self.test,
        }
    }

    pub fn tasks(&self) -> u32 {
        self.train.tasks + self.test.tasks
    }

    pub fn done(&self) -> u32 {
        self.train.done + self.test.done
    }
}

/// A job's tasks by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCounts {
    pub pending: usize,
    pub leased: usize,
    pub done: usize,
}

impl TaskCounts {
    fn of(&mut self, state: &TaskState) -> &mut usize {
        match state {
            TaskState::Pending => &mut self.pending,
            TaskState::Leased { .. } => &mut self.leased,
            TaskState::Done => &mut self.done,
        }
    }
}

impl Job {
    /// Checkpoint steps that have tasks, in order.
    pub fn checkpoint_steps(&self) -> impl DoubleEndedIterator<Item = u64> + '_ {
        self.checkpoints.keys().copied()
    }

    /// The checkpoints with tasks, by step.
    pub fn checkpoints(&self) -> &std::collections::BTreeMap<u64, Checkpoint> {
        &self.checkpoints
    }

    /// The examples of task `key`: its slice of the job's split.
    pub fn task_examples(&self, key: TaskKey) -> &[String] {
        let ids = match key.split {
            Split::Train => &self.examples.train,
            Split::Test => &self.examples.test,
        };
        &ids[self.task_range(key, ids.len())]
    }

    /// Where task `key`'s examples are in a split of `len` examples.
    pub(super) fn task_range(&self, key: TaskKey, len: usize) -> std::ops::Range<usize> {
        let size = self.spec.eval.task_examples;
        let start = (key.index as usize * size).min(len);
        start..(start + size).min(len)
    }

    /// Adds the tasks of a newly published checkpoint found at `now`, all
    /// pending (no-op if known). Returns the new tasks' keys.
    pub(super) fn add_checkpoint(&mut self, step: u64, now: Instant) -> Vec<TaskKey> {
        if !self.spec.eval.enabled || self.checkpoints.contains_key(&step) {
            return vec![];
        }
        let size = self.spec.eval.task_examples;
        let mut checkpoint = Checkpoint {
            found: now,
            train: Progress::default(),
            test: Progress::default(),
            train_accuracy: vec![f64::NAN; self.examples.train.len()],
        };
        let mut added = vec![];
        for split in [Split::Train, Split::Test] {
            let examples = match split {
                Split::Train => self.examples.train.len(),
                Split::Test => self.examples.test.len(),
            };
            let tasks = examples.div_ceil(size) as u32;
            checkpoint.progress_mut(split).tasks = tasks;
            for index in 0..tasks {
                let key = TaskKey { step, split, index };
                let task = Task {
                    state: TaskState::Pending,
                    attempts: 0,
                    rows: vec![],
                };
                self.tasks.insert(key, task);
                added.push(key);
            }
        }
        self.counts.pending += added.len();
        self.checkpoints.insert(step, checkpoint);
        added
    }

    /// Moves task `key` (a known one) to `state`, keeping the counts;
    /// returns its state before.
    pub(super) fn set_task_state(&mut self, key: TaskKey, state: TaskState) -> TaskState {
        let task = self.tasks.get_mut(&key).expect("a known task");
        *self.counts.of(&task.state) -= 1;
        *self.counts.of(&state) += 1;
        let progress = self
            .checkpoints
            .get_mut(&key.step)
            .expect("a task's checkpoint")
            .progress_mut(key.split);
        match (&task.state, &state) {
            (TaskState::Done, TaskState::Done) => {}
            (TaskState::Done, _) => progress.done -= 1,
            (_, TaskState::Done) => progress.done += 1,
            _ => {}
        }
        std::mem::replace(&mut task.state, state)
    }

    /// When the checkpoint of `step` was found.
    pub(super) fn found(&self, step: u64) -> Instant {
        self.checkpoints[&step].found
    }

    pub fn tasks_total(&self) -> usize {
        self.tasks.len()
    }

    pub fn done_tasks(&self) -> usize {
        self.counts.done
    }

    pub fn leased_tasks(&self) -> usize {
        self.counts.leased
    }

    pub fn pending_tasks(&self) -> usize {
        self.counts.pending
    }
}
