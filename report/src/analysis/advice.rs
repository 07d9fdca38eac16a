//! The advice ([`premem_core::science::advice`]) on each run's checkpoints, from its
//! result files with the report's threshold, under the run's own
//! `[advice]` settings; over a sweep, the settings that avoid
//! over-memorization; and why a run stopped early, when it did.

use premem_core::data::results::ExampleResult;
use premem_core::science::advice::{
    Advice, CheckpointView, RunAdvice, SweepAdvice, advise, advise_sweep,
};

use super::run::{CheckpointSummary, RunAnalysis, base_rows};
use crate::load::RunData;

/// A run's advice as the report shows it.
#[derive(Clone, Debug)]
pub struct RunAdviceReport {
    pub run: String,
    pub advice: Advice,
    /// Why `[advice] stop_when` stopped the run, and at which step.
    pub early_stop: Option<String>,
}

/// Every run's advice, and the sweep's when there are two runs or more.
pub fn advice(
    runs: &[RunData],
    analyses: &[RunAnalysis],
) -> (Vec<RunAdviceReport>, Option<SweepAdvice>) {
    let reports: Vec<RunAdviceReport> = runs
        .iter()
        .zip(analyses)
        .map(|(run, analysis)| RunAdviceReport {
            run: run.name.clone(),
            advice: advise(&run.record.spec.advice, &views(run, &analysis.checkpoints)),
            early_stop: run.early_stop.as_ref().map(|e| match e.stopped_at_step {
                Some(step) => format!("training stopped at step {step}, {}", e.reason),
                None => format!(
                    "asked to stop after checkpoint {}: {}",
                    e.checkpoint, e.reason
                ),
            }),
        })
        .collect();
    let sweep = (runs.len() >= 2).then(|| {
        let runs: Vec<RunAdvice> = runs
            .iter()
            .zip(analyses)
            .zip(&reports)
            .map(|((run, analysis), report)| RunAdvice {
                run: run.name.clone(),
                lr: run.record.spec.train.lr,
                epochs: run.record.spec.train.epochs,
                advice: report.advice.clone(),
                final_test_accuracy: analysis
                    .checkpoints
                    .iter()
                    .rev()
                    .find_map(|c| c.test_accuracy),
            })
            .collect();
        advise_sweep(&runs)
    });
    (reports, sweep)
}

/// The checkpoints as the advice sees them: the report's P-M and
/// accuracies, the mean test perplexity and sample diversity where every
/// test row is there.
fn views(run: &RunData, checkpoints: &[CheckpointSummary]) -> Vec<CheckpointView> {
    let empty = vec![];
    checkpoints
        .iter()
        .map(|c| {
            let rows = run.rows.get(&c.step).unwrap_or(&empty);
            let test: Vec<&ExampleResult> = base_rows(rows, "test").collect();
            let complete = c.test_accuracy.is_some() && !test.is_empty();
            CheckpointView {
                step: c.step,
                pm: c.pm,
                train_accuracy: c.train_accuracy,
                test_accuracy: c.test_accuracy,
                test_perplexity: complete.then(|| mean(test.iter().map(|r| r.target_perplexity))),
                distinct_fraction: complete.then(|| distinct(&test)).flatten(),
            }
        })
        .collect()
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n.max(1) as f64
}

/// Mean distinct samples over samples, when every row says.
fn distinct(rows: &[&ExampleResult]) -> Option<f64> {
    let fractions: Option<Vec<f64>> = rows
        .iter()
        .map(|r| {
            r.distinct_samples
                .map(|d| f64::from(d) / f64::from(r.samples.max(1)))
        })
        .collect();
    fractions.map(|f| mean(f.into_iter()))
}
