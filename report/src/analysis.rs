//! From loaded runs to the numbers of a report: the threshold (given or
//! calibrated) and P-M and the baselines against test accuracy here; per run
//! P-M accuracy per example and checkpoint and the checkpoint summaries
//! (`run.rs`), ATC (`atc.rs`), the robustness view (`robustness.rs`), what
//! limits the fit (`limits.rs`), and warnings of suspect rows (`warnings.rs`).

mod advice;
mod atc;
mod limits;
mod robustness;
mod run;
mod warnings;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use premem_core::baselines::pearson;
use premem_core::crossval::{OutOfSample, linear_by_run, pm_out_of_sample, untuned};
use premem_core::pm::{
    Calibration, Grid, LinearFit, RunObservations, Threshold, calibrate, least_squares, r2_identity,
};

pub use atc::AtcFit;
pub use limits::{AfterMemorization, Limits, MEMORIZED};
pub use robustness::{Bucket, Robustness};
pub use run::{CheckpointSummary, Coverage, ExampleCheckpoint, RunAnalysis};

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
    /// ([`premem_core::crossval`]): P-M at a threshold calibrated on the
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
    pub sweep_advice: Option<premem_core::advice::SweepAdvice>,
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
    })
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
