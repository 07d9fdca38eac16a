//! What limits P-M accuracy's out-of-sample fit to test accuracy, measured
//! on the report's own results: the noise of the test accuracies it is
//! scored against, and the noise of P-M itself from the few samples (K) and
//! train examples it averages, and how far test accuracy still moves after
//! the train set is memorized (P-M, frozen by then, cannot follow). Shown for sweeps (three runs or more), where
//! the fit is scored leave-one-run-out.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use premem_core::science::crossval::pm_out_of_sample;
use premem_core::science::pm::{Grid, RunObservations};

use super::run::{RunAnalysis, base_rows, median};
use crate::Result;
use crate::load::RunData;

/// Fewest runs for the limits view.
pub const MIN_RUNS: usize = 3;

/// A run's train set counts as memorized from the first checkpoint with at
/// least this fraction of its examples memorized.
pub const MEMORIZED: f64 = 0.9;

/// The fractions of the train examples P-M is recomputed on.
const EXAMPLE_FRACTIONS: [f64; 3] = [0.25, 0.5, 1.0];

/// Checkpoint spacings P-M is recomputed with.
const SPACINGS: [usize; 3] = [1, 2, 4];

#[derive(Clone, Debug, Serialize)]
pub struct Limits {
    /// Checkpoints with a complete test split.
    pub checkpoints: usize,
    /// Standard error of a checkpoint's test accuracy (the spread of the
    /// per-problem accuracies over √problems): median and largest.
    pub test_se_median: f64,
    pub test_se_max: f64,
    /// Variance of the test accuracies over the checkpoints.
    pub test_variance: f64,
    /// 1 − mean(SE²) / variance: the R² that the true test accuracy itself
    /// would reach against the measured ones, the ceiling of any predictor.
    pub ceiling: Option<f64>,
    /// (k, out-of-sample R² of P-M from k of each train example's K
    /// samples), k ascending up to K.
    pub by_samples: Vec<(u32, Option<f64>)>,
    /// (fraction of the train examples, out-of-sample R² of P-M over
    /// them), ascending up to 1.
    pub by_examples: Vec<(f64, Option<f64>)>,
    /// (n, out-of-sample R² of P-M when only every n-th checkpoint of each
    /// run, counted back from its last, is evaluated), n ascending from 1.
    pub by_spacing: Vec<(usize, Option<f64>)>,
    /// Per run whose train set gets memorized: P-M and test accuracy then
    /// and at its last checkpoint.
    pub after_memorization: Vec<AfterMemorization>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AfterMemorization {
    pub run: String,
    /// The first checkpoint with at least [`MEMORIZED`] of the train
    /// examples memorized, and the last checkpoint.
    pub step: u64,
    pub last_step: u64,
    pub pm: f64,
    pub last_pm: f64,
    pub test: f64,
    pub last_test: f64,
}

/// The limits view; `None` with fewer than [`MIN_RUNS`] runs, with rows of
/// several K, or with under two complete test splits.
pub(super) fn limits(
    runs: &[RunData],
    analyses: &[RunAnalysis],
    observations: &[RunObservations],
    grid: &Grid,
    samples: &[u32],
) -> Result<Option<Limits>> {
    let &[k_max] = samples else { return Ok(None) };
    if runs.len() < MIN_RUNS {
        return Ok(None);
    }
    let errors: Vec<(f64, f64)> = runs.iter().flat_map(test_errors).collect();
    if errors.len() < 2 {
        return Ok(None);
    }
    let (accuracies, se): (Vec<f64>, Vec<f64>) = errors.into_iter().unzip();
    let variance = variance(&accuracies);
    let mean_sq = se.iter().map(|s| s * s).sum::<f64>() / se.len() as f64;
    let r2 = |obs: &[RunObservations]| -> Result<Option<f64>> {
        Ok(pm_out_of_sample(obs, grid)?.and_then(|o| o.r2))
    };
    let mut by_samples = vec![];
    for k in halvings(k_max) {
        by_samples.push((k, r2(&thin_samples(observations, k_max, k))?));
    }
    let mut by_examples = vec![];
    for fraction in EXAMPLE_FRACTIONS {
        by_examples.push((fraction, r2(&thin_examples(observations, fraction))?));
    }
    let mut by_spacing = vec![];
    for every in SPACINGS {
        by_spacing.push((every, r2(&thin_checkpoints(observations, every))?));
    }
    Ok(Some(Limits {
        checkpoints: se.len(),
        test_se_median: median(se.clone()).expect("two checkpoints or more"),
        test_se_max: se.iter().copied().fold(0.0, f64::max),
        test_variance: variance,
        ceiling: (variance > 0.0).then(|| 1.0 - mean_sq / variance),
        by_samples,
        by_examples,
        by_spacing,
        after_memorization: analyses.iter().filter_map(after_memorization).collect(),
    }))
}

/// P-M and test accuracy when the run's train set is first memorized and at
/// its last checkpoint with both.
fn after_memorization(run: &RunAnalysis) -> Option<AfterMemorization> {
    let with_both = || {
        run.checkpoints
            .iter()
            .filter_map(|c| Some((c, c.pm?, c.test_accuracy?)))
    };
    let (first, pm, test) = with_both().find(|(c, ..)| c.memorized_fraction >= Some(MEMORIZED))?;
    let (last, last_pm, last_test) = with_both().next_back()?;
    Some(AfterMemorization {
        run: run.name.clone(),
        step: first.step,
        last_step: last.step,
        pm,
        last_pm,
        test,
        last_test,
    })
}

/// 1, 2, 4, … below `k`, then `k`.
fn halvings(k: u32) -> Vec<u32> {
    let mut ks: Vec<u32> = std::iter::successors(Some(1u32), |n| n.checked_mul(2))
        .take_while(|&n| n < k)
        .collect();
    ks.push(k);
    ks
}

/// Per checkpoint with test rows: (test accuracy, its standard error), the
/// error from the per-problem accuracies' sample variance.
fn test_errors(run: &RunData) -> Vec<(f64, f64)> {
    run.rows
        .values()
        .filter_map(|rows| {
            let by_id: BTreeMap<&str, f64> = base_rows(rows, "test")
                .map(|r| (r.id.as_str(), r.accuracy))
                .collect();
            let values: Vec<f64> = by_id.into_values().collect();
            let n = values.len();
            (n >= 2).then(|| {
                let mean = values.iter().sum::<f64>() / n as f64;
                let sample_var = variance(&values) * n as f64 / (n - 1) as f64;
                (mean, (sample_var / n as f64).sqrt())
            })
        })
        .collect()
}

/// Population variance.
fn variance(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n
}

/// Every train accuracy as if only `k` of its `k_max` samples had been
/// drawn: the correct ones among `k` drawn without replacement from the
/// `k_max` (a fixed seed per `k`, so the view is reproducible).
fn thin_samples(observations: &[RunObservations], k_max: u32, k: u32) -> Vec<RunObservations> {
    let mut rng = ChaCha8Rng::seed_from_u64(u64::from(k));
    let mut thinned = observations.to_vec();
    for checkpoint in thinned.iter_mut().flat_map(|r| r.checkpoints.iter_mut()) {
        for (_, observation) in &mut checkpoint.train {
            let correct = (observation.accuracy * f64::from(k_max)).round() as u32;
            observation.accuracy = f64::from(draw(&mut rng, k_max, correct, k)) / f64::from(k);
        }
    }
    thinned
}

/// Successes among `k` draws without replacement from `total` items of
/// which `good` are successes.
pub(super) fn draw(rng: &mut impl Rng, total: u32, good: u32, k: u32) -> u32 {
    let (mut left, mut good_left, mut hits) = (total, good.min(total), 0);
    for _ in 0..k.min(total) {
        if rng.random_range(0..left) < good_left {
            hits += 1;
            good_left -= 1;
        }
        left -= 1;
    }
    hits
}

/// P-M over every n-th train example (by id) only, n = 1 / `fraction`.
fn thin_examples(observations: &[RunObservations], fraction: f64) -> Vec<RunObservations> {
    let every = (1.0 / fraction).round().max(1.0) as usize;
    let mut thinned = observations.to_vec();
    for checkpoint in thinned.iter_mut().flat_map(|r| r.checkpoints.iter_mut()) {
        checkpoint.train.sort_by(|a, b| a.0.cmp(&b.0));
        checkpoint.train = std::mem::take(&mut checkpoint.train)
            .into_iter()
            .step_by(every)
            .collect();
    }
    thinned
}

/// Every `every`-th checkpoint of each run, counted back from its last,
/// as if only those had been evaluated.
fn thin_checkpoints(observations: &[RunObservations], every: usize) -> Vec<RunObservations> {
    let mut thinned = observations.to_vec();
    for run in &mut thinned {
        let n = run.checkpoints.len();
        run.checkpoints = std::mem::take(&mut run.checkpoints)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| (n - 1 - i) % every == 0)
            .map(|(_, c)| c)
            .collect();
    }
    thinned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_without_replacement_keep_the_mean_and_the_bounds() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // All or none correct: every draw is certain.
        assert_eq!(draw(&mut rng, 8, 8, 3), 3);
        assert_eq!(draw(&mut rng, 8, 0, 3), 0);
        // Drawing all K gives back the count.
        assert_eq!(draw(&mut rng, 8, 5, 8), 5);
        // Hypergeometric mean k·good/total = 2 · 3/8 = 0.75.
        let n = 40_000;
        let mean = (0..n).map(|_| draw(&mut rng, 8, 3, 2)).sum::<u32>() as f64 / n as f64;
        assert!((mean - 0.75).abs() < 0.02, "{mean}");
        // P(both of 2 draws hit) = 3/8 · 2/7.
        let both = (0..n).filter(|_| draw(&mut rng, 8, 3, 2) == 2).count() as f64 / n as f64;
        assert!((both - 3.0 / 28.0).abs() < 0.01, "{both}");
    }

    #[test]
    fn k_halves_down_to_one() {
        assert_eq!(halvings(8), vec![1, 2, 4, 8]);
        assert_eq!(halvings(5), vec![1, 2, 4, 5]);
        assert_eq!(halvings(1), vec![1]);
    }

    use premem_core::science::pm::{CheckpointObservations, Observation};

    fn observations(accuracies: &[f64]) -> Vec<RunObservations> {
        let train = accuracies
            .iter()
            .enumerate()
            .map(|(i, &accuracy)| {
                let observation = Observation {
                    accuracy,
                    perplexity: 2.0,
                };
                (format!("e{i}"), observation)
            })
            .collect();
        vec![RunObservations {
            name: "r".into(),
            checkpoints: vec![CheckpointObservations {
                step: 1,
                train,
                test_accuracy: Some(0.5),
            }],
        }]
    }

    fn accuracies(runs: &[RunObservations]) -> Vec<f64> {
        runs[0].checkpoints[0]
            .train
            .iter()
            .map(|(_, o)| o.accuracy)
            .collect()
    }

    #[test]
    fn thinning_to_all_samples_changes_nothing_and_to_one_gives_zero_or_one() {
        let obs = observations(&[0.0, 0.25, 0.5, 0.875, 1.0]);
        assert_eq!(accuracies(&thin_samples(&obs, 8, 8)), accuracies(&obs));
        let one = accuracies(&thin_samples(&obs, 8, 1));
        assert!(one.iter().all(|&a| a == 0.0 || a == 1.0), "{one:?}");
        assert_eq!((one[0], one[4]), (0.0, 1.0));
    }

    #[test]
    fn thinning_examples_keeps_every_nth_by_id() {
        let obs = observations(&[0.1, 0.2, 0.3, 0.4, 0.5]);
        let ids = |runs: &[RunObservations]| -> Vec<String> {
            runs[0].checkpoints[0]
                .train
                .iter()
                .map(|(id, _)| id.clone())
                .collect()
        };
        assert_eq!(ids(&thin_examples(&obs, 0.5)), ["e0", "e2", "e4"]);
        assert_eq!(ids(&thin_examples(&obs, 0.25)), ["e0", "e4"]);
        assert_eq!(thin_examples(&obs, 1.0)[0].checkpoints[0].train.len(), 5);
    }

    #[test]
    fn thinning_checkpoints_keeps_every_nth_back_from_the_last() {
        let mut obs = observations(&[0.5]);
        let one = obs[0].checkpoints[0].clone();
        obs[0].checkpoints = (1..=5)
            .map(|step| CheckpointObservations {
                step,
                ..one.clone()
            })
            .collect();
        let steps = |runs: &[RunObservations]| -> Vec<u64> {
            runs[0].checkpoints.iter().map(|c| c.step).collect()
        };
        assert_eq!(steps(&thin_checkpoints(&obs, 1)), [1, 2, 3, 4, 5]);
        assert_eq!(steps(&thin_checkpoints(&obs, 2)), [1, 3, 5]);
        assert_eq!(steps(&thin_checkpoints(&obs, 4)), [1, 5]);
    }

    /// Three runs of two checkpoints; the six test splits of four problems
    /// and their hand-computed standard errors: [0, .5, 1, .5] mean .5,
    /// SE² = (1/6)/4; [0, 0, 0, .5] mean .125, SE² = .0625/4; [1, 1, 1, 1],
    /// [.5; 4] and [0; 4] SE 0; [0, 1, 0, 1] mean .5, SE² = (1/3)/4. Means
    /// .5, .125, 1, .5, 0, .5: variance .6171875/6; mean SE² = .140625/6;
    /// ceiling 1 − .140625/.6171875.
    #[test]
    fn the_test_noise_and_its_ceiling_match_hand_computed_values() {
        use crate::analysis::{ReportOptions, analyze};
        use crate::test_runs::{row, run};
        let splits: [[f64; 4]; 6] = [
            [0.0, 0.5, 1.0, 0.5],
            [0.0, 0.0, 0.0, 0.5],
            [1.0; 4],
            [0.5; 4],
            [0.0; 4],
            [0.0, 1.0, 0.0, 1.0],
        ];
        let runs: Vec<_> = (0..3)
            .map(|r| {
                let mut data = run(&format!("run-{r}"), None);
                for step in 1..=2u64 {
                    let test = splits[2 * r + step as usize - 1];
                    let mut rows: Vec<_> = test
                        .iter()
                        .enumerate()
                        .map(|(j, &a)| row(&format!("t{j}"), "test", step, a, 3.0))
                        .collect();
                    // Train examples: not memorized at step 1, memorized at 2.
                    let perplexity = if step == 1 { 50.0 } else { 1.0001 };
                    rows.extend(
                        (0..2).map(|i| row(&format!("e{i}"), "train", step, 0.5, perplexity)),
                    );
                    data.rows.insert(step, rows);
                }
                data
            })
            .collect();
        let l = analyze(&runs, &ReportOptions::default())
            .unwrap()
            .limits
            .expect("three runs with one K have a limits view");
        assert_eq!(l.checkpoints, 6);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(l.test_se_median, 0.0625), "{}", l.test_se_median);
        assert!(
            close(l.test_se_max, (1.0f64 / 12.0).sqrt()),
            "{}",
            l.test_se_max
        );
        assert!(
            close(l.test_variance, 0.6171875 / 6.0),
            "{}",
            l.test_variance
        );
        assert!(close(l.ceiling.unwrap(), 1.0 - 0.140625 / 0.6171875));
        let ks: Vec<u32> = l.by_samples.iter().map(|s| s.0).collect();
        assert_eq!(ks, [1, 2, 4, 8]);
        assert_eq!(l.after_memorization.len(), 3);
        for (r, after) in l.after_memorization.iter().enumerate() {
            assert_eq!((after.step, after.last_step), (2, 2));
            assert!(close(
                after.test,
                splits[2 * r + 1].iter().sum::<f64>() / 4.0
            ));
        }
        // Two runs are too few.
        assert!(
            analyze(&runs[..2], &ReportOptions::default())
                .unwrap()
                .limits
                .is_none()
        );
    }

    #[test]
    fn population_variance() {
        // Population variance of 0, 0.5, 1, 0.5: (0.25 + 0 + 0.25 + 0) / 4.
        assert!((variance(&[0.0, 0.5, 1.0, 0.5]) - 0.125).abs() < 1e-12);
    }
}
