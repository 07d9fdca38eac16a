//! Out-of-sample R²: how well a predictor of test accuracy does on
//! checkpoints it was not tuned on. Every checkpoint is in one fold; for
//! each fold the predictor is tuned on the other folds and predicts the
//! held-out fold's test accuracies, and the R² (against y = x) is computed
//! over all held-out predictions pooled. An in-sample R² tunes and scores
//! on the same checkpoints, which flatters a predictor with a free
//! parameter (P-M's threshold p, a baseline's fitted line).
//!
//! The folds ([`Protocol`]): leave one run out when there are several runs
//! (a run's checkpoints are alike, so they are held out together); with
//! one run, its checkpoints in two alternating halves.
//!
//! Two ways to tune: [`select`] picks one of several candidate predictions
//! (P-M at each threshold of a grid) by least squared error on the other
//! folds; [`linear`] fits a least-squares line from a metric to test
//! accuracy on the other folds (every baseline, whatever its scale).

use serde::{Deserialize, Serialize};

use crate::science::pm::{
    Grid, PmError, RunObservations, Threshold, least_squares, pm_vs_test_keyed, r2_identity,
};

/// How checkpoints are split into folds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// One fold per run.
    LeaveOneRunOut,
    /// One run: its checkpoints in training order, alternately in fold 0
    /// and fold 1.
    AlternateCheckpoints,
    /// Nothing was tuned on these checkpoints (a threshold given from
    /// elsewhere): the plain R² is already out of sample.
    Untuned,
}

impl Protocol {
    /// Leave one run out when `runs` (each checkpoint's run index) name
    /// two runs or more, else alternating halves.
    pub fn for_checkpoints(runs: &[usize]) -> Protocol {
        let first = runs.first();
        Protocol::for_runs(if runs.iter().all(|r| Some(r) == first) {
            1
        } else {
            2
        })
    }

    /// Leave one run out with two runs or more, else alternating halves.
    pub fn for_runs(runs: usize) -> Protocol {
        if runs >= 2 {
            Protocol::LeaveOneRunOut
        } else {
            Protocol::AlternateCheckpoints
        }
    }

    /// The fold of the `ordinal`-th checkpoint (in training order) of run
    /// `run` (its index).
    pub fn fold_of(self, run: usize, ordinal: usize) -> usize {
        match self {
            Protocol::LeaveOneRunOut => run,
            Protocol::AlternateCheckpoints => ordinal % 2,
            Protocol::Untuned => 0,
        }
    }

    /// As reports name it.
    pub fn describe(self) -> &'static str {
        match self {
            Protocol::LeaveOneRunOut => {
                "leave one run out: tuned on the other runs, scored on the held-out run"
            }
            Protocol::AlternateCheckpoints => {
                "one run, two folds of alternating checkpoints: tuned on one half, scored on the other"
            }
            Protocol::Untuned => "nothing tuned on these checkpoints",
        }
    }
}

/// Held-out predictions and their R².
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutOfSample {
    pub protocol: Protocol,
    /// (prediction, test accuracy) of every checkpoint, each predicted by
    /// what was tuned without its fold; in the input's order.
    pub predictions: Vec<(f64, f64)>,
    /// R² of the predictions against y = x; `None` when no fold could be
    /// tuned or the test accuracies do not vary.
    pub r2: Option<f64>,
    /// Per fold that has checkpoints: what was tuned (the candidate's
    /// index for [`select`], the line's slope for [`linear`]).
    pub tuned: Vec<(usize, f64)>,
}

/// The distinct folds of `folds`, ascending.
fn fold_ids(folds: &[usize]) -> Vec<usize> {
    let mut ids = folds.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn finish(
    protocol: Protocol,
    predictions: Vec<(f64, f64)>,
    tuned: Vec<(usize, f64)>,
) -> OutOfSample {
    let (x, y): (Vec<f64>, Vec<f64>) = predictions.iter().copied().unzip();
    OutOfSample {
        protocol,
        r2: if predictions.is_empty() {
            None
        } else {
            r2_identity(&x, &y)
        },
        predictions,
        tuned,
    }
}

/// `candidates[c][k]`: candidate `c`'s prediction of checkpoint `k`, whose
/// fold is `folds[k]` and test accuracy `truth[k]`. For each fold, the
/// candidate with the least squared error on the other folds (the first
/// of equals) predicts it. A fold with no other fold to tune on is left
/// out.
pub fn select(
    protocol: Protocol,
    folds: &[usize],
    truth: &[f64],
    candidates: &[Vec<f64>],
) -> OutOfSample {
    assert!(candidates.iter().all(|c| c.len() == truth.len()));
    assert_eq!(folds.len(), truth.len(), "a fold per checkpoint");
    let mut predicted = vec![None; truth.len()];
    let mut tuned = vec![];
    for fold in fold_ids(folds) {
        let error = |c: &Vec<f64>| -> f64 {
            (0..truth.len())
                .filter(|&k| folds[k] != fold)
                .map(|k| (c[k] - truth[k]).powi(2))
                .sum()
        };
        if folds.iter().all(|&f| f == fold) {
            continue;
        }
        let Some((best, _)) = candidates
            .iter()
            .map(error)
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1))
        else {
            continue;
        };
        tuned.push((fold, best as f64));
        for k in (0..truth.len()).filter(|&k| folds[k] == fold) {
            predicted[k] = Some((candidates[best][k], truth[k]));
        }
    }
    finish(protocol, predicted.into_iter().flatten().collect(), tuned)
}

/// Predictions tuned on nothing: their R² as it is.
pub fn untuned(predictions: Vec<(f64, f64)>) -> OutOfSample {
    finish(Protocol::Untuned, predictions, vec![])
}

/// [`linear`] over checkpoints given by run index, in training order
/// within each run, folded by [`Protocol::for_checkpoints`].
pub fn linear_by_run(runs: &[usize], x: &[f64], truth: &[f64]) -> OutOfSample {
    let protocol = Protocol::for_checkpoints(runs);
    linear(protocol, &folds_of(protocol, runs), x, truth)
}

/// A least-squares line from `x` to `truth`, fitted on the other folds,
/// predicts each fold. A fold whose other folds admit no line (fewer than
/// two points, no spread) is left out.
pub fn linear(protocol: Protocol, folds: &[usize], x: &[f64], truth: &[f64]) -> OutOfSample {
    assert_eq!(folds.len(), truth.len(), "a fold per checkpoint");
    assert_eq!(x.len(), truth.len(), "a value per checkpoint");
    let mut predicted = vec![None; truth.len()];
    let mut tuned = vec![];
    for fold in fold_ids(folds) {
        let (train_x, train_y): (Vec<f64>, Vec<f64>) = (0..truth.len())
            .filter(|&k| folds[k] != fold)
            .map(|k| (x[k], truth[k]))
            .unzip();
        let Some(line) = least_squares(&train_x, &train_y) else {
            continue;
        };
        tuned.push((fold, line.slope));
        for k in (0..truth.len()).filter(|&k| folds[k] == fold) {
            predicted[k] = Some((line.slope * x[k] + line.intercept, truth[k]));
        }
    }
    finish(protocol, predicted.into_iter().flatten().collect(), tuned)
}

/// The fold of each of `runs` (run indexes, grouped and in training order
/// within a run) under `protocol`.
pub fn folds_of(protocol: Protocol, runs: &[usize]) -> Vec<usize> {
    let mut ordinal = std::collections::BTreeMap::<usize, usize>::new();
    runs.iter()
        .map(|&run| {
            let k = ordinal.entry(run).or_default();
            *k += 1;
            protocol.fold_of(run, *k - 1)
        })
        .collect()
}

/// P-M accuracy out of sample: for each fold, the threshold of `grid`
/// whose P-M accuracy best predicts test accuracy on the other folds
/// predicts the held-out fold. `tuned` holds each fold's threshold (on the
/// perplexity scale). `None` when no checkpoint has both values.
pub fn pm_out_of_sample(
    runs: &[RunObservations],
    grid: &Grid,
) -> Result<Option<OutOfSample>, PmError> {
    let thresholds = grid.values();
    let mut keys = None;
    let mut candidates = vec![];
    for &p in &thresholds {
        let points = pm_vs_test_keyed(runs, Threshold::Perplexity(p))?;
        let (run, test): (Vec<usize>, Vec<f64>) = points.iter().map(|&(r, _, t)| (r, t)).unzip();
        match &keys {
            None => keys = Some((run, test)),
            Some(known) => assert_eq!(known.0, run, "the same checkpoints at every threshold"),
        }
        candidates.push(points.into_iter().map(|(_, pm, _)| pm).collect());
    }
    let Some((run, test)) = keys.filter(|(run, _)| !run.is_empty()) else {
        return Ok(None);
    };
    let protocol = Protocol::for_checkpoints(&run);
    let mut oos = select(protocol, &folds_of(protocol, &run), &test, &candidates);
    for (_, tuned) in &mut oos.tuned {
        *tuned = thresholds[*tuned as usize];
    }
    Ok(Some(oos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn the_folds_are_runs_or_alternating_halves() {
        assert_eq!(Protocol::for_runs(1), Protocol::AlternateCheckpoints);
        assert_eq!(Protocol::for_runs(3), Protocol::LeaveOneRunOut);
        assert_eq!(
            Protocol::for_checkpoints(&[4, 4, 4]),
            Protocol::AlternateCheckpoints
        );
        assert_eq!(
            Protocol::for_checkpoints(&[0, 0, 1]),
            Protocol::LeaveOneRunOut
        );
        let folds = folds_of(Protocol::AlternateCheckpoints, &[0, 0, 0, 0]);
        assert_eq!(folds, [0, 1, 0, 1]);
        assert_eq!(
            folds_of(Protocol::LeaveOneRunOut, &[0, 0, 2, 2]),
            [0, 0, 2, 2]
        );
        let loro = Protocol::LeaveOneRunOut;
        assert_eq!((loro.fold_of(2, 0), loro.fold_of(2, 5)), (2, 2));
        let halves = Protocol::AlternateCheckpoints;
        let folds: Vec<usize> = (0..5).map(|k| halves.fold_of(0, k)).collect();
        assert_eq!(folds, [0, 1, 0, 1, 0]);
    }

    /// Three runs of one checkpoint each: (0, 0), (1, 1), (2, 3). By hand,
    /// leaving out (0, 0): the line through (1, 1), (2, 3) is y = 2x − 1,
    /// which predicts −1; leaving out (1, 1): y = 1.5x predicts 1.5;
    /// leaving out (2, 3): y = x predicts 2. Residuals 1, 0.25, 1 (2.25);
    /// the truths' spread is 42/9; R² = 1 − 2.25 · 9/42 = 0.517857…
    #[test]
    fn a_line_tuned_on_the_other_runs_scores_as_computed_by_hand() {
        let (x, y) = ([0.0, 1.0, 2.0], [0.0, 1.0, 3.0]);
        let oos = linear(Protocol::LeaveOneRunOut, &[0, 1, 2], &x, &y);
        assert_eq!(oos.predictions, [(-1.0, 0.0), (1.5, 1.0), (2.0, 3.0)]);
        assert!(close(oos.r2, 1.0 - 2.25 * 9.0 / 42.0), "{oos:?}");
        assert_eq!(oos.tuned, [(0, 2.0), (1, 1.5), (2, 1.0)]);
        // In sample, the same line scores higher: that is the flattery.
        let in_sample = least_squares(&x, &y).unwrap().r2;
        assert!(in_sample > 0.9 && in_sample > oos.r2.unwrap());
    }

    /// A metric that is exactly linear in the truth predicts it perfectly
    /// out of sample; one that is noise does worse than the truth's mean
    /// (R² below 0) though in sample it explains some of it.
    #[test]
    fn a_true_relation_scores_one_and_noise_scores_below_zero() {
        let truth = [0.1, 0.2, 0.35, 0.5, 0.6, 0.8];
        let folds = [0, 0, 1, 1, 2, 2];
        let exact: Vec<f64> = truth.iter().map(|t| 3.0 * t - 1.0).collect();
        let oos = linear(Protocol::LeaveOneRunOut, &folds, &exact, &truth);
        assert!(close(oos.r2, 1.0), "{oos:?}");
        let noise = [0.9, 0.1, 0.2, 0.8, 0.3, 0.7];
        let oos = linear(Protocol::LeaveOneRunOut, &folds, &noise, &truth);
        assert!(oos.r2.unwrap() < 0.0, "{oos:?}");
        assert!(least_squares(&noise, &truth).unwrap().r2 > 0.0);
    }

    /// Candidate 0 is right on fold 0 only, candidate 1 on fold 1 only,
    /// candidate 2 off by 0.1 everywhere. In sample, candidate 2 has the
    /// least error (4 · 0.01 against 2 · 0.25). Out of sample, fold 0 is
    /// predicted by the candidate best on fold 1 (candidate 1, off by 0.5
    /// there) and fold 1 by candidate 0: every prediction is off by 0.5.
    #[test]
    fn selection_is_scored_on_the_fold_it_did_not_see() {
        let truth = [0.2, 0.4, 0.6, 0.8];
        let folds = [0, 0, 1, 1];
        let candidates = vec![
            vec![0.2, 0.4, 1.1, 0.3],
            vec![0.7, -0.1, 0.6, 0.8],
            vec![0.3, 0.5, 0.7, 0.9],
        ];
        let oos = select(Protocol::AlternateCheckpoints, &folds, &truth, &candidates);
        assert_eq!(oos.tuned, [(0, 1.0), (1, 0.0)]);
        let expected = [(0.7, 0.2), (-0.1, 0.4), (1.1, 0.6), (0.3, 0.8)];
        assert_eq!(oos.predictions, expected);
        // Spread of the truths: 0.2; residuals 4 · 0.25 = 1.
        assert!(close(oos.r2, 1.0 - 1.0 / 0.2), "{oos:?}");
        // The exact candidate, when there is one, is found in every fold
        // (first among equals: candidates 0 and 1 are exact on one fold).
        let mut with_truth = vec![truth.to_vec()];
        with_truth.extend(candidates);
        let oos = select(Protocol::AlternateCheckpoints, &folds, &truth, &with_truth);
        assert!(close(oos.r2, 1.0));
        assert_eq!(oos.tuned, [(0, 0.0), (1, 0.0)]);
    }

    #[test]
    fn a_single_fold_has_nothing_to_tune_on() {
        let oos = linear(Protocol::LeaveOneRunOut, &[0, 0], &[0.1, 0.2], &[0.3, 0.4]);
        assert!(oos.predictions.is_empty() && oos.r2.is_none());
        let oos = select(
            Protocol::LeaveOneRunOut,
            &[0, 0],
            &[0.3, 0.4],
            &[vec![0.3, 0.4]],
        );
        assert!(oos.predictions.is_empty() && oos.r2.is_none());
    }

    /// Two runs whose test accuracy is exactly P-M accuracy at a threshold
    /// between 1.2 and 1.5 (the perplexities of the examples are 1.05, 1.2,
    /// 1.5 and 2.5): whichever run is held out, the other one picks a
    /// threshold in (1.2, 1.5], and the prediction is exact.
    #[test]
    fn pm_out_of_sample_recovers_a_known_threshold() {
        use crate::science::pm::{CheckpointObservations, Observation, pm_vs_test};
        let perplexities = [1.05, 1.2, 1.5, 2.5];
        let run = |name: &str, rise: f64| RunObservations {
            name: name.into(),
            checkpoints: (1..=4)
                .map(|step| CheckpointObservations {
                    step,
                    train: perplexities
                        .iter()
                        .enumerate()
                        .map(|(i, &perplexity)| {
                            let accuracy = (rise * step as f64 * (i + 1) as f64 / 20.0).min(1.0);
                            (
                                format!("x{i}"),
                                Observation {
                                    accuracy,
                                    perplexity,
                                },
                            )
                        })
                        .collect(),
                    // Replaced by P-M accuracy at the true threshold below.
                    test_accuracy: Some(0.0),
                })
                .collect(),
        };
        let mut runs = vec![run("a", 1.0), run("b", 1.7)];
        let truth = Threshold::Perplexity(1.35);
        for (r, run) in runs.clone().iter().enumerate() {
            let points = pm_vs_test(std::slice::from_ref(run), truth).unwrap();
            for (c, (pm, _)) in runs[r].checkpoints.iter_mut().zip(points) {
                c.test_accuracy = Some(pm);
            }
        }
        let oos = pm_out_of_sample(&runs, &Grid::default()).unwrap().unwrap();
        assert_eq!(oos.protocol, Protocol::LeaveOneRunOut);
        assert_eq!(oos.predictions.len(), 8);
        assert!(close(oos.r2, 1.0), "{oos:?}");
        for (_, p) in &oos.tuned {
            assert!(*p > 1.2 && *p <= 1.5, "{oos:?}");
        }
    }
}
