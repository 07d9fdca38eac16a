//! The report's charts, one function per chart; each builds the chart's data
//! from the analysis and [`super::plots`] draws it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::Result;
use super::analysis::{
    Analysis, CheckpointSummary, ExampleCheckpoint, Metric, MetricCorrelation, Robustness,
    RunAnalysis,
};
use super::plots::{self, Bars, HeatCell, Heatmap, Lines, Scatter, Series};
use premem_core::science::pm::Calibration;

/// Writes every chart; returns the files.
pub fn write(analysis: &Analysis, out: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![];
    for (run, stem) in analysis.runs.iter().zip(heatmap_stems(analysis)) {
        files.extend(plots::heatmap(&out.join(stem), &heatmap(run))?);
    }
    files.extend(plots::scatter(
        &out.join("pm_vs_test"),
        &pm_vs_test(analysis),
    )?);
    files.extend(plots::scatter_grid(
        &out.join("baselines"),
        "Generalization metrics vs test accuracy",
        &baselines(analysis),
        3,
    )?);
    if let Some(r) = &analysis.robustness {
        files.extend(plots::bars(&out.join("robustness"), &robustness(r))?);
    }
    if let Some(c) = &analysis.calibration {
        files.extend(plots::lines(
            &out.join("calibration"),
            &calibration(analysis, c),
        )?);
    }
    files.extend(plots::lines(&out.join("training"), &training(analysis))?);
    Ok(files)
}

/// A run name as part of a file name.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The heatmap file stem of each run, unique even where run names differ
/// only in characters a file name cannot keep.
pub(crate) fn heatmap_stems(analysis: &Analysis) -> Vec<String> {
    let stems: Vec<String> = analysis
        .runs
        .iter()
        .map(|r| format!("heatmap-{}", file_safe(&r.name)))
        .collect();
    stems
        .iter()
        .enumerate()
        .map(|(i, stem)| {
            if stems.iter().filter(|s| *s == stem).count() > 1 {
                format!("{stem}-{}", i + 1)
            } else {
                stem.clone()
            }
        })
        .collect()
}

/// A run's learning progression: its heatmap examples by its checkpoints.
fn heatmap(run: &RunAnalysis) -> Heatmap {
    let steps: Vec<u64> = run.checkpoints.iter().map(|c| c.step).collect();
    let by_key: HashMap<(u64, &str), &ExampleCheckpoint> = run
        .examples
        .iter()
        .map(|e| ((e.step, e.id.as_str()), e))
        .collect();
    let cells = run
        .heatmap_ids
        .iter()
        .map(|id| {
            steps
                .iter()
                .map(|&step| {
                    by_key.get(&(step, id.as_str())).map(|e| HeatCell {
                        accuracy: e.accuracy,
                        memorized: e.memorized,
                    })
                })
                .collect()
        })
        .collect();
    let total = run
        .examples
        .iter()
        .map(|e| e.id.as_str())
        .collect::<BTreeSet<_>>()
        .len();
    let shown = run.heatmap_ids.len();
    Heatmap {
        title: format!(
            "Learning progression: {} ({shown} of {total} train examples)",
            run.name
        ),
        rows: run.heatmap_ids.clone(),
        steps,
        cells,
    }
}

/// Per run, (metric, test accuracy) at every checkpoint that has both.
fn against_test(analysis: &Analysis, metric: Metric) -> Vec<Series> {
    analysis
        .runs
        .iter()
        .map(|run| Series {
            label: run.name.clone(),
            points: run
                .checkpoints
                .iter()
                .filter_map(|c| Some((metric.of(c)?, c.test_accuracy?)))
                .collect(),
        })
        .collect()
}

fn fit_notes(c: &MetricCorrelation) -> Vec<String> {
    let mut notes = vec![];
    if let Some(r2) = c.out_of_sample.as_ref().and_then(|o| o.r2) {
        notes.push(format!("R² out of sample: {r2:.3}"));
    }
    if let Some(r2) = c.r2_identity {
        notes.push(format!("in sample, R² vs y = x: {r2:.3}"));
    }
    if let Some(fit) = c.fit {
        notes.push(format!("in sample, least-squares R²: {:.3}", fit.r2));
    }
    notes.push(format!("{} checkpoints", c.points.len()));
    notes
}

fn pm_vs_test(analysis: &Analysis) -> Scatter {
    let pm = &analysis.pm_vs_test;
    let mut notes = fit_notes(pm);
    notes.push(format!("p: {}", analysis.threshold));
    Scatter {
        title: "P-M train accuracy vs test accuracy".into(),
        x_label: "P-M train accuracy".into(),
        y_label: "test accuracy".into(),
        series: against_test(analysis, Metric::Pm),
        identity: true,
        fit: pm.fit.map(|f| (f.slope, f.intercept)),
        notes,
        x_range: Some((0.0, 1.0)),
        y_range: Some((0.0, 1.0)),
    }
}

/// One panel per metric compared with test accuracy, P-M first.
fn baselines(analysis: &Analysis) -> Vec<Scatter> {
    analysis
        .correlations
        .iter()
        .map(|c| {
            let accuracy_scale = c.accuracy_scale;
            let mut notes = fit_notes(c);
            if let Some(r) = c.pearson {
                notes.push(format!("Pearson r: {r:.3}"));
            }
            Scatter {
                title: format!("{} vs test", c.metric),
                x_label: c.metric.to_string(),
                y_label: "test accuracy".into(),
                series: against_test(analysis, c.metric),
                identity: accuracy_scale,
                fit: c.fit.map(|f| (f.slope, f.intercept)),
                notes,
                x_range: accuracy_scale.then_some((0.0, 1.0)),
                y_range: Some((0.0, 1.0)),
            }
        })
        .collect()
}

fn robustness(r: &Robustness) -> Bars {
    let mut series = vec![(
        "no preamble".to_string(),
        r.buckets.iter().map(|b| b.base_accuracy).collect(),
    )];
    for (k, preamble) in r.preambles.iter().enumerate() {
        series.push((
            format!("preamble \"{preamble}\""),
            r.buckets.iter().map(|b| b.preamble_accuracy[k]).collect(),
        ));
    }
    Bars {
        title: "Accuracy under preambles by P-M accuracy".into(),
        x_label: "per-example P-M train accuracy".into(),
        y_label: "train accuracy".into(),
        categories: r
            .buckets
            .iter()
            .map(|b| format!("{:.1}–{:.1}", b.low, b.high))
            .collect(),
        counts: r.buckets.iter().map(|b| b.examples).collect(),
        series,
    }
}

fn calibration(analysis: &Analysis, c: &Calibration) -> Lines {
    Lines {
        title: "Calibration of the memorization threshold p".into(),
        x_label: "p on the ln(ln perplexity) scale".into(),
        y_label: "mean squared error, test − P-M".into(),
        log_x: false,
        series: vec![Series {
            label: format!("{} checkpoints", c.checkpoints_used),
            points: c.curve.iter().map(|p| (p.loglog, p.mse)).collect(),
        }],
        marker: Some((
            analysis.threshold.loglog(),
            format!(
                "p = {:.4} (ln ln {:.2})",
                analysis.threshold.perplexity(),
                analysis.threshold.loglog()
            ),
        )),
        bars: vec![],
    }
}

/// P-M, test and train accuracy over the checkpoints of every run.
fn training(analysis: &Analysis) -> Lines {
    let mut series = vec![];
    for run in &analysis.runs {
        let prefix = if analysis.runs.len() > 1 {
            format!("{}: ", run.name)
        } else {
            String::new()
        };
        let points = |f: fn(&CheckpointSummary) -> Option<f64>| {
            run.checkpoints
                .iter()
                .filter_map(|c| Some((c.step as f64, f(c)?)))
                .collect()
        };
        series.push(Series {
            label: format!("{prefix}P-M train accuracy"),
            points: points(|c| c.pm),
        });
        series.push(Series {
            label: format!("{prefix}test accuracy"),
            points: points(|c| c.test_accuracy),
        });
        series.push(Series {
            label: format!("{prefix}train accuracy"),
            points: points(|c| c.train_accuracy),
        });
    }
    Lines {
        title: "Accuracy over training".into(),
        x_label: "checkpoint step".into(),
        y_label: "accuracy".into(),
        log_x: false,
        series,
        marker: None,
        bars: vec![],
    }
}
