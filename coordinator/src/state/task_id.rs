//! Task ids, the one place their text form is made and read. An id names
//! the job, the checkpoint step, the split and the task's index
//! (`<job>/step-00000064/test-0003`); the evaluator gets it with the lease
//! and sends it back with renewals and completions. Inside the coordinator
//! a task is its job and [`TaskKey`], never the parsed text again.

use premem_core::Split;
use premem_core::data::results::results_prefix;
use premem_core::storage::checkpoint::{parse_step_name, step_name};

/// A task's place in its job: tasks are leased in this order (oldest
/// checkpoint first, train before test).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskKey {
    pub step: u64,
    pub split: Split,
    pub index: u32,
}

impl TaskKey {
    pub fn id(&self, job: &str) -> String {
        format!(
            "{job}/{}/{}-{:04}",
            step_name(self.step),
            self.split.name(),
            self.index
        )
    }

    /// The result file, relative to the run.
    pub fn result_file(&self) -> String {
        format!(
            "{}/{}-{:04}.parquet",
            results_prefix(self.step),
            self.split.name(),
            self.index
        )
    }
}

/// Parses a task id made by [`TaskKey::id`] into the job and the key.
pub fn parse_task_id(id: &str) -> Option<(&str, TaskKey)> {
    let (rest, last) = id.rsplit_once('/')?;
    let (job, step) = rest.rsplit_once('/')?;
    let step = parse_step_name(step)?;
    let (split, index) = last.split_once('-')?;
    let split = Split::from_name(split)?;
    // At least four digits, and no padding beyond: the one spelling
    // `TaskKey::id` makes (index 10000 and up has five or more).
    if index.len() < 4 || (index.len() > 4 && index.starts_with('0')) {
        return None;
    }
    Some((
        job,
        TaskKey {
            step,
            split,
            index: index.parse().ok()?,
        },
    ))
}
