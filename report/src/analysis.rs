//! From loaded runs to the numbers of a report: P-M accuracy per example and
//! checkpoint, per-checkpoint summaries, the threshold (given or
//! calibrated), P-M vs test fits, baselines, ATC, and the robustness view.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use premem_core::baselines::{atc_predict, atc_threshold, pearson};
use premem_core::pm::{
    Calibration, CheckpointObservations, Grid, LinearFit, Observation, PmTracker, RunObservations,
    Threshold, calibrate, least_squares, masked_accuracy, memorized, r2_identity,
};
use premem_core::results::ExampleResult;

use super::load::RunData;
use super::{ReportError, Result};

#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// The memorization threshold; `None`: calibrate it over `grid`.
    pub threshold: Option<Threshold>,
    pub grid: Grid,
    /// The run whose test split fits the ATC threshold (default: the first).
    pub atc_reference: Option<String>,
    /// Examples shown in a heatmap (evenly chosen when there are more).
    pub heatmap_rows: usize,
    /// Equal-width P-M buckets of the robustness view.
    pub buckets: usize,
}

impl Default for ReportOptions {
    fn default() -> ReportOptions {
        ReportOptions {
            threshold: None,
            grid: Grid::default(),
            atc_reference: None,
            heatmap_rows: 200,
            buckets: 5,
        }
    }
}

/// Where the threshold came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum ThresholdSource {
    Given,
    Calibrated,
    /// Not calibratable (the reason), so the authors' GSM8K value.
    Default(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckpointSummary {
    pub run: String,
    pub step: u64,
    /// `PM_m`; `None` when train results are missing or partial.
    pub pm: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub memorized_fraction: Option<f64>,
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

/// A checkpoint value the report compares with test accuracy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Metric {
    #[serde(rename = "P-M train accuracy")]
    Pm,
    #[serde(rename = "train accuracy")]
    TrainAccuracy,
    #[serde(rename = "ATC")]
    Atc,
    #[serde(rename = "gradient variance")]
    GradVariance,
    #[serde(rename = "distance from init")]
    DistanceFromInit,
}

impl Metric {
    /// In the report's order: P-M first, then the baselines.
    pub const ALL: [Metric; 5] = [
        Metric::Pm,
        Metric::TrainAccuracy,
        Metric::Atc,
        Metric::GradVariance,
        Metric::DistanceFromInit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Pm => "P-M train accuracy",
            Metric::TrainAccuracy => "train accuracy",
            Metric::Atc => "ATC",
            Metric::GradVariance => "gradient variance",
            Metric::DistanceFromInit => "distance from init",
        }
    }

    /// Whether it estimates accuracy itself (then it is compared with
    /// `y = x` too).
    pub fn accuracy_scale(self) -> bool {
        matches!(self, Metric::Pm | Metric::TrainAccuracy | Metric::Atc)
    }

    /// Its value at a checkpoint.
    pub fn of(self, c: &CheckpointSummary) -> Option<f64> {
        match self {
            Metric::Pm => c.pm,
            Metric::TrainAccuracy => c.train_accuracy,
            Metric::Atc => c.atc,
            Metric::GradVariance => c.grad_variance,
            Metric::DistanceFromInit => c.distance_from_init,
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct MetricCorrelation {
    pub metric: Metric,
    /// (metric, test accuracy) pairs.
    pub points: Vec<(f64, f64)>,
    /// The metric estimates accuracy itself (compared with y = x too).
    pub accuracy_scale: bool,
    /// Against y = x, for metrics that estimate accuracy themselves.
    pub r2_identity: Option<f64>,
    pub fit: Option<LinearFit>,
    pub pearson: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AtcFit {
    pub reference: String,
    pub threshold: f64,
    /// Pooled test accuracy and samples of the reference run.
    pub reference_accuracy: f64,
    pub samples: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Bucket {
    pub low: f64,
    pub high: f64,
    pub examples: usize,
    /// Mean accuracy without a preamble.
    pub base_accuracy: Option<f64>,
    /// Mean accuracy with each preamble (in `Robustness::preambles` order).
    pub preamble_accuracy: Vec<Option<f64>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Robustness {
    /// (run, step) whose preamble rows are used (per run: the last
    /// checkpoint that has them).
    pub checkpoints: Vec<(String, u64)>,
    pub preambles: Vec<String>,
    pub buckets: Vec<Bucket>,
}

/// What one run was made with (from its `run.json`), as `provenance.json`
/// holds it.
#[derive(Clone, Debug, Serialize)]
pub struct RunProvenance {
    pub run: String,
    pub premem_version: String,
    /// `None` when the build did not know it.
    pub git_revision: Option<String>,
    pub training_hash: String,
    /// SHA-256 of the data and base-model files by path.
    pub checksums: BTreeMap<String, String>,
    /// The resolved job spec.
    pub spec: premem_core::spec::JobSpec,
}

impl RunProvenance {
    fn of(run: &RunData) -> RunProvenance {
        let r = &run.record;
        RunProvenance {
            run: run.name.clone(),
            premem_version: r.premem_version.clone(),
            git_revision: r.git_revision.clone(),
            training_hash: r.training_hash.clone(),
            checksums: r.checksums.clone(),
            spec: r.spec.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Analysis {
    pub threshold: Threshold,
    pub threshold_source: ThresholdSource,
    pub calibration: Option<Calibration>,
    pub runs: Vec<RunAnalysis>,
    /// P-M vs test over every checkpoint with both.
    pub pm_vs_test: MetricCorrelation,
    /// Baselines vs test, P-M first.
    pub correlations: Vec<MetricCorrelation>,
    pub atc: Option<AtcFit>,
    pub robustness: Option<Robustness>,
    /// Notes from loading (unreadable side files, orphan results).
    pub notes: Vec<String>,
    /// Per run, in report order: what it was made with.
    pub provenance: Vec<RunProvenance>,
}

fn base_rows<'a>(
    rows: &'a [ExampleResult],
    split: &'a str,
) -> impl Iterator<Item = &'a ExampleResult> {
    rows.iter()
        .filter(move |r| r.split == split && r.preamble.is_empty())
}

fn observation(r: &ExampleResult) -> Observation {
    Observation {
        accuracy: r.accuracy,
        perplexity: r.target_perplexity,
    }
}

fn steps_of(run: &RunData) -> Vec<u64> {
    let steps: BTreeSet<u64> = run
        .published
        .iter()
        .copied()
        .chain(run.rows.keys().copied())
        .collect();
    steps.into_iter().collect()
}

fn ids_of(run: &RunData, split: &str) -> BTreeSet<String> {
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

fn observations(run: &RunData) -> RunObservations {
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

fn median(mut values: Vec<f64>) -> Option<f64> {
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

fn analyze_run(
    run: &RunData,
    threshold: Threshold,
    options: &ReportOptions,
) -> Result<RunAnalysis> {
    let expected_train = ids_of(run, "train");
    let expected_test = ids_of(run, "test");
    let p = threshold.perplexity();
    let mut tracker = PmTracker::new(threshold, expected_train.iter().cloned());
    let empty = vec![];
    let (mut checkpoints, mut examples, mut missing, mut limits) = (vec![], vec![], vec![], vec![]);
    for step in steps_of(run) {
        let rows = run.rows.get(&step).unwrap_or(&empty);
        let train: Vec<&ExampleResult> = base_rows(rows, "train").collect();
        let pm = tracker
            .push(step, train.iter().map(|r| (r.id.as_str(), observation(r))))
            .map_err(|e| ReportError::Invalid {
                location: format!("{}/{}", run.url, premem_core::results::results_prefix(step)),
                message: format!("run '{}': {e}", run.name),
            })?;
        let (test, missing_test) = test_accuracy(rows, &expected_test);
        let test_examples = base_rows(rows, "test").count();
        if rows.is_empty() {
            missing.push(format!(
                "step {step}: no results at all (not evaluated yet?)"
            ));
        } else {
            if !pm.missing.is_empty() {
                missing.push(format!(
                    "step {step}: {} of {} train examples have no results: {}",
                    pm.missing.len(),
                    expected_train.len(),
                    list(&pm.missing)
                ));
            }
            if missing_test > 0 {
                let ids: Vec<String> = expected_test
                    .iter()
                    .filter(|id| !base_rows(rows, "test").any(|r| &&r.id == id))
                    .cloned()
                    .collect();
                missing.push(format!(
                    "step {step}: {missing_test} of {} test examples have no results: {}",
                    expected_test.len(),
                    list(&ids)
                ));
            }
        }
        if !pm.incomplete_history.is_empty() {
            limits.push(format!(
                "step {step}: P-M of {} examples may miss an earlier maximum (a checkpoint before has no results for them): {}",
                pm.incomplete_history.len(),
                list(&pm.incomplete_history)
            ));
        }
        let incomplete: BTreeSet<&String> = pm.incomplete_history.iter().collect();
        for r in &train {
            examples.push(ExampleCheckpoint {
                run: run.name.clone(),
                step,
                id: r.id.clone(),
                accuracy: r.accuracy,
                perplexity: r.target_perplexity,
                memorized: memorized(r.target_perplexity, p),
                masked_accuracy: masked_accuracy(r.accuracy, r.target_perplexity, p),
                pm: pm.per_example[&r.id],
                incomplete_history: incomplete.contains(&r.id),
            });
        }
        let complete_train = pm.missing.is_empty() && !train.is_empty();
        let baselines = run.baselines.get(&step);
        checkpoints.push(CheckpointSummary {
            run: run.name.clone(),
            step,
            pm: pm.pm,
            train_accuracy: complete_train.then_some(pm.train_accuracy),
            test_accuracy: test,
            memorized_fraction: complete_train.then_some(pm.memorized_fraction),
            median_train_perplexity: complete_train
                .then(|| median(train.iter().map(|r| r.target_perplexity).collect()))
                .flatten(),
            grad_variance: baselines.and_then(|b| b.grad_variance),
            distance_from_init: baselines.and_then(|b| b.distance_from_init),
            atc: None,
            train_examples: train.len(),
            test_examples,
            missing_train: pm.missing.len(),
            missing_test,
        });
    }
    for &step in &run.published {
        if !run.baselines.contains_key(&step) {
            limits.push(format!(
                "step {step}: no baseline measurements from the trainer (checkpoint.baselines off?)"
            ));
        }
    }
    let heatmap_ids = heatmap_ids(tracker.states(), options.heatmap_rows);
    Ok(RunAnalysis {
        name: run.name.clone(),
        url: run.url.clone(),
        checkpoints,
        examples,
        heatmap_ids,
        missing,
        limits,
        coverage: coverage(run, &expected_train, &expected_test),
    })
}

/// How many examples the results cover, against the run's own splits when
/// its data files are readable here.
fn coverage(
    run: &RunData,
    expected_train: &BTreeSet<String>,
    expected_test: &BTreeSet<String>,
) -> Coverage {
    let spec = &run.record.spec;
    let train_size = premem_core::Dataset::load(&spec.data.train)
        .ok()
        .map(|d| premem_core::order::subset(d.len(), spec.data.fraction, spec.run.seed).len());
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

/// Examples in order of the step they were first memorized (never: last),
/// then id; evenly thinned to `limit`.
fn heatmap_ids(
    states: &BTreeMap<String, premem_core::pm::ExampleState>,
    limit: usize,
) -> Vec<String> {
    let mut ids: Vec<(&String, u64)> = states
        .iter()
        .map(|(id, s)| (id, s.first_memorized.unwrap_or(u64::MAX)))
        .collect();
    ids.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    let n = ids.len();
    if n <= limit {
        return ids.into_iter().map(|(id, _)| id.clone()).collect();
    }
    (0..limit).map(|k| ids[k * n / limit].0.clone()).collect()
}

fn correlation(metric: Metric, points: Vec<(f64, f64)>) -> MetricCorrelation {
    let identity = metric.accuracy_scale();
    let points: Vec<(f64, f64)> = points
        .into_iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let (x, y): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
    MetricCorrelation {
        metric,
        accuracy_scale: identity,
        r2_identity: if identity { r2_identity(&x, &y) } else { None },
        fit: least_squares(&x, &y),
        pearson: pearson(&x, &y),
        points,
    }
}

/// The test rows' sample confidences of a run at a step, and (correct,
/// samples) counts.
fn test_samples(run: &RunData, step: u64) -> (Vec<f64>, u64, u64) {
    let (mut confidences, mut correct, mut samples) = (vec![], 0u64, 0u64);
    for r in run.rows.get(&step).into_iter().flatten() {
        if r.split == "test" && r.preamble.is_empty() {
            confidences.extend(r.sample_confidences.iter().copied());
            correct += r.n_correct as u64;
            samples += r.samples as u64;
        }
    }
    (confidences, correct, samples)
}

/// The ATC threshold from the test samples of `steps` of a run (pooled);
/// with the pooled accuracy and sample count.
fn atc_fit_on(run: &RunData, steps: &[u64]) -> Option<(f64, f64, usize)> {
    let (mut confidences, mut correct, mut samples) = (vec![], 0, 0);
    for &step in steps {
        let (c, k, n) = test_samples(run, step);
        confidences.extend(c);
        correct += k;
        samples += n;
    }
    if samples == 0 {
        return None;
    }
    let accuracy = correct as f64 / samples as f64;
    Some((
        atc_threshold(&confidences, accuracy)?,
        accuracy,
        confidences.len(),
    ))
}

/// ATC: a threshold fitted on the reference run's complete test checkpoints
/// predicts every other run's; the reference run's own checkpoints each get
/// a threshold fitted on its other checkpoints (leave one out), so no ATC
/// value is fitted on the test labels it is compared with.
fn fit_atc(
    runs: &[RunData],
    analyses: &mut [RunAnalysis],
    reference: Option<&str>,
) -> Result<Option<AtcFit>> {
    let complete = |a: &RunAnalysis| -> Vec<u64> {
        a.checkpoints
            .iter()
            .filter(|c| c.test_accuracy.is_some())
            .map(|c| c.step)
            .collect()
    };
    let index = match reference {
        Some(name) => {
            runs.iter()
                .position(|r| r.name == name)
                .ok_or_else(|| ReportError::Invalid {
                    location: "--atc-reference".into(),
                    message: format!(
                        "no run named '{name}' (runs: {})",
                        runs.iter()
                            .map(|r| r.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?
        }
        None => match analyses.iter().position(|a| !complete(a).is_empty()) {
            Some(i) => i,
            None => return Ok(None),
        },
    };
    let reference_steps = complete(&analyses[index]);
    let Some((threshold, accuracy, samples)) = atc_fit_on(&runs[index], &reference_steps) else {
        return Ok(None);
    };
    for (k, (run, analysis)) in runs.iter().zip(analyses.iter_mut()).enumerate() {
        for c in analysis.checkpoints.iter_mut() {
            if c.test_accuracy.is_none() {
                continue;
            }
            let t = if k == index {
                let others: Vec<u64> = reference_steps
                    .iter()
                    .copied()
                    .filter(|&s| s != c.step)
                    .collect();
                match atc_fit_on(run, &others) {
                    Some((t, _, _)) => t,
                    None => continue,
                }
            } else {
                threshold
            };
            c.atc = atc_predict(&test_samples(run, c.step).0, t);
        }
    }
    Ok(Some(AtcFit {
        reference: runs[index].name.clone(),
        threshold,
        reference_accuracy: accuracy,
        samples,
    }))
}

fn robustness(runs: &[RunData], analyses: &[RunAnalysis], buckets: usize) -> Option<Robustness> {
    let buckets = buckets.max(1);
    let mut preambles = BTreeSet::new();
    let mut checkpoints = vec![];
    // (P-M, base accuracy, accuracy by preamble) per example.
    let mut entries: Vec<(f64, Option<f64>, BTreeMap<String, f64>)> = vec![];
    for (run, analysis) in runs.iter().zip(analyses) {
        let Some((&step, rows)) = run.rows.iter().rev().find(|(_, rows)| {
            rows.iter()
                .any(|r| r.split == "train" && !r.preamble.is_empty())
        }) else {
            continue;
        };
        checkpoints.push((run.name.clone(), step));
        let pm: BTreeMap<&str, f64> = analysis
            .examples
            .iter()
            .filter(|e| e.step == step)
            .map(|e| (e.id.as_str(), e.pm))
            .collect();
        let mut by_id: BTreeMap<&str, (Option<f64>, BTreeMap<String, f64>)> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.split == "train") {
            let entry = by_id.entry(&r.id).or_default();
            if r.preamble.is_empty() {
                entry.0 = Some(r.accuracy);
            } else {
                preambles.insert(r.preamble.clone());
                entry.1.insert(r.preamble.clone(), r.accuracy);
            }
        }
        for (id, (base, with)) in by_id {
            if let Some(&pm) = pm.get(id)
                && !with.is_empty()
            {
                entries.push((pm, base, with));
            }
        }
    }
    if entries.is_empty() {
        return None;
    }
    let preambles: Vec<String> = preambles.into_iter().collect();
    // Only examples with a row for no preamble and for every preamble: each
    // bucket's numbers then average over the same examples.
    entries
        .retain(|(_, base, with)| base.is_some() && preambles.iter().all(|p| with.contains_key(p)));
    if entries.is_empty() {
        return None;
    }
    let mean = |values: Vec<f64>| {
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    let buckets = (0..buckets)
        .map(|b| {
            let (low, high) = (b as f64 / buckets as f64, (b + 1) as f64 / buckets as f64);
            let last = b + 1 == buckets;
            let members: Vec<_> = entries
                .iter()
                .filter(|(pm, _, _)| *pm >= low && (*pm < high || (last && *pm <= high)))
                .collect();
            Bucket {
                low,
                high,
                examples: members.len(),
                base_accuracy: mean(members.iter().filter_map(|(_, base, _)| *base).collect()),
                preamble_accuracy: preambles
                    .iter()
                    .map(|p| {
                        mean(
                            members
                                .iter()
                                .filter_map(|(_, _, w)| w.get(p).copied())
                                .collect(),
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    Some(Robustness {
        checkpoints,
        preambles,
        buckets,
    })
}

pub fn analyze(runs: &[RunData], options: &ReportOptions) -> Result<Analysis> {
    let invalid = |message: String| ReportError::Invalid {
        location: "report options".into(),
        message,
    };
    if runs.is_empty() {
        return Err(invalid("no runs to report on".into()));
    }
    options.grid.validate().map_err(invalid)?;
    if let Some(t) = options.threshold {
        t.validate().map_err(invalid)?;
    }
    let observations: Vec<RunObservations> = runs.iter().map(observations).collect();
    let calibration = calibrate(&observations, &options.grid)?;
    let (threshold, threshold_source) = match (options.threshold, &calibration) {
        (Some(t), _) => (t, ThresholdSource::Given),
        (None, Some(c)) => (Threshold::Perplexity(c.best.p), ThresholdSource::Calibrated),
        (None, None) => (
            Threshold::LogLog(-2.4),
            ThresholdSource::Default(
                "no checkpoint has both complete train and test results to calibrate on".into(),
            ),
        ),
    };
    let mut analyses = runs
        .iter()
        .map(|run| analyze_run(run, threshold, options))
        .collect::<Result<Vec<_>>>()?;
    let atc = fit_atc(runs, &mut analyses, options.atc_reference.as_deref())?;
    let all: Vec<&CheckpointSummary> = analyses.iter().flat_map(|a| &a.checkpoints).collect();
    let correlations: Vec<MetricCorrelation> = Metric::ALL
        .into_iter()
        .map(|metric| {
            let pairs = all
                .iter()
                .filter_map(|c| Some((metric.of(c)?, c.test_accuracy?)))
                .collect();
            correlation(metric, pairs)
        })
        .collect();
    let pm_vs_test = correlations[0].clone();
    let robustness = robustness(runs, &analyses, options.buckets);
    let notes = runs
        .iter()
        .flat_map(|r| r.notes.iter().map(move |n| format!("{}: {n}", r.name)))
        .collect();
    Ok(Analysis {
        threshold,
        threshold_source,
        calibration,
        runs: analyses,
        pm_vs_test,
        correlations,
        atc,
        robustness,
        notes,
        provenance: runs.iter().map(RunProvenance::of).collect(),
    })
}
