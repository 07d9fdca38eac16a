//! **Fold.** A done task's rows are folded as they arrive: a checkpoint's
//! test accuracy once every test task of it is done; its P-M accuracy once
//! every train task of it and of all earlier checkpoints is done, since P-M
//! accuracy takes checkpoints in step order.

use premem_core::Split;
use premem_core::pm::Observation;

use super::{Job, TaskKey, TaskState};

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

/// A checkpoint's test split, once every test task of it is done.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TestFold {
    pub accuracy: f64,
    /// Mean target-trace perplexity over the examples.
    pub perplexity: f64,
    /// Mean distinct fraction, when every row has one.
    pub distinct: Option<f64>,
}

impl TestFold {
    fn of(rows: &[&Row]) -> TestFold {
        let n = rows.len().max(1) as f64;
        let distinct: Option<Vec<f64>> = rows.iter().map(|r| r.distinct).collect();
        TestFold {
            accuracy: rows.iter().map(|r| r.accuracy).sum::<f64>() / n,
            perplexity: rows.iter().map(|r| r.perplexity).sum::<f64>() / n,
            distinct: distinct.map(|d| d.iter().sum::<f64>() / n),
        }
    }
}

impl Job {
    /// Marks a task done with its rows (checked by the caller) and folds
    /// finished checkpoints into the P-M tracker, in step order.
    pub fn finish_task(&mut self, key: TaskKey, rows: Vec<Row>) {
        let task = self.tasks.get_mut(&key).expect("known task");
        task.state = TaskState::Done;
        task.rows = rows;
        self.pending.remove(&key);
        self.fold_test();
        self.fold_pm();
        self.refresh_advice();
    }

    /// The rows of a checkpoint's split once every task of it is done.
    fn split_done(&self, step: u64, split: Split) -> Option<Vec<&Row>> {
        let mut rows = vec![];
        let first = TaskKey {
            step,
            split,
            index: 0,
        };
        let last = TaskKey {
            index: u32::MAX,
            ..first
        };
        for (key, task) in self.tasks.range(first..=last) {
            debug_assert_eq!((key.step, key.split), (step, split));
            if task.state != TaskState::Done {
                return None;
            }
            rows.extend(task.rows.iter());
        }
        Some(rows)
    }

    fn fold_test(&mut self) {
        if self.examples.test.is_empty() {
            return;
        }
        for step in self.checkpoint_steps() {
            if !self.test.contains_key(&step)
                && let Some(rows) = self.split_done(step, Split::Test)
            {
                self.test.insert(step, TestFold::of(&rows));
            }
        }
    }

    /// Pushes the checkpoints after the last folded one into the tracker,
    /// stopping at the first whose train tasks are not all done.
    fn fold_pm(&mut self) {
        let folded = self.pm_by_step.keys().next_back().copied();
        let steps: Vec<u64> = self
            .checkpoint_steps()
            .into_iter()
            .filter(|s| folded.is_none_or(|f| *s > f))
            .collect();
        for step in steps {
            let Some(rows) = self.split_done(step, Split::Train) else {
                break;
            };
            let observations: Vec<(String, Observation)> = rows
                .iter()
                .map(|r| {
                    let observation = Observation {
                        accuracy: r.accuracy,
                        perplexity: r.perplexity,
                    };
                    (r.id.clone(), observation)
                })
                .collect();
            let pushed = self
                .pm
                .push(step, observations.iter().map(|(id, o)| (id.as_str(), *o)));
            match pushed {
                Ok(pm) => {
                    self.pm_by_step.insert(step, pm);
                }
                Err(e) => {
                    // Rows were validated on completion; this is a bug.
                    tracing::error!(job = self.name, step, error = %e, "P-M aggregation");
                    break;
                }
            }
        }
    }
}
