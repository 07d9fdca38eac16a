//! From loaded runs to the numbers of a report: the threshold (given or
//! calibrated) and P-M and the baselines against test accuracy here; per run
//! P-M accuracy per example and checkpoint and the checkpoint summaries
//! (`run.rs`), ATC (`atc.rs`), the robustness view (`robustness.rs`), what
//! limits the fit (`limits.rs`), and warnings of suspect rows (`warnings.rs`).

mod advice;
mod atc;
pub mod gates;
mod limits;
mod robustness;
mod run;
pub mod task;
mod warnings;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use premem_core::science::baselines::pearson;
use premem_core::science::crossval::{OutOfSample, linear_by_run, pm_out_of_sample, untuned};
use premem_core::science::pm::{
    Calibration, Grid, LinearFit, RunObservations, Threshold, calibrate, least_squares, r2_identity,
};

pub use atc::AtcFit;
pub use gates::Gates;
pub use limits::{AfterMemorization, Limits, MEMORIZED};
pub use robustness::{Bucket, Robustness};
pub use run::{CheckpointSummary, Coverage, ExampleCheckpoint, RunAnalysis};
pub use task::{Base, RunFamilies};

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
    /// R² on checkpoints the predictor was not tuned on
    /// ([`premem_core::science::crossval`]): P-M at a threshold calibrated on the
    /// other folds; a baseline through a line fitted on the other folds.
    pub out_of_sample: Option<OutOfSample>,
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
    /// What limits P-M's out-of-sample fit (sweeps of three runs or more).
    pub limits: Option<Limits>,
    /// Notes from loading (unreadable side files, orphan results).
    pub notes: Vec<String>,
    /// What makes the numbers suspect (rows of non-finite perplexity), one
    /// line each; shown first.
    pub warnings: Vec<String>,
    /// Per run, in report order: what it was made with.
    pub provenance: Vec<RunProvenance>,
    /// Per run: the advice on its checkpoints, and its early stop.
    pub advice: Vec<advice::RunAdviceReport>,
    /// Over two runs or more: which over-memorized, which settings to prefer.
    pub sweep_advice: Option<premem_core::science::advice::SweepAdvice>,
    /// The task and the base model the runs start from.
    pub task: TaskReport,
}

/// The share of a checkpoint's train examples memorized from which the
/// report also scores P-M on those checkpoints alone.
pub const MOSTLY_MEMORIZED: f64 = 0.5;

/// What the report knows of the task and the base: the perfect solver's
/// perplexity per split and family (`synth.json` beside the data), the
/// base (`model.base`) and its SHA-256, the protocol's gates, P-M and test
/// accuracy per family, and P-M's fit where most of the train set is
/// memorized (where P-M differs from plain train accuracy).
#[derive(Clone, Debug, Serialize)]
pub struct TaskReport {
    pub perfect_solver: Option<BTreeMap<String, Vec<premem_core::data::synth::FamilyPerplexity>>>,
    pub base: Option<BaseSummary>,
    pub gates: Gates,
    pub families: Vec<RunFamilies>,
    pub memorized_fit: Option<MemorizedFit>,
}

/// The base model as the report names it.
#[derive(Clone, Debug, Serialize)]
pub struct BaseSummary {
    pub path: String,
    pub sha256: Option<String>,
    /// The premem run and step it is a checkpoint of.
    pub run: Option<(String, u64)>,
}

impl BaseSummary {
    fn of(base: &Base) -> BaseSummary {
        BaseSummary {
            path: base.path.clone(),
            sha256: base.sha256.clone(),
            run: base.run.as_ref().map(|(r, step)| (r.name.clone(), *step)),
        }
    }
}

/// P-M against test accuracy on the checkpoints with at least
/// [`MOSTLY_MEMORIZED`] of their train examples memorized at the report's p.
#[derive(Clone, Debug, Serialize)]
pub struct MemorizedFit {
    pub checkpoints: usize,
    /// Against y = x, at the report's p.
    pub in_sample: Option<f64>,
    /// The out-of-sample predictions of those checkpoints (each with p
    /// calibrated without its run), pooled.
    pub out_of_sample: Option<f64>,
}

/// [`MemorizedFit`] from the runs' checkpoints and P-M's correlation (whose
/// points and held-out predictions follow the runs' checkpoints with both
/// values, in order).
fn memorized_fit(analyses: &[RunAnalysis], pm: &MetricCorrelation) -> Option<MemorizedFit> {
    let mostly: Vec<bool> = analyses
        .iter()
        .flat_map(|a| &a.checkpoints)
        .filter(|c| c.pm.is_some() && c.test_accuracy.is_some())
        .map(|c| c.memorized_fraction.is_some_and(|m| m >= MOSTLY_MEMORIZED))
        .collect();
    if mostly.len() != pm.points.len() || !mostly.contains(&true) {
        return None;
    }
    let pick = |points: &[(f64, f64)]| -> Vec<(f64, f64)> {
        points
            .iter()
            .zip(&mostly)
            .filter(|(_, m)| **m)
            .map(|(p, _)| *p)
            .collect()
    };
    let r2 = |points: Vec<(f64, f64)>| {
        let (x, y): (Vec<f64>, Vec<f64>) = points.into_iter().unzip();
        r2_identity(&x, &y)
    };
    let held_out = pm
        .out_of_sample
        .as_ref()
        .filter(|o| o.predictions.len() == mostly.len())
        .map(|o| pick(&o.predictions));
    Some(MemorizedFit {
        checkpoints: mostly.iter().filter(|m| **m).count(),
        in_sample: r2(pick(&pm.points)),
        out_of_sample: held_out.and_then(r2),
    })
}

/// `metric` against test accuracy over `points` (run index, metric, test);
/// a baseline's out-of-sample R² through a line fitted on the other folds.
fn correlation(metric: Metric, points: Vec<(usize, f64, f64)>) -> MetricCorrelation {
    let identity = metric.accuracy_scale();
    let keyed: Vec<(usize, f64, f64)> = points
        .into_iter()
        .filter(|(_, x, y)| x.is_finite() && y.is_finite())
        .collect();
    let runs: Vec<usize> = keyed.iter().map(|p| p.0).collect();
    let points: Vec<(f64, f64)> = keyed.iter().map(|&(_, x, y)| (x, y)).collect();
    let (x, y): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
    MetricCorrelation {
        metric,
        accuracy_scale: identity,
        r2_identity: if identity { r2_identity(&x, &y) } else { None },
        fit: least_squares(&x, &y),
        pearson: pearson(&x, &y),
        out_of_sample: (metric != Metric::Pm && !points.is_empty())
            .then(|| linear_by_run(&runs, &x, &y)),
        points,
    }
}

/// P-M's out-of-sample R²: with a calibrated threshold, calibrated again
/// without each fold; with a given one, nothing was tuned.
fn pm_out_of_sample_of(
    source: &ThresholdSource,
    observations: &[RunObservations],
    grid: &Grid,
    pm: &MetricCorrelation,
) -> Result<Option<OutOfSample>> {
    Ok(match source {
        ThresholdSource::Calibrated => pm_out_of_sample(observations, grid)?,
        _ if pm.points.is_empty() => None,
        _ => Some(untuned(pm.points.clone())),
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
    let observations: Vec<RunObservations> = runs.iter().map(run::observations).collect();
    let calibration = calibrate(&observations, &options.grid)?;
    let (threshold, threshold_source) = threshold(options.threshold, calibration.as_ref());
    let mut analyses = runs
        .iter()
        .map(|run| run::analyze_run(run, threshold, options))
        .collect::<Result<Vec<_>>>()?;
    let atc = atc::fit_atc(runs, &mut analyses, options.atc_reference.as_deref())?;
    let mut correlations = correlations(&analyses);
    correlations[0].out_of_sample = pm_out_of_sample_of(
        &threshold_source,
        &observations,
        &options.grid,
        &correlations[0],
    )?;
    let robustness = robustness::robustness(runs, &analyses, options.buckets);
    let samples: BTreeSet<u32> = analyses
        .iter()
        .flat_map(|a| a.coverage.samples_per_example.iter().copied())
        .collect();
    let samples: Vec<u32> = samples.into_iter().collect();
    let limits = limits::limits(runs, &analyses, &observations, &options.grid, &samples)?;
    let notes = runs
        .iter()
        .flat_map(|r| r.notes.iter().map(move |n| format!("{}: {n}", r.name)))
        .collect();
    let (advice, sweep_advice) = advice::advice(runs, &analyses);
    let task = task_report(runs, &analyses, &correlations[0]);
    Ok(Analysis {
        threshold,
        threshold_source,
        calibration,
        runs: analyses,
        pm_vs_test: correlations[0].clone(),
        correlations,
        atc,
        robustness,
        limits,
        notes,
        warnings: warnings::non_finite_perplexities(runs),
        provenance: runs.iter().map(RunProvenance::of).collect(),
        advice,
        sweep_advice,
        task,
    })
}

fn task_report(runs: &[RunData], analyses: &[RunAnalysis], pm: &MetricCorrelation) -> TaskReport {
    let base = task::base_of(runs);
    let data = &runs[0].record.spec.data;
    TaskReport {
        perfect_solver: data
            .test
            .as_ref()
            .and_then(task::perfect_solver)
            .or_else(|| task::perfect_solver(&data.train)),
        base: base.as_ref().map(BaseSummary::of),
        gates: gates::gates(runs, base.as_ref()),
        families: task::run_families(runs, analyses),
        memorized_fit: memorized_fit(analyses, pm),
    }
}

/// The threshold given, else the calibrated one, else the authors' GSM8K
/// value.
fn threshold(
    given: Option<Threshold>,
    calibration: Option<&Calibration>,
) -> (Threshold, ThresholdSource) {
    match (given, calibration) {
        (Some(t), _) => (t, ThresholdSource::Given),
        (None, Some(c)) => (Threshold::Perplexity(c.best.p), ThresholdSource::Calibrated),
        (None, None) => (
            Threshold::LogLog(-2.4),
            ThresholdSource::Default(
                "no checkpoint has both complete train and test results to calibrate on".into(),
            ),
        ),
    }
}

/// Every metric of [`Metric::ALL`] against test accuracy, over every
/// checkpoint with both.
fn correlations(analyses: &[RunAnalysis]) -> Vec<MetricCorrelation> {
    let all: Vec<(usize, &CheckpointSummary)> = analyses
        .iter()
        .enumerate()
        .flat_map(|(run, a)| a.checkpoints.iter().map(move |c| (run, c)))
        .collect();
    Metric::ALL
        .into_iter()
        .map(|metric| {
            let pairs = all
                .iter()
                .filter_map(|(run, c)| Some((*run, metric.of(c)?, c.test_accuracy?)))
                .collect();
            correlation(metric, pairs)
        })
        .collect()
}
