//! Average Thresholded Confidence: a confidence threshold fitted on one run's
//! test samples predicts test accuracy at every checkpoint, never from the
//! labels it is compared with.

use serde::Serialize;

use premem_core::science::baselines::{atc_predict, atc_threshold};

use super::run::RunAnalysis;
use crate::load::RunData;
use crate::{ReportError, Result};

#[derive(Clone, Debug, Serialize)]
pub struct AtcFit {
    pub reference: String,
    pub threshold: f64,
    /// Pooled test accuracy and samples of the reference run.
    pub reference_accuracy: f64,
    pub samples: usize,
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

/// The test checkpoints of a run with complete results.
fn complete_steps(a: &RunAnalysis) -> Vec<u64> {
    a.checkpoints
        .iter()
        .filter(|c| c.test_accuracy.is_some())
        .map(|c| c.step)
        .collect()
}

/// ATC: a threshold fitted on the reference run's complete test checkpoints
/// predicts every other run's; the reference run's own checkpoints each get
/// a threshold fitted on its other checkpoints (leave one out), so no ATC
/// value is fitted on the test labels it is compared with.
pub(super) fn fit_atc(
    runs: &[RunData],
    analyses: &mut [RunAnalysis],
    reference: Option<&str>,
) -> Result<Option<AtcFit>> {
    let Some(index) = reference_index(runs, analyses, reference)? else {
        return Ok(None);
    };
    let reference_steps = complete_steps(&analyses[index]);
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

/// The reference run: the one named, else the first with complete test
/// results (`None`: no run has any).
fn reference_index(
    runs: &[RunData],
    analyses: &[RunAnalysis],
    reference: Option<&str>,
) -> Result<Option<usize>> {
    let Some(name) = reference else {
        return Ok(analyses.iter().position(|a| !complete_steps(a).is_empty()));
    };
    let index = runs
        .iter()
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
        })?;
    Ok(Some(index))
}
