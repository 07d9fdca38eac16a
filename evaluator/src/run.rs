//! Evaluating a run: every published checkpoint on its train split (the
//! examples the run trains on) and its test split, with the run's own prompt
//! template and seed, into the run's result files
//! (`results/step-N/<split>.parquet`, `premem_core::data::results`). Checkpoints
//! that already have a split's results are skipped, so an interrupted
//! evaluation continues where it stopped.

use std::path::{Path, PathBuf};

use premem_core::data::answer::AnswerStyle;
use premem_core::data::results::{results_prefix, to_parquet};
use premem_core::spec::record::{RunRecord, read_run_record};
use premem_core::storage::checkpoint::{Area, published_steps, step_prefix};
use premem_core::{BlockingStore, Example, SamplingSpec, Split, Store};
use tch::{Device, Kind};

use crate::checkpoint::LoadedModel;
use crate::error::{EvalError, Result};
use crate::evaluate::{EvalSettings, Evaluator};
use crate::split::{answer_style, split_examples};

/// How to evaluate a run (the rest comes from its `run.json`).
#[derive(Clone, Debug)]
pub struct RunEvalOptions {
    pub splits: Vec<Split>,
    /// How to sample (the preambles on train queries only).
    pub sampling: SamplingSpec,
    /// Sample as the run's own evaluation did: every setting of its spec's
    /// `[eval]` but the preambles, which come from `sampling`.
    pub sampling_of_run: bool,
    /// Write only the rows with a preamble: those without are the run's
    /// own, in its evaluators' files (sampled again here in other batches,
    /// they could differ in the last bits and so in a sample).
    pub preambles_only: bool,
    /// Prompts per generation batch.
    pub batch_size: usize,
    /// Only the first N examples of each split.
    pub limit: Option<usize>,
    /// Only these checkpoint steps (all published ones when `None`).
    pub steps: Option<Vec<u64>>,
    /// Only the last of those steps.
    pub last: bool,
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

/// What must match for earlier results to stand: how they were sampled
/// (with the split's preambles) and how many examples they cover.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Recorded {
    #[serde(flatten)]
    sampling: SamplingSpec,
    examples: usize,
}

impl Recorded {
    fn new(sampling: &SamplingSpec, split: Split, examples: usize) -> Recorded {
        Recorded {
            sampling: sampling.for_split(split),
            examples,
        }
    }

    /// Results made with `self` serve a request for `wanted`.
    fn covers(&self, wanted: &Recorded) -> bool {
        self.examples == wanted.examples && self.sampling.covers(&wanted.sampling)
    }

    fn describe(&self) -> String {
        format!("{} examples={}", self.sampling.describe(), self.examples)
    }
}

/// What every checkpoint of a run is evaluated on: a split's examples (the
/// limit applied) and how its answers are marked.
struct SplitInput {
    split: Split,
    examples: Vec<Example>,
    style: AnswerStyle,
}

/// The run being evaluated: its store, its record and where its
/// checkpoints are.
struct RunEval<'a> {
    location: &'a str,
    run: BlockingStore,
    record: RunRecord,
    options: &'a RunEvalOptions,
    /// `options.sampling`, or the run's own with its preambles.
    sampling: SamplingSpec,
}

/// Evaluates the run at `location`; `progress(step, split, done, total)`.
pub fn evaluate_run(
    location: &str,
    options: &RunEvalOptions,
    progress: &dyn Fn(u64, Split, usize, usize),
) -> Result<Vec<TaskReport>> {
    let run = BlockingStore::new(Store::open(location)?)?;
    let record = run.run(read_run_record(run.store()))?;
    let sampling = if options.sampling_of_run {
        SamplingSpec {
            preambles: options.sampling.preambles.clone(),
            ..record.spec.eval.sampling.clone()
        }
    } else {
        options.sampling.clone()
    };
    let eval = RunEval {
        location,
        run,
        record,
        options,
        sampling,
    };
    let steps = eval.steps()?;
    let inputs = eval.split_inputs()?;
    let mut reports = vec![];
    for step in steps {
        let mut todo = vec![];
        for input in &inputs {
            if eval.has_results(step, input)? {
                reports.push(TaskReport {
                    step,
                    split: input.split,
                    examples: input.examples.len(),
                    accuracy: None,
                    skipped: true,
                });
            } else {
                todo.push(input);
            }
        }
        if todo.is_empty() {
            continue;
        }
        let loaded = eval.load(step)?;
        for input in todo {
            reports.push(eval.evaluate_split(step, input, &loaded, progress)?);
        }
    }
    Ok(reports)
}

impl RunEval<'_> {
    /// The published checkpoint steps to evaluate.
    fn steps(&self) -> Result<Vec<u64>> {
        let store = self.run.store();
        let mut steps = self.run.run(published_steps(store, Area::Weights))?;
        if let Some(wanted) = &self.options.steps {
            if let Some(missing) = wanted.iter().find(|s| !steps.contains(s)) {
                return Err(EvalError::Invalid(format!(
                    "{}: no published checkpoint at step {missing} (published: {steps:?})",
                    store.url()
                )));
            }
            steps.retain(|s| wanted.contains(s));
        }
        if self.options.last
            && let Some(&last) = steps.last()
        {
            steps = vec![last];
        }
        Ok(steps)
    }

    fn split_inputs(&self) -> Result<Vec<SplitInput>> {
        let mut inputs = vec![];
        for &split in &self.options.splits {
            let mut examples = split_examples(&self.record, split)?;
            if let Some(limit) = self.options.limit {
                examples.truncate(limit);
            }
            let style = answer_style(&self.record, split)?;
            inputs.push(SplitInput {
                split,
                examples,
                style,
            });
        }
        Ok(inputs)
    }

    /// Whether `input`'s results at `step` exist and stand: made with the
    /// same settings (extra preamble rows do no harm); other settings are an
    /// error unless `redo`.
    fn has_results(&self, step: u64, input: &SplitInput) -> Result<bool> {
        let (run, store) = (&self.run, self.run.store());
        let results = results_file(step, input.split);
        if self.options.redo || !run.run(store.exists(&results))? {
            return Ok(false);
        }
        let wanted = Recorded::new(&self.sampling, input.split, input.examples.len());
        let settings = settings_file(step, input.split);
        let found: Option<Recorded> = match run.run(store.exists(&settings))? {
            true => serde_json::from_slice(&run.run(store.get(&settings))?).ok(),
            false => None,
        };
        if found.as_ref().is_some_and(|f| f.covers(&wanted)) {
            return Ok(true);
        }
        Err(EvalError::Invalid(format!(
            "{}: evaluated with other settings ({}) than now ({}); pass --redo to evaluate again, or the same settings",
            store.url_of(&results),
            found.map_or("unknown".into(), |f| f.describe()),
            wanted.describe()
        )))
    }

    /// The checkpoint at `step`, fetched into the cache and loaded.
    fn load(&self, step: u64) -> Result<LoadedModel> {
        let prefix = step_prefix(Area::Weights, step);
        let source = if self.location.contains("://") {
            self.run.store().url_of(&prefix)
        } else {
            Path::new(self.location)
                .join(&prefix)
                .to_string_lossy()
                .into_owned()
        };
        let checkpoint = crate::checkpoint::fetch(&source, &self.options.cache_dir)?;
        let device = self.options.device;
        let kind = self
            .options
            .kind
            .unwrap_or_else(|| premem_model::default_kind(device));
        LoadedModel::load(&checkpoint.dir, device, kind)
    }

    /// Evaluates one split at one checkpoint and writes its settings, then
    /// its rows (results never stand without their settings).
    fn evaluate_split(
        &self,
        step: u64,
        input: &SplitInput,
        loaded: &LoadedModel,
        progress: &dyn Fn(u64, Split, usize, usize),
    ) -> Result<TaskReport> {
        let (run, store) = (&self.run, self.run.store());
        let config = loaded.model.config();
        let evaluator = Evaluator {
            model: &loaded.model,
            tokenizer: &loaded.tokenizer,
            template: &self.record.spec.prompt,
            style: input.style,
            eos: loaded.eos,
            pad: loaded.pad(),
        };
        let recorded = Recorded::new(&self.sampling, input.split, input.examples.len());
        let settings = EvalSettings {
            split: input.split,
            checkpoint_step: step,
            seed: self.record.spec.run.seed,
            sampling: recorded.sampling.clone(),
            batch_size: self.options.batch_size,
            max_length: config.max_position_embeddings as usize,
            loss_chunk_tokens: self.record.spec.train.loss_chunk_tokens,
            sampler: crate::SamplerKind::Continuous,
        };
        let refs: Vec<&Example> = input.examples.iter().collect();
        let total = refs.len();
        progress(step, input.split, 0, total);
        let mut rows = evaluator.evaluate(&refs, &settings, &|done| {
            progress(step, input.split, done, total)
        })?;
        let base: Vec<f64> = rows
            .iter()
            .filter(|r| r.preamble.is_empty())
            .map(|r| r.accuracy)
            .collect();
        if self.options.preambles_only {
            rows.retain(|r| !r.preamble.is_empty());
        }
        let file = results_file(step, input.split);
        let bytes =
            to_parquet(&rows).map_err(|message| premem_core::data::results::ResultsError {
                location: store.url_of(&file),
                message,
            })?;
        run.run(store.put(
            &settings_file(step, input.split),
            serde_json::to_vec_pretty(&recorded).expect("settings serialise"),
        ))?;
        run.run(store.put(&file, bytes))?;
        Ok(TaskReport {
            step,
            split: input.split,
            examples: total,
            accuracy: Some(base.iter().sum::<f64>() / base.len().max(1) as f64),
            skipped: false,
        })
    }
}
