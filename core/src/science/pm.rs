//! Pre-memorization train accuracy (DESIGN.md, "The science, precisely").
//!
//! Per checkpoint `m` and train example `i`, from the evaluator's rows:
//!
//! - `Acc_m(i)`: the fraction of K samples whose answer is correct;
//! - `Perp_m(i)`: the perplexity of the target trace;
//! - memorized ⇔ `Perp_m(i) < p`;
//! - `MaskedAcc_m(i) = Acc_m(i) · 1[Perp_m(i) ≥ p]` (zero once memorized);
//! - `PM_m(i) = min(max_{m' ≤ m} MaskedAcc_{m'}(i), Acc_m(i))`.
//!
//! Dataset level: `PM_m = mean_i PM_m(i)`, compared with the test accuracy
//! `Test_m = mean_j Acc_m(j)` by R² against the line y = x and by the R² of a
//! least-squares line. [`calibrate`] picks the `p` whose P-M accuracy best
//! predicts test accuracy (least squared error against y = x).
//!
//! The state is incremental: [`PmTracker::push`] takes one checkpoint's rows
//! and returns that checkpoint's values; later checkpoints never change them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The memorization threshold p, on one of the two scales in use.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    /// Memorized iff perplexity < p (e.g. 1.095).
    Perplexity(f64),
    /// The authors' scale: not memorized iff ln(ln(perplexity)) ≥ p
    /// (e.g. -2.4 for GSM8K, -1.7 for MATH); the same as perplexity
    /// threshold exp(exp(p)).
    #[serde(alias = "loglog")]
    LogLog(f64),
}

impl Threshold {
    /// The threshold on the perplexity scale.
    pub fn perplexity(self) -> f64 {
        match self {
            Threshold::Perplexity(p) => p,
            Threshold::LogLog(q) => q.exp().exp(),
        }
    }

    /// The threshold on the ln(ln(perplexity)) scale (−∞ for p ≤ 1).
    pub fn loglog(self) -> f64 {
        match self {
            Threshold::Perplexity(p) => p.ln().ln(),
            Threshold::LogLog(q) => q,
        }
    }

    /// Checks the value: a perplexity threshold must be a finite number > 1
    /// (perplexity is never below 1, so p ≤ 1 would never mark anything
    /// memorized); a log-log one must be finite.
    pub fn validate(self) -> Result<(), String> {
        match self {
            Threshold::Perplexity(p) if !(p.is_finite() && p > 1.0) => Err(format!(
                "memorization threshold p = {p} on the perplexity scale: must be a finite number > 1"
            )),
            Threshold::LogLog(q)
                if !(q.is_finite() && self.perplexity().is_finite() && self.perplexity() > 1.0) =>
            {
                Err(format!(
                    "memorization threshold p = {q} on the ln(ln(perplexity)) scale: must be finite, \
                     and exp(exp(p)) a finite perplexity > 1 (p between about -36 and 6)"
                ))
            }
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "perplexity {:.4} (ln ln = {:.3})",
            self.perplexity(),
            self.loglog()
        )
    }
}

/// memorized ⇔ `perplexity < p` (p on the perplexity scale).
pub fn memorized(perplexity: f64, p: f64) -> bool {
    perplexity < p
}

/// `accuracy · 1[perplexity ≥ p]`: zero once memorized.
pub fn masked_accuracy(accuracy: f64, perplexity: f64, p: f64) -> f64 {
    if memorized(perplexity, p) {
        0.0
    } else {
        accuracy
    }
}

/// What the P-M formula needs of one example at one checkpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// `Acc_m(i)`, in [0, 1].
    pub accuracy: f64,
    /// `Perp_m(i)`, ≥ 1.
    pub perplexity: f64,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PmError {
    #[error(
        "checkpoint step {step} comes after step {last}: P-M accuracy takes checkpoints in training order"
    )]
    OutOfOrder { step: u64, last: u64 },
    #[error("example '{id}' at step {step}: {what}")]
    BadValue { id: String, step: u64, what: String },
    #[error("example '{id}' appears twice at step {step}")]
    Duplicate { id: String, step: u64 },
}

/// One example's state over the checkpoints seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ExampleState {
    /// `max_{m' ≤ m} MaskedAcc_{m'}(i)` so far.
    pub best_masked: f64,
    /// The first checkpoint at which the example was memorized.
    pub first_memorized: Option<u64>,
    /// `PM_m(i)` at the newest checkpoint with a row for this example.
    pub pm: f64,
    /// Checkpoints with rows for this example.
    pub seen: u32,
}

impl ExampleState {
    /// Adds checkpoint `step`'s observation; returns `PM_m(i)`.
    pub fn push(&mut self, step: u64, observation: Observation, p: f64) -> f64 {
        let Observation {
            accuracy,
            perplexity,
        } = observation;
        self.best_masked = self
            .best_masked
            .max(masked_accuracy(accuracy, perplexity, p));
        if memorized(perplexity, p) && self.first_memorized.is_none() {
            self.first_memorized = Some(step);
        }
        self.pm = self.best_masked.min(accuracy);
        self.seen += 1;
        self.pm
    }
}

/// One checkpoint's P-M values.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointPm {
    pub step: u64,
    /// `PM_m(i)` of each example with a row at this checkpoint.
    pub per_example: BTreeMap<String, f64>,
    /// Mean `Acc_m(i)` over the same examples (plain train accuracy).
    pub train_accuracy: f64,
    /// Fraction of these examples memorized at this checkpoint.
    pub memorized_fraction: f64,
    /// `PM_m`: mean over the examples; `None` when any expected example has
    /// no row here (see `missing`) — never an average over fewer rows.
    pub pm: Option<f64>,
    /// Expected examples without a row at this checkpoint.
    pub missing: Vec<String>,
    /// Examples whose history has a gap before this checkpoint: their
    /// `PM_m(i)` may miss an earlier maximum.
    pub incomplete_history: Vec<String>,
}

/// P-M accuracy of a set of train examples over a run's checkpoints, one
/// checkpoint at a time, in training order.
#[derive(Clone, Debug)]
pub struct PmTracker {
    p: f64,
    expected: BTreeSet<String>,
    states: BTreeMap<String, ExampleState>,
    last_step: Option<u64>,
    checkpoints: u32,
}

impl PmTracker {
    /// `expected`: the ids every checkpoint should have rows for. Their
    /// states exist from the start (none seen yet), so a tracker fed for a
    /// whole run allocates only for ids outside `expected`.
    pub fn new(threshold: Threshold, expected: impl IntoIterator<Item = String>) -> PmTracker {
        let expected: BTreeSet<String> = expected.into_iter().collect();
        let states = expected
            .iter()
            .map(|id| (id.clone(), ExampleState::default()))
            .collect();
        PmTracker {
            p: threshold.perplexity(),
            expected,
            states,
            last_step: None,
            checkpoints: 0,
        }
    }

    pub fn state(&self, id: &str) -> Option<&ExampleState> {
        self.states.get(id)
    }

    /// Every expected example's state (`seen` 0 until it has a row), and
    /// that of any other example with a row.
    pub fn states(&self) -> &BTreeMap<String, ExampleState> {
        &self.states
    }

    /// Adds checkpoint `step`'s rows `(example id, observation)`. Steps must
    /// increase; the tracker is unchanged when this returns an error.
    pub fn push<'a>(
        &mut self,
        step: u64,
        rows: impl IntoIterator<Item = (&'a str, Observation)>,
    ) -> Result<CheckpointPm, PmError> {
        if let Some(last) = self.last_step
            && step <= last
        {
            return Err(PmError::OutOfOrder { step, last });
        }
        let batch = checked_rows(step, rows)?;
        let mut per_example = BTreeMap::new();
        let (mut accuracy, mut memorized_count) = (0.0, 0usize);
        let mut incomplete_history = vec![];
        for (&id, &o) in &batch {
            let state = self.states.entry(id.to_string()).or_default();
            if state.seen < self.checkpoints {
                incomplete_history.push(id.to_string());
            }
            per_example.insert(id.to_string(), state.push(step, o, self.p));
            accuracy += o.accuracy;
            memorized_count += memorized(o.perplexity, self.p) as usize;
        }
        let missing: Vec<String> = self
            .expected
            .iter()
            .filter(|id| !batch.contains_key(id.as_str()))
            .cloned()
            .collect();
        let n = per_example.len();
        let pm =
            (missing.is_empty() && n > 0).then(|| per_example.values().sum::<f64>() / n as f64);
        self.last_step = Some(step);
        self.checkpoints += 1;
        Ok(CheckpointPm {
            step,
            per_example,
            train_accuracy: if n > 0 { accuracy / n as f64 } else { f64::NAN },
            memorized_fraction: if n > 0 {
                memorized_count as f64 / n as f64
            } else {
                f64::NAN
            },
            pm,
            missing,
            incomplete_history,
        })
    }
}

/// A checkpoint's rows by id: accuracies in [0, 1], perplexities ≥ 1, each
/// id once.
fn checked_rows<'a>(
    step: u64,
    rows: impl IntoIterator<Item = (&'a str, Observation)>,
) -> Result<BTreeMap<&'a str, Observation>, PmError> {
    let mut batch: BTreeMap<&str, Observation> = BTreeMap::new();
    for (id, o) in rows {
        let bad = |what: String| PmError::BadValue {
            id: id.to_string(),
            step,
            what,
        };
        if !(0.0..=1.0).contains(&o.accuracy) {
            return Err(bad(format!("accuracy {} is not in [0, 1]", o.accuracy)));
        }
        if o.perplexity.is_nan() || o.perplexity < 1.0 - 1e-9 {
            return Err(bad(format!("perplexity {} is not ≥ 1", o.perplexity)));
        }
        if batch.insert(id, o).is_some() {
            return Err(PmError::Duplicate {
                id: id.to_string(),
                step,
            });
        }
    }
    Ok(batch)
}

/// `1 − Σ(y − x)² / Σ(y − ȳ)²`: how well `x` predicts `y` as the line
/// y = x. `None` with fewer than 2 points or no spread in `y`.
pub fn r2_identity(x: &[f64], y: &[f64]) -> Option<f64> {
    assert_eq!(x.len(), y.len(), "paired values");
    let total = total_sum_of_squares(y)?;
    let residual: f64 = x.iter().zip(y).map(|(x, y)| (y - x).powi(2)).sum();
    Some(1.0 - residual / total)
}

/// A least-squares line `y = slope · x + intercept` and its R².
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearFit {
    pub slope: f64,
    pub intercept: f64,
    pub r2: f64,
}

/// The least-squares line through the points; `None` with fewer than 2
/// points or no spread in `x` or `y`.
pub fn least_squares(x: &[f64], y: &[f64]) -> Option<LinearFit> {
    assert_eq!(x.len(), y.len(), "paired values");
    let total = total_sum_of_squares(y)?;
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxx: f64 = x.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx <= f64::EPSILON * n {
        return None;
    }
    let sxy: f64 = x.iter().zip(y).map(|(x, y)| (x - mx) * (y - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let residual: f64 = x
        .iter()
        .zip(y)
        .map(|(x, y)| (y - slope * x - intercept).powi(2))
        .sum();
    Some(LinearFit {
        slope,
        intercept,
        r2: 1.0 - residual / total,
    })
}

fn total_sum_of_squares(y: &[f64]) -> Option<f64> {
    if y.len() < 2 {
        return None;
    }
    let my = y.iter().sum::<f64>() / y.len() as f64;
    let total: f64 = y.iter().map(|y| (y - my).powi(2)).sum();
    (total > f64::EPSILON * y.len() as f64).then_some(total)
}

/// One run's data for calibration: per checkpoint in training order, the
/// train observations and the test accuracy.
#[derive(Clone, Debug, Default)]
pub struct RunObservations {
    pub name: String,
    pub checkpoints: Vec<CheckpointObservations>,
}

#[derive(Clone, Debug)]
pub struct CheckpointObservations {
    pub step: u64,
    pub train: Vec<(String, Observation)>,
    /// `Test_m`; `None` when the test split is missing or partial (such a
    /// checkpoint is left out of the fit).
    pub test_accuracy: Option<f64>,
}

/// The grid of thresholds to try: `points` values from `low` to `high`
/// (perplexity scale, both > 1), evenly spaced in ln(ln(p)) — that is, ln(p)
/// log-spaced, the scale on which the authors write p.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    pub low: f64,
    pub high: f64,
    pub points: usize,
}

impl Default for Grid {
    /// 1.01 … 3.0 in 61 points (ln ln p from −4.6 to 0.09, steps of ~0.08).
    fn default() -> Grid {
        Grid {
            low: 1.01,
            high: 3.0,
            points: 61,
        }
    }
}

impl Grid {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.low.is_finite() && self.low > 1.0 && self.high.is_finite()) {
            return Err(format!(
                "threshold grid {}..{}: both ends must be finite perplexities > 1",
                self.low, self.high
            ));
        }
        if self.high < self.low || self.points == 0 || (self.points == 1 && self.high != self.low) {
            return Err(format!(
                "threshold grid {}..{} in {} points: needs low ≤ high and at least 2 points (1 when low = high)",
                self.low, self.high, self.points
            ));
        }
        Ok(())
    }

    /// The thresholds, ascending, on the perplexity scale.
    pub fn values(&self) -> Vec<f64> {
        if self.points == 1 {
            return vec![self.low];
        }
        let (a, b) = (self.low.ln().ln(), self.high.ln().ln());
        (0..self.points)
            .map(|k| {
                let q = a + (b - a) * k as f64 / (self.points - 1) as f64;
                q.exp().exp()
            })
            .collect()
    }
}

/// How well P-M accuracy at threshold `p` predicts test accuracy.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationPoint {
    /// p on the perplexity scale.
    pub p: f64,
    /// The same p as ln(ln(p)).
    pub loglog: f64,
    /// Mean squared error of Test − PM over the checkpoints used.
    pub mse: f64,
    /// R² of test vs P-M against y = x (`None`: not enough spread).
    pub r2_identity: Option<f64>,
    /// R² of a least-squares line.
    pub r2_fit: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub curve: Vec<CalibrationPoint>,
    /// The point with the least error.
    pub best: CalibrationPoint,
    /// (run, step) pairs in the fit.
    pub checkpoints_used: usize,
}

/// P-M accuracy of every complete checkpoint of every run at threshold `p`,
/// paired with its test accuracy: (PM, Test) points.
pub fn pm_vs_test(
    runs: &[RunObservations],
    threshold: Threshold,
) -> Result<Vec<(f64, f64)>, PmError> {
    Ok(pm_vs_test_keyed(runs, threshold)?
        .into_iter()
        .map(|(_, pm, test)| (pm, test))
        .collect())
}

/// [`pm_vs_test`], each point with the index of its run in `runs`. Which
/// checkpoints have a point does not depend on the threshold.
pub fn pm_vs_test_keyed(
    runs: &[RunObservations],
    threshold: Threshold,
) -> Result<Vec<(usize, f64, f64)>, PmError> {
    let mut points = vec![];
    for (index, run) in runs.iter().enumerate() {
        let expected: BTreeSet<String> = run
            .checkpoints
            .iter()
            .flat_map(|c| c.train.iter().map(|(id, _)| id.clone()))
            .collect();
        let mut tracker = PmTracker::new(threshold, expected);
        for c in &run.checkpoints {
            let result = tracker.push(c.step, c.train.iter().map(|(id, o)| (id.as_str(), *o)))?;
            if let (Some(pm), Some(test)) = (result.pm, c.test_accuracy) {
                points.push((index, pm, test));
            }
        }
    }
    Ok(points)
}

/// Sweeps `grid` and keeps the p whose P-M accuracy best predicts test
/// accuracy over all checkpoints of all `runs` (least mean squared error
/// against y = x, the same as the greatest R² against y = x). Ties go to the
/// smaller p. `None` when no checkpoint has both a complete train split and a
/// test accuracy.
pub fn calibrate(runs: &[RunObservations], grid: &Grid) -> Result<Option<Calibration>, PmError> {
    let mut curve = vec![];
    let mut used = 0;
    for p in grid.values() {
        let points = pm_vs_test(runs, Threshold::Perplexity(p))?;
        if points.is_empty() {
            return Ok(None);
        }
        used = points.len();
        let (x, y): (Vec<f64>, Vec<f64>) = points.into_iter().unzip();
        let mse = x.iter().zip(&y).map(|(x, y)| (y - x).powi(2)).sum::<f64>() / x.len() as f64;
        curve.push(CalibrationPoint {
            p,
            loglog: p.ln().ln(),
            mse,
            r2_identity: r2_identity(&x, &y),
            r2_fit: least_squares(&x, &y).map(|f| f.r2),
        });
    }
    let best = *curve
        .iter()
        .min_by(|a, b| a.mse.total_cmp(&b.mse))
        .expect("a grid has at least one point");
    Ok(Some(Calibration {
        curve,
        best,
        checkpoints_used: used,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(accuracy: f64, perplexity: f64) -> Observation {
        Observation {
            accuracy,
            perplexity,
        }
    }

    /// PM_m(i) of one example over a sequence of (accuracy, perplexity).
    fn series(p: f64, rows: &[(f64, f64)]) -> Vec<f64> {
        let mut tracker = PmTracker::new(Threshold::Perplexity(p), ["x".to_string()]);
        rows.iter()
            .enumerate()
            .map(|(m, &(a, perp))| {
                tracker
                    .push(m as u64 + 1, [("x", obs(a, perp))])
                    .unwrap()
                    .per_example["x"]
            })
            .collect()
    }

    #[test]
    fn the_indicator_is_memorized_iff_perplexity_below_p() {
        assert!(memorized(1.05, 1.1));
        assert!(!memorized(1.1, 1.1), "Perp = p is not memorized");
        assert!(!memorized(1.2, 1.1));
        assert_eq!(masked_accuracy(0.8, 1.05, 1.1), 0.0);
        assert_eq!(masked_accuracy(0.8, 1.1, 1.1), 0.8);
        assert_eq!(masked_accuracy(0.8, 2.0, 1.1), 0.8);
    }

    #[test]
    fn hand_computed_tables() {
        let p = 1.1;
        // Memorized at its first checkpoint: P-M 0 while it stays memorized,
        // however accurate the samples are.
        assert_eq!(
            series(p, &[(1.0, 1.05), (1.0, 1.02), (0.6, 1.01)]),
            [0.0, 0.0, 0.0]
        );
        // Never memorized: min(best accuracy so far, current accuracy).
        // acc:      0.2  0.6  0.4  0.8  0.8
        // best:     0.2  0.6  0.6  0.8  0.8
        // PM:       0.2  0.6  0.4  0.8  0.8
        assert_eq!(
            series(
                p,
                &[(0.2, 3.0), (0.6, 2.0), (0.4, 1.5), (0.8, 1.3), (0.8, 1.2)]
            ),
            [0.2, 0.6, 0.4, 0.8, 0.8]
        );
        // Learned before memorizing: the best pre-memorization accuracy is
        // kept after the trace is memorized (perplexity < p) while current
        // accuracy stays high; a drop in current accuracy lowers P-M.
        // acc:    0.4  0.6  1.0(mem)  1.0(mem)  0.2(mem)  1.0(mem)
        // masked: 0.4  0.6  0         0         0         0
        // best:   0.4  0.6  0.6       0.6       0.6       0.6
        // PM:     0.4  0.6  0.6       0.6       0.2       0.6
        assert_eq!(
            series(
                p,
                &[
                    (0.4, 2.0),
                    (0.6, 1.4),
                    (1.0, 1.08),
                    (1.0, 1.01),
                    (0.2, 1.01),
                    (1.0, 1.0)
                ]
            ),
            [0.4, 0.6, 0.6, 0.6, 0.2, 0.6]
        );
    }

    #[test]
    fn dataset_level_mean_and_missing_examples() {
        let ids = ["a", "b", "c"].map(String::from);
        let mut tracker = PmTracker::new(Threshold::Perplexity(1.1), ids.clone());
        let first = tracker
            .push(
                10,
                [
                    ("a", obs(0.4, 2.0)),
                    ("b", obs(1.0, 1.05)),
                    ("c", obs(0.8, 1.5)),
                ],
            )
            .unwrap();
        // PM: a 0.4, b 0 (memorized), c 0.8.
        assert!((first.pm.unwrap() - 0.4).abs() < 1e-12);
        assert!((first.train_accuracy - 2.2 / 3.0).abs() < 1e-12);
        assert!((first.memorized_fraction - 1.0 / 3.0).abs() < 1e-12);
        assert!(first.missing.is_empty());
        // "c" is missing at step 20: no dataset value, and it is named.
        let second = tracker
            .push(20, [("a", obs(0.6, 1.9)), ("b", obs(1.0, 1.0))])
            .unwrap();
        assert_eq!(second.pm, None);
        assert_eq!(second.missing, ["c"]);
        assert_eq!(second.per_example["a"], 0.6);
        // Back at step 30, "c" has a gap in its history.
        let third = tracker
            .push(
                30,
                [
                    ("a", obs(0.6, 1.9)),
                    ("b", obs(1.0, 1.0)),
                    ("c", obs(0.9, 1.4)),
                ],
            )
            .unwrap();
        assert_eq!(third.incomplete_history, ["c"]);
        assert!((third.pm.unwrap() - (0.6 + 0.0 + 0.9) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn expected_examples_have_states_before_their_first_row() {
        let ids = ["a".to_string(), "b".to_string()];
        let mut tracker = PmTracker::new(Threshold::Perplexity(1.1), ids);
        assert_eq!(tracker.states().len(), 2);
        assert_eq!(tracker.state("b"), Some(&ExampleState::default()));
        let first = tracker.push(1, [("a", obs(0.5, 2.0))]).unwrap();
        assert_eq!(
            (first.pm, first.missing.as_slice()),
            (None, &["b".to_string()][..])
        );
        assert!(first.incomplete_history.is_empty());
        assert_eq!(tracker.state("b").unwrap().seen, 0);
        let second = tracker
            .push(
                2,
                [
                    ("a", obs(0.5, 2.0)),
                    ("b", obs(1.0, 2.0)),
                    ("z", obs(1.0, 2.0)),
                ],
            )
            .unwrap();
        assert_eq!(second.incomplete_history, ["b", "z"]);
        assert_eq!(tracker.states().len(), 3);
    }

    #[test]
    fn bad_rows_are_refused_and_leave_the_state_alone() {
        let mut tracker = PmTracker::new(Threshold::Perplexity(1.1), ["a".to_string()]);
        tracker.push(5, [("a", obs(0.5, 2.0))]).unwrap();
        assert_eq!(
            tracker.push(5, [("a", obs(0.5, 2.0))]),
            Err(PmError::OutOfOrder { step: 5, last: 5 })
        );
        assert!(matches!(
            tracker.push(6, [("a", obs(1.5, 2.0))]),
            Err(PmError::BadValue { .. })
        ));
        assert!(matches!(
            tracker.push(6, [("a", obs(0.5, f64::NAN))]),
            Err(PmError::BadValue { .. })
        ));
        assert!(matches!(
            tracker.push(6, [("a", obs(0.5, 2.0)), ("a", obs(0.5, 2.0))]),
            Err(PmError::Duplicate { .. })
        ));
        assert_eq!(tracker.state("a").unwrap().seen, 1);
        assert_eq!(
            tracker.push(6, [("a", obs(0.7, 2.0))]).unwrap().pm,
            Some(0.7)
        );
    }

    #[test]
    fn thresholds_convert_between_scales() {
        // The authors' GSM8K and MATH values.
        assert!((Threshold::LogLog(-2.4).perplexity() - 1.095).abs() < 1e-3);
        assert!((Threshold::LogLog(-1.7).perplexity() - 1.20).abs() < 1e-3);
        assert!((Threshold::Perplexity(1.2).loglog() - (-1.7)).abs() < 1e-2);
        assert!(Threshold::Perplexity(1.0).validate().is_err());
        assert!(Threshold::Perplexity(f64::NAN).validate().is_err());
        assert!(Threshold::LogLog(f64::INFINITY).validate().is_err());
        assert!(Threshold::LogLog(-2.4).validate().is_ok());
        assert!(
            Threshold::LogLog(-50.0).validate().is_err(),
            "rounds to p = 1"
        );
        assert!(Threshold::LogLog(10.0).validate().is_err(), "overflows");
    }

    #[test]
    fn r2_against_identity_and_least_squares() {
        let x = [0.1, 0.2, 0.3, 0.4];
        // On the line y = x: both 1.
        assert_eq!(r2_identity(&x, &x), Some(1.0));
        // y = 2x: a perfect line, far from y = x.
        let y: Vec<f64> = x.iter().map(|v| 2.0 * v).collect();
        let fit = least_squares(&x, &y).unwrap();
        assert!((fit.slope - 2.0).abs() < 1e-12 && fit.intercept.abs() < 1e-12);
        assert!((fit.r2 - 1.0).abs() < 1e-12);
        // Hand computed: ȳ = 0.5, SST = 0.2, SSE vs y = x = 0.01+0.04+0.09+0.16 = 0.3.
        assert!((r2_identity(&x, &y).unwrap() - (1.0 - 0.3 / 0.2)).abs() < 1e-12);
        // y = [0.1, 0.3, 0.2, 0.4]: slope 0.8, intercept 0.05,
        // residuals -0.03, 0.09, -0.09, 0.03 → SSE 0.018, SST 0.05.
        let fit = least_squares(&x, &[0.1, 0.3, 0.2, 0.4]).unwrap();
        assert!((fit.slope - 0.8).abs() < 1e-12);
        assert!((fit.intercept - 0.05).abs() < 1e-12);
        assert!((fit.r2 - (1.0 - 0.018 / 0.05)).abs() < 1e-12);
        assert_eq!(least_squares(&[0.5], &[0.5]), None);
        assert_eq!(r2_identity(&[0.1, 0.2], &[0.3, 0.3]), None);
        assert_eq!(least_squares(&[0.2, 0.2], &[0.1, 0.3]), None);
    }

    #[test]
    fn the_grid_is_even_in_loglog_and_hits_its_ends() {
        let grid = Grid {
            low: 1.05,
            high: 2.0,
            points: 5,
        };
        let values = grid.values();
        assert_eq!(values.len(), 5);
        assert!((values[0] - 1.05).abs() < 1e-12 && (values[4] - 2.0).abs() < 1e-12);
        let q: Vec<f64> = values.iter().map(|p| p.ln().ln()).collect();
        for w in q.windows(3) {
            assert!(((w[1] - w[0]) - (w[2] - w[1])).abs() < 1e-12);
        }
        assert!(Grid { low: 1.0, ..grid }.validate().is_err());
        assert!(Grid { points: 1, ..grid }.validate().is_err());
        assert!(Grid::default().validate().is_ok());
    }
}
