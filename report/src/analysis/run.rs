//! One run's analysis: P-M accuracy of every train example at every
//! checkpoint, the checkpoint summaries, what is missing, and the heatmap's
//! examples.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use premem_core::data::results::{ExampleResult, results_prefix};
use premem_core::science::pm::{
    CheckpointObservations, CheckpointPm, ExampleState, Observation, PmTracker, RunObservations,
    Threshold, masked_accuracy, memorized,
};

use super::ReportOptions;
use crate::load::RunData;
use crate::{ReportError, Result};

#[derive(Clone, Debug, Serialize)]
pub struct CheckpointSummary {
    pub run: String,
    pub step: u64,
    /// `PM_m`; `None` when train results are missing or partial.
    pub pm: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub memorized_fraction: Option<f64>,
    /// Test examples whose target perplexity is below p (test traces are
    /// never trained on: a high value says p is too high for the task).
    pub test_below_p: Option<f64>,
    pub median_train_perplexity: Option<f64>,
    pub grad_variance: Option<f64>,
    pub distance_from_init: Option<f64>,
    pub atc: Option<f64>,
    pub train_examples: usize,
    pub test_examples: usize,
    pub missing_train: usize,
    pub missing_test: usize,
}

/// One train example at one checkpoint.
#[derive(Clone, Debug, Serialize)]
pub struct ExampleCheckpoint {
    pub run: String,
    pub step: u64,
    pub id: String,
    pub accuracy: f64,
    pub perplexity: f64,
    pub memorized: bool,
    pub masked_accuracy: f64,
    pub pm: f64,
    /// The P-M value may miss an earlier checkpoint without this example's
    /// results.
    pub incomplete_history: bool,
}

#[derive(Clone, Debug)]
pub struct RunAnalysis {
    pub name: String,
    pub url: String,
    /// Every checkpoint with weights or results, in training order.
    pub checkpoints: Vec<CheckpointSummary>,
    pub examples: Vec<ExampleCheckpoint>,
    /// Heatmap rows: example ids in display order.
    pub heatmap_ids: Vec<String>,
    /// Results that are missing, one line each (checkpoints with such gaps
    /// have no dataset value).
    pub missing: Vec<String>,
    /// Other limits: no baseline measurements, P-M histories with gaps.
    pub limits: Vec<String>,
    pub coverage: Coverage,
}

/// Which examples the results cover.
#[derive(Clone, Debug, Serialize)]
pub struct Coverage {
    /// Train examples with results at some checkpoint (the expected set).
    pub train_evaluated: usize,
    /// Examples the run trains on, when its train file is readable here.
    pub train_size: Option<usize>,
    pub test_evaluated: usize,
    pub test_size: Option<usize>,
    /// Distinct K (samples per example) among the rows: more than one means
    /// checkpoints were evaluated differently.
    pub samples_per_example: Vec<u32>,
}

/// The ids each checkpoint should have results for: every example of the
/// split with results at some checkpoint.
struct Expected {
    train: BTreeSet<String>,
    test: BTreeSet<String>,
}

pub(super) fn base_rows<'a>(
    rows: &'a [ExampleResult],
    split: &'a str,
) -> impl Iterator<Item = &'a ExampleResult> {
    rows.iter()
        .filter(move |r| r.split == split && r.preamble.is_empty())
}

pub(super) fn observation(r: &ExampleResult) -> Observation {
    Observation {
        accuracy: r.accuracy,
        perplexity: r.target_perplexity,
    }
}

pub(super) fn steps_of(run: &RunData) -> Vec<u64> {
    let steps: BTreeSet<u64> = run
        .published
        .iter()
        .copied()
        .chain(run.rows.keys().copied())
        .collect();
    steps.into_iter().collect()
}

pub(super) fn ids_of(run: &RunData, split: &str) -> BTreeSet<String> {
    run.rows
        .values()
        .flat_map(|rows| base_rows(rows, split).map(|r| r.id.clone()))
        .collect()
}

/// Mean test accuracy at a step, when every expected test example has a row.
fn test_accuracy(rows: &[ExampleResult], expected: &BTreeSet<String>) -> (Option<f64>, usize) {
    let present: BTreeMap<&str, f64> = base_rows(rows, "test")
        .map(|r| (r.id.as_str(), r.accuracy))
        .collect();
    let missing = expected
        .iter()
        .filter(|id| !present.contains_key(id.as_str()))
        .count();
    let accuracy = (missing == 0 && !present.is_empty())
        .then(|| present.values().sum::<f64>() / present.len() as f64);
    (accuracy, missing)
}

pub(super) fn observations(run: &RunData) -> RunObservations {
    let expected_test = ids_of(run, "test");
    let empty = vec![];
    RunObservations {
        name: run.name.clone(),
        checkpoints: steps_of(run)
            .into_iter()
            .map(|step| {
                let rows = run.rows.get(&step).unwrap_or(&empty);
                CheckpointObservations {
                    step,
                    train: base_rows(rows, "train")
                        .map(|r| (r.id.clone(), observation(r)))
                        .collect(),
                    test_accuracy: test_accuracy(rows, &expected_test).0,
                }
            })
            .collect(),
    }
}

fn list(ids: &[String]) -> String {
    let shown: Vec<&str> = ids.iter().take(5).map(String::as_str).collect();
    let more = ids.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

pub(super) fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

pub(super) fn analyze_run(
    run: &RunData,
    threshold: Threshold,
    options: &ReportOptions,
) -> Result<RunAnalysis> {
    let expected = Expected {
        train: ids_of(run, "train"),
        test: ids_of(run, "test"),
    };
    let p = threshold.perplexity();
    let mut tracker = PmTracker::new(threshold, expected.train.iter().cloned());
    let empty = vec![];
    let (mut checkpoints, mut examples, mut missing, mut limits) = (vec![], vec![], vec![], vec![]);
    for step in steps_of(run) {
        let rows = run.rows.get(&step).unwrap_or(&empty);
        let train: Vec<&ExampleResult> = base_rows(rows, "train").collect();
        let pm = tracker
            .push(step, train.iter().map(|r| (r.id.as_str(), observation(r))))
            .map_err(|e| ReportError::Invalid {
                location: format!("{}/{}", run.url, results_prefix(step)),
                message: format!("run '{}': {e}", run.name),
            })?;
        let test = test_accuracy(rows, &expected.test);
        missing.extend(missing_results(step, rows, &pm, &expected, test.1));
        if !pm.incomplete_history.is_empty() {
            limits.push(format!(
                "step {step}: P-M of {} examples may miss an earlier maximum (a checkpoint before has no results for them): {}",
                pm.incomplete_history.len(),
                list(&pm.incomplete_history)
            ));
        }
        examples.extend(example_rows(&run.name, &train, &pm, p));
        let mut checkpoint = summary(run, rows, &train, &pm, test);
        checkpoint.test_below_p = checkpoint
            .test_accuracy
            .map(|_| below_p(base_rows(rows, "test"), p));
        checkpoints.push(checkpoint);
    }
    for &step in &run.published {
        if !run.baselines.contains_key(&step) {
            limits.push(format!(
                "step {step}: no baseline measurements from the trainer (checkpoint.baselines off?)"
            ));
        }
    }
    Ok(RunAnalysis {
        name: run.name.clone(),
        url: run.url.clone(),
        checkpoints,
        examples,
        heatmap_ids: heatmap_ids(tracker.states(), options.heatmap_rows),
        missing,
        limits,
        coverage: coverage(run, &expected.train, &expected.test),
    })
}

/// What a checkpoint lacks, one line per split; one line when it has no
/// results at all.
fn missing_results(
    step: u64,
    rows: &[ExampleResult],
    pm: &CheckpointPm,
    expected: &Expected,
    missing_test: usize,
) -> Vec<String> {
    if rows.is_empty() {
        return vec![format!(
            "step {step}: no results at all (not evaluated yet?)"
        )];
    }
    let mut missing = vec![];
    if !pm.missing.is_empty() {
        missing.push(format!(
            "step {step}: {} of {} train examples have no results: {}",
            pm.missing.len(),
            expected.train.len(),
            list(&pm.missing)
        ));
    }
    if missing_test > 0 {
        let ids: Vec<String> = expected
            .test
            .iter()
            .filter(|id| !base_rows(rows, "test").any(|r| &&r.id == id))
            .cloned()
            .collect();
        missing.push(format!(
            "step {step}: {missing_test} of {} test examples have no results: {}",
            expected.test.len(),
            list(&ids)
        ));
    }
    missing
}

/// The share of `rows` whose target perplexity is below `p`.
fn below_p<'a>(rows: impl Iterator<Item = &'a ExampleResult>, p: f64) -> f64 {
    let (below, all) = rows.fold((0usize, 0usize), |(b, n), r| {
        (b + usize::from(memorized(r.target_perplexity, p)), n + 1)
    });
    below as f64 / all.max(1) as f64
}

/// The checkpoint's row of every train example it has results for.
fn example_rows(
    run: &str,
    train: &[&ExampleResult],
    pm: &CheckpointPm,
    p: f64,
) -> Vec<ExampleCheckpoint> {
    let incomplete: BTreeSet<&String> = pm.incomplete_history.iter().collect();
    train
        .iter()
        .map(|r| ExampleCheckpoint {
            run: run.to_string(),
            step: pm.step,
            id: r.id.clone(),
            accuracy: r.accuracy,
            perplexity: r.target_perplexity,
            memorized: memorized(r.target_perplexity, p),
            masked_accuracy: masked_accuracy(r.accuracy, r.target_perplexity, p),
            pm: pm.per_example[&r.id],
            incomplete_history: incomplete.contains(&r.id),
        })
        .collect()
}

/// The dataset values of a checkpoint; train values only where every
/// expected train example has results. `test`: its accuracy and how many
/// test examples are missing.
fn summary(
    run: &RunData,
    rows: &[ExampleResult],
    train: &[&ExampleResult],
    pm: &CheckpointPm,
    (test_accuracy, missing_test): (Option<f64>, usize),
) -> CheckpointSummary {
    let complete_train = pm.missing.is_empty() && !train.is_empty();
    let baselines = run.baselines.get(&pm.step);
    CheckpointSummary {
        run: run.name.clone(),
        step: pm.step,
        pm: pm.pm,
        train_accuracy: complete_train.then_some(pm.train_accuracy),
        test_accuracy,
        memorized_fraction: complete_train.then_some(pm.memorized_fraction),
        test_below_p: None,
        median_train_perplexity: complete_train
            .then(|| median(train.iter().map(|r| r.target_perplexity).collect()))
            .flatten(),
        grad_variance: baselines.and_then(|b| b.grad_variance),
        distance_from_init: baselines.and_then(|b| b.distance_from_init),
        atc: None,
        train_examples: train.len(),
        test_examples: base_rows(rows, "test").count(),
        missing_train: pm.missing.len(),
        missing_test,
    }
}

/// How many examples the results cover, against the run's own splits when
/// its data files are readable here.
fn coverage(
    run: &RunData,
    expected_train: &BTreeSet<String>,
    expected_test: &BTreeSet<String>,
) -> Coverage {
    let spec = &run.record.spec;
    let train_size = premem_core::Dataset::load(&spec.data.train).ok().map(|d| {
        premem_core::data::order::subset(d.len(), spec.data.fraction, spec.run.seed).len()
    });
    let test_size = spec
        .data
        .test
        .as_ref()
        .and_then(|t| premem_core::Dataset::load(t).ok())
        .map(|d| d.len());
    let mut samples: BTreeSet<u32> = BTreeSet::new();
    for rows in run.rows.values() {
        samples.extend(rows.iter().map(|r| r.samples));
    }
    Coverage {
        train_evaluated: expected_train.len(),
        train_size,
        test_evaluated: expected_test.len(),
        test_size,
        samples_per_example: samples.into_iter().collect(),
    }
}

/// Examples with a row, in order of the step they were first memorized (never: last),
/// then id; evenly thinned to `limit`.
fn heatmap_ids(states: &BTreeMap<String, ExampleState>, limit: usize) -> Vec<String> {
    let mut ids: Vec<(&String, u64)> = states
        .iter()
        .filter(|(_, s)| s.seen > 0)
        .map(|(id, s)| (id, s.first_memorized.unwrap_or(u64::MAX)))
        .collect();
    ids.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    let n = ids.len();
    if n <= limit {
        return ids.into_iter().map(|(id, _)| id.clone()).collect();
    }
    (0..limit).map(|k| ids[k * n / limit].0.clone()).collect()
}
