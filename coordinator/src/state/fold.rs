//! **Fold.** A done task's rows are folded as they arrive: a checkpoint's
//! test accuracy once every test task of it is done; its P-M accuracy once
//! every train task of it and of all earlier checkpoints is done, since P-M
//! accuracy takes checkpoints in step order.

use premem_core::Split;
use premem_core::science::pm::Observation;

use super::{Job, Row, TaskKey, TaskState};

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
    /// Keeps the rows of task `key`, just done, and folds what it finished:
    /// its checkpoint's test split, or the P-M accuracy of the checkpoints
    /// whose train tasks (and all before them) are now done. The advice is
    /// computed again when anything was folded. Each checkpoint's rows are
    /// gathered once, when it folds, and dropped; a train task's accuracies
    /// stay in its checkpoint's `train_accuracy`.
    pub(super) fn fold_task(&mut self, key: TaskKey, rows: Vec<Row>) {
        if key.split == Split::Train {
            let range = self.task_range(key, self.examples.train.len());
            let checkpoint = self
                .checkpoints
                .get_mut(&key.step)
                .expect("a task's checkpoint");
            let examples = &self.examples.train[range.clone()];
            write_in_order(examples, &rows, &mut checkpoint.train_accuracy[range]);
        }
        self.tasks.get_mut(&key).expect("known task").rows = rows;
        let folded = match key.split {
            Split::Test => self.fold_test(key.step),
            Split::Train => self.fold_pm(),
        };
        if folded {
            self.refresh_advice();
        }
    }

    /// The keys of a checkpoint's split, in order.
    fn split_keys(&self, step: u64, split: Split) -> impl Iterator<Item = TaskKey> + '_ {
        let first = TaskKey {
            step,
            split,
            index: 0,
        };
        let last = TaskKey {
            index: u32::MAX,
            ..first
        };
        self.tasks.range(first..=last).map(|(key, _)| *key)
    }

    /// Takes the rows of a checkpoint's split (every task of it done).
    fn take_rows(&mut self, step: u64, split: Split) -> Vec<Row> {
        let keys: Vec<TaskKey> = self.split_keys(step, split).collect();
        let mut rows = vec![];
        for key in keys {
            let task = self.tasks.get_mut(&key).expect("listed above");
            debug_assert_eq!(task.state, TaskState::Done);
            rows.append(&mut task.rows);
            task.rows.shrink_to_fit();
        }
        rows
    }

    /// Folds the test split of checkpoint `step` once its tasks are done.
    fn fold_test(&mut self, step: u64) -> bool {
        let done = self.checkpoints[&step].test.complete();
        if self.examples.test.is_empty() || !done || self.test.contains_key(&step) {
            return false;
        }
        let rows = self.take_rows(step, Split::Test);
        self.test
            .insert(step, TestFold::of(&rows.iter().collect::<Vec<_>>()));
        true
    }

    /// Pushes the checkpoints after the last folded one into the tracker,
    /// stopping at the first whose train tasks are not all done.
    fn fold_pm(&mut self) -> bool {
        let from = self.pm_by_step.keys().next_back().map_or(0, |f| f + 1);
        let ready: Vec<u64> = self
            .checkpoints
            .range(from..)
            .take_while(|(_, c)| c.train.complete())
            .map(|(step, _)| *step)
            .collect();
        let mut any = false;
        for step in ready {
            let rows = self.take_rows(step, Split::Train);
            let observations = rows.iter().map(|r| {
                let observation = Observation {
                    accuracy: r.accuracy,
                    perplexity: r.perplexity,
                };
                (r.id.as_str(), observation)
            });
            match self.pm.push(step, observations) {
                Ok(mut pm) => {
                    // Nothing here reads the per-example values (the report
                    // recomputes them from the result files): a sweep of
                    // 100k tasks would keep ~300 bytes a task for nothing.
                    pm.per_example = Default::default();
                    self.pm_by_step.insert(step, pm);
                    any = true;
                }
                Err(e) => {
                    // Rows were validated on completion; this is a bug.
                    tracing::error!(job = self.name, step, error = %e, "P-M aggregation");
                    break;
                }
            }
        }
        any
    }
}

/// Writes the accuracies of `rows` into `out` in the order of `examples`
/// (the rows are checked to be one per example; an example without one
/// stays NaN).
fn write_in_order(examples: &[String], rows: &[Row], out: &mut [f64]) {
    let by_id: std::collections::HashMap<&str, f64> =
        rows.iter().map(|r| (r.id.as_str(), r.accuracy)).collect();
    for (id, out) in examples.iter().zip(out) {
        *out = by_id.get(id.as_str()).copied().unwrap_or(f64::NAN);
    }
}
