//! P-M accuracy: properties over random histories, and calibration of p on
//! synthetic runs whose true threshold is known.

use std::collections::BTreeSet;

use premem_core::science::pm::{
    CheckpointObservations, Grid, Observation, PmTracker, RunObservations, Threshold, calibrate,
    pm_vs_test,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A history: per checkpoint, per example (accuracy as k/5, perplexity).
fn history() -> impl Strategy<Value = (f64, Vec<Vec<(f64, f64)>>)> {
    (1usize..6, 1usize..10).prop_flat_map(|(examples, checkpoints)| {
        (
            1.01f64..2.0,
            prop::collection::vec(
                prop::collection::vec((0u32..=5, 1.0f64..3.0), examples),
                checkpoints,
            )
            .prop_map(|h| {
                h.into_iter()
                    .map(|row| {
                        row.into_iter()
                            .map(|(k, perp)| (k as f64 / 5.0, perp))
                            .collect()
                    })
                    .collect()
            }),
        )
    })
}

/// Per checkpoint, per example PM, from a tracker fed `history`.
fn pm_table(p: f64, history: &[Vec<(f64, f64)>]) -> Vec<Vec<f64>> {
    let ids: Vec<String> = (0..history[0].len()).map(|i| format!("e{i}")).collect();
    let mut tracker = PmTracker::new(Threshold::Perplexity(p), ids.clone());
    history
        .iter()
        .enumerate()
        .map(|(m, row)| {
            let result = tracker
                .push(
                    m as u64 * 10,
                    ids.iter().zip(row).map(|(id, &(accuracy, perplexity))| {
                        (
                            id.as_str(),
                            Observation {
                                accuracy,
                                perplexity,
                            },
                        )
                    }),
                )
                .unwrap();
            ids.iter().map(|id| result.per_example[id]).collect()
        })
        .collect()
}

proptest! {
    #[test]
    fn pm_is_between_zero_and_the_current_accuracy((p, history) in history()) {
        for (m, row) in pm_table(p, &history).iter().enumerate() {
            for (i, &pm) in row.iter().enumerate() {
                prop_assert!((0.0..=1.0).contains(&pm));
                prop_assert!(pm <= history[m][i].0, "PM {pm} > accuracy {}", history[m][i].0);
            }
        }
    }

    #[test]
    fn later_checkpoints_do_not_change_earlier_values(
        (p, history) in history(),
        cut in 0usize..10,
    ) {
        let cut = cut.min(history.len() - 1) + 1;
        let full = pm_table(p, &history);
        let prefix = pm_table(p, &history[..cut]);
        prop_assert_eq!(&full[..cut], &prefix[..]);
    }

    #[test]
    fn pm_is_zero_from_a_memorized_first_checkpoint_until_it_stops_being_memorized(
        (p, mut history) in history(),
    ) {
        // Example 0 is memorized at every checkpoint: its PM stays 0.
        for row in history.iter_mut() {
            row[0].1 = 1.0;
        }
        for row in pm_table(p, &history) {
            prop_assert_eq!(row[0], 0.0);
        }
    }

    #[test]
    fn never_memorized_pm_is_min_of_running_max_and_current(
        (p, mut history) in history(),
    ) {
        for row in history.iter_mut() {
            row[0].1 = p + 0.5;
        }
        let table = pm_table(p, &history);
        let mut best: f64 = 0.0;
        for (m, row) in history.iter().enumerate() {
            best = best.max(row[0].0);
            prop_assert_eq!(table[m][0], best.min(row[0].0));
        }
    }
}

/// Runs whose test accuracy is (up to noise of ±0.005) the P-M accuracy at
/// `true_p`: examples solve problems with a rising accuracy until their
/// perplexity drops below `true_p`, then reproduce the trace (accuracy 1).
fn synthetic_runs(true_p: f64, seed: u64) -> Vec<RunObservations> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut runs = vec![];
    for (r, speed) in [0.45, 0.55, 0.65, 0.75, 0.85].into_iter().enumerate() {
        let examples: Vec<(f64, f64)> = (0..150)
            .map(|_| (rng.random_range(0.3..3.0), rng.random_range(0.0..0.8)))
            .collect();
        let mut checkpoints = vec![];
        for m in 1..=8 {
            let train: Vec<(String, Observation)> = examples
                .iter()
                .enumerate()
                .map(|(i, &(scale, skill))| {
                    let perplexity = 1.0 + scale * f64::powi(speed, m);
                    let accuracy = if perplexity < true_p {
                        1.0
                    } else {
                        // Grows with training, in steps of 1/5 like K = 5.
                        (((skill * m as f64 / 8.0) * 5.0).round() / 5.0).min(1.0)
                    };
                    (
                        format!("r{r}-e{i}"),
                        Observation {
                            accuracy,
                            perplexity,
                        },
                    )
                })
                .collect();
            checkpoints.push(CheckpointObservations {
                step: m as u64 * 100,
                train,
                test_accuracy: None,
            });
        }
        runs.push(RunObservations {
            name: format!("run{r}"),
            checkpoints,
        });
    }
    // Test accuracy: P-M at the true p, plus noise.
    for run in runs.iter_mut() {
        let single = std::slice::from_ref(run);
        let points = pm_vs_test_with_fake_test(single, true_p);
        for (c, pm) in run.checkpoints.iter_mut().zip(points) {
            c.test_accuracy = Some((pm + rng.random_range(-0.005..0.005)).clamp(0.0, 1.0));
        }
    }
    runs
}

fn pm_vs_test_with_fake_test(runs: &[RunObservations], p: f64) -> Vec<f64> {
    let mut runs = runs.to_vec();
    for c in runs.iter_mut().flat_map(|r| r.checkpoints.iter_mut()) {
        c.test_accuracy = Some(0.0);
    }
    pm_vs_test(&runs, Threshold::Perplexity(p))
        .unwrap()
        .into_iter()
        .map(|(pm, _)| pm)
        .collect()
}

#[test]
fn calibration_recovers_a_known_threshold() {
    let grid = Grid {
        low: 1.01,
        high: 3.0,
        points: 81,
    };
    for (true_p, seed) in [(1.095, 1), (1.2, 2), (1.5, 3)] {
        let runs = synthetic_runs(true_p, seed);
        let calibration = calibrate(&runs, &grid).unwrap().unwrap();
        assert_eq!(calibration.checkpoints_used, 5 * 8);
        assert_eq!(calibration.curve.len(), 81);
        // Within one grid step on the ln ln scale.
        let step = (grid.high.ln().ln() - grid.low.ln().ln()) / 80.0;
        let found = calibration.best.loglog;
        assert!(
            (found - true_p.ln().ln()).abs() <= step + 1e-9,
            "true p {true_p} (ln ln {:.3}), found {:.4} (ln ln {found:.3})",
            true_p.ln().ln(),
            calibration.best.p
        );
        assert!(calibration.best.r2_identity.unwrap() > 0.95);
        // A threshold far off predicts test accuracy much worse.
        let far = calibration.curve.last().unwrap();
        assert!(far.mse > 10.0 * calibration.best.mse.max(1e-6));
    }
}

#[test]
fn calibration_needs_a_checkpoint_with_test_accuracy() {
    let mut runs = synthetic_runs(1.2, 4);
    for c in runs.iter_mut().flat_map(|r| r.checkpoints.iter_mut()) {
        c.test_accuracy = None;
    }
    assert_eq!(calibrate(&runs, &Grid::default()).unwrap(), None);
    // Checkpoints with a partial train split are left out, not averaged.
    let mut runs = synthetic_runs(1.2, 5);
    runs[0].checkpoints[3].train.pop();
    let points = pm_vs_test(&runs, Threshold::Perplexity(1.2)).unwrap();
    assert_eq!(points.len(), 5 * 8 - 1);
    let ids: BTreeSet<&str> = runs[0].checkpoints[0]
        .train
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(ids.len(), 150);
}
