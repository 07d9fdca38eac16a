//! What a run's checkpoints are evaluated on, read from its record: the
//! examples of each split (for the train split, the subset the run trains
//! on) and how their final answers are marked. Shared by the evaluation of a
//! whole run (`run`) and the worker's tasks (`worker`).

use premem_core::data::answer::AnswerStyle;
use premem_core::spec::record::RunRecord;
use premem_core::{Dataset, Example, Split};

use crate::error::{EvalError, Result};

/// The examples of a split that a run's checkpoints are evaluated on: for
/// the train split, the subset the run trains on (`data.fraction`).
pub fn split_examples(record: &RunRecord, split: Split) -> Result<Vec<Example>> {
    let spec = &record.spec;
    match split {
        Split::Train => {
            let data = Dataset::load(&spec.data.train)?;
            let subset =
                premem_core::data::order::subset(data.len(), spec.data.fraction, spec.run.seed);
            Ok(subset
                .into_iter()
                .map(|i| data.examples[i].clone())
                .collect())
        }
        Split::Test => match &spec.data.test {
            Some(test) => Ok(Dataset::load(test)?.examples),
            None => Err(EvalError::Invalid(format!(
                "run '{}' has no data.test in its spec: nothing to evaluate the test split on",
                record.name
            ))),
        },
    }
}

/// How the final answers of a split's examples are marked.
pub fn answer_style(record: &RunRecord, split: Split) -> Result<AnswerStyle> {
    match split {
        Split::Train => Ok(record.spec.data.train.answer_style()),
        Split::Test => match &record.spec.data.test {
            Some(test) => Ok(test.answer_style()),
            None => Err(EvalError::Invalid(format!(
                "run '{}' has no data.test in its spec: nothing to evaluate the test split on",
                record.name
            ))),
        },
    }
}
