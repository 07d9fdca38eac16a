//! Evaluating a run: every published checkpoint on its train split (the
//! examples the run trains on) and its test split, with the run's own prompt
//! template and seed, into the run's result files
//! (`results/step-N/<split>.parquet`, `premem_core::results`). Checkpoints
//! that already have a split's results are skipped, so an interrupted
//! evaluation continues where it stopped.

use std::path::{Path, PathBuf};

use premem_core::answer::AnswerStyle;
use premem_core::checkpoint::{Area, RunRecord, published_steps, read_run_record, step_prefix};
use premem_core::results::{results_prefix, to_parquet};
use premem_core::{BlockingStore, Dataset, Example, Store};
use premem_model::{CausalLm, Tokenizer};
use tch::{Device, Kind};

use crate::error::{EvalError, Result};
use crate::evaluate::{EvalSettings, Evaluator, Split};

/// How to evaluate a run (the rest comes from its `run.json`).
#[derive(Clone, Debug)]
pub struct RunEvalOptions {
    pub splits: Vec<Split>,
    /// K, temperature, top-p, new tokens, preambles, batch size, kept texts
    /// (split, step and seed are set per task).
    pub settings: EvalSettings,
    /// Only the first N examples of each split.
    pub limit: Option<usize>,
    /// Only these checkpoint steps (all published ones when `None`).
    pub steps: Option<Vec<u64>>,
    /// Evaluate again even where results exist.
    pub redo: bool,
    pub cache_dir: PathBuf,
    pub device: Device,
    /// `None`: the checkpoint's own dtype policy (fp32 on CPU, bf16 on CUDA).
    pub kind: Option<Kind>,
}

/// One task done (or skipped).
#[derive(Clone, Debug)]
pub struct TaskReport {
    pub step: u64,
    pub split: Split,
    pub examples: usize,
    /// Mean accuracy without preamble; `None` when skipped.
    pub accuracy: Option<f64>,
    pub skipped: bool,
}

/// The file of a split's results at a checkpoint, relative to the run.
pub fn results_file(step: u64, split: Split) -> String {
    format!("{}/{}.parquet", results_prefix(step), split.name())
}

/// The settings a split's results were made with, beside them.
pub fn settings_file(step: u64, split: Split) -> String {
    format!("{}/{}.settings.json", results_prefix(step), split.name())
}

/// What must match for earlier results to stand.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Recorded {
    samples: usize,
    temperature: f64,
    top_p: f64,
    max_new_tokens: i64,
    preambles: Vec<String>,
    examples: usize,
}

impl Recorded {
    fn new(settings: &EvalSettings, split: Split, examples: usize) -> Recorded {
        Recorded {
            samples: settings.samples,
            temperature: settings.temperature,
            top_p: settings.top_p,
            max_new_tokens: settings.max_new_tokens,
            preambles: match split {
                Split::Train => settings.preambles.clone(),
                Split::Test => vec![],
            },
            examples,
        }
    }

    /// Results made with `self` serve a request for `wanted`: the same
    /// sampling settings and examples, and at least the wanted preambles.
    fn covers(&self, wanted: &Recorded) -> bool {
        let same = Recorded {
            preambles: wanted.preambles.clone(),
            ..self.clone()
        };
        same == *wanted && wanted.preambles.iter().all(|p| self.preambles.contains(p))
    }

    fn describe(&self) -> String {
        format!(
            "K={} T={} top-p={} max-new-tokens={} preambles={:?} examples={}",
            self.samples,
            self.temperature,
            self.top_p,
            self.max_new_tokens,
            self.preambles,
            self.examples
        )
    }
}

/// The examples of a split that a run's checkpoints are evaluated on: for
/// the train split, the subset the run trains on (`data.fraction`).
pub fn split_examples(record: &RunRecord, split: Split) -> Result<Vec<Example>> {
    let spec = &record.spec;
    match split {
        Split::Train => {
            let data = Dataset::load(&spec.data.train)?;
            let subset = premem_core::order::subset(data.len(), spec.data.fraction, spec.run.seed);
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

/// Evaluates the run at `location`; `progress(step, split, done, total)`.
pub fn evaluate_run(
    location: &str,
    options: &RunEvalOptions,
    progress: &dyn Fn(u64, Split, usize, usize),
) -> Result<Vec<TaskReport>> {
    let run = BlockingStore::new(Store::open(location)?)?;
    let store = run.store();
    let record = run.run(read_run_record(store))?;
    let mut steps = run.run(published_steps(store, Area::Weights))?;
    if let Some(wanted) = &options.steps {
        if let Some(missing) = wanted.iter().find(|s| !steps.contains(s)) {
            return Err(EvalError::Invalid(format!(
                "{}: no published checkpoint at step {missing} (published: {steps:?})",
                store.url()
            )));
        }
        steps.retain(|s| wanted.contains(s));
    }
    let mut splits = vec![];
    for &split in &options.splits {
        let mut examples = split_examples(&record, split)?;
        if let Some(limit) = options.limit {
            examples.truncate(limit);
        }
        let style = answer_style(&record, split)?;
        splits.push((split, examples, style));
    }

    let mut reports = vec![];
    for &step in &steps {
        let mut todo = vec![];
        for entry in &splits {
            let (split, examples, _) = entry;
            let settings_file = settings_file(step, *split);
            if !options.redo && run.run(store.exists(&results_file(step, *split)))? {
                // Done before: it stands only if made with the same settings
                // (extra preamble rows do no harm).
                let wanted = Recorded::new(&options.settings, *split, examples.len());
                let found: Option<Recorded> = match run.run(store.exists(&settings_file))? {
                    true => serde_json::from_slice(&run.run(store.get(&settings_file))?).ok(),
                    false => None,
                };
                if !found.as_ref().is_some_and(|f| f.covers(&wanted)) {
                    return Err(EvalError::Invalid(format!(
                        "{}: evaluated with other settings ({}) than now ({}); pass --redo to evaluate again, or the same settings",
                        store.url_of(&results_file(step, *split)),
                        found.map_or("unknown".into(), |f| f.describe()),
                        wanted.describe()
                    )));
                }
                continue;
            }
            todo.push(entry);
        }
        for (split, examples, _) in &splits {
            if !todo.iter().any(|(s, _, _)| s == split) {
                reports.push(TaskReport {
                    step,
                    split: *split,
                    examples: examples.len(),
                    accuracy: None,
                    skipped: true,
                });
            }
        }
        if todo.is_empty() {
            continue;
        }
        let prefix = step_prefix(Area::Weights, step);
        let checkpoint = if location.contains("://") {
            crate::checkpoint::fetch(&store.url_of(&prefix), &options.cache_dir)?
        } else {
            crate::checkpoint::fetch(
                &Path::new(location).join(&prefix).to_string_lossy(),
                &options.cache_dir,
            )?
        };
        let kind = options
            .kind
            .unwrap_or_else(|| premem_model::default_kind(options.device));
        let model = CausalLm::load(&checkpoint.dir, options.device, kind)?;
        let tokenizer = Tokenizer::from_dir(&checkpoint.dir)?;
        tokenizer.check_fits(model.config().vocab_size)?;
        let eos = *model.config().eos_token_ids.first().ok_or_else(|| {
            EvalError::Invalid(format!(
                "{}: config.json has no eos_token_id",
                checkpoint.dir.display()
            ))
        })?;
        for (split, examples, style) in todo {
            let evaluator = Evaluator {
                model: &model,
                tokenizer: &tokenizer,
                template: &record.spec.prompt,
                style: *style,
                eos,
                pad: model.config().pad_token_id.unwrap_or(eos),
            };
            let settings = EvalSettings {
                split: *split,
                checkpoint_step: step,
                seed: record.spec.run.seed,
                // Robustness to preambles is measured on train queries.
                preambles: match split {
                    Split::Train => options.settings.preambles.clone(),
                    Split::Test => vec![],
                },
                max_length: model.config().max_position_embeddings as usize,
                ..options.settings.clone()
            };
            let refs: Vec<&Example> = examples.iter().collect();
            let total = refs.len();
            progress(step, *split, 0, total);
            let rows = evaluator.evaluate(&refs, &settings, &|done| {
                progress(step, *split, done, total)
            })?;
            let bytes =
                to_parquet(&rows).map_err(|message| premem_core::results::ResultsError {
                    location: store.url_of(&results_file(step, *split)),
                    message,
                })?;
            // Settings first: results never stand without them.
            let recorded = Recorded::new(&options.settings, *split, total);
            run.run(store.put(
                &settings_file(step, *split),
                serde_json::to_vec_pretty(&recorded).expect("settings serialise"),
            ))?;
            run.run(store.put(&results_file(step, *split), bytes))?;
            let base: Vec<f64> = rows
                .iter()
                .filter(|r| r.preamble.is_empty())
                .map(|r| r.accuracy)
                .collect();
            reports.push(TaskReport {
                step,
                split: *split,
                examples: total,
                accuracy: Some(base.iter().sum::<f64>() / base.len().max(1) as f64),
                skipped: false,
            });
        }
    }
    Ok(reports)
}
