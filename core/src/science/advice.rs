//! Advice computed from a run's evaluated checkpoints as their results
//! arrive: whether the run over-memorizes (arXiv 2508.04117), whether its
//! P-M accuracy ([`crate::science::pm`]) has stalled while train accuracy still
//! rises, which checkpoint to keep, and over a sweep which learning rate /
//! epoch settings avoid over-memorization.
//!
//! The thresholds come from the `[advice]` table of a job spec
//! ([`AdviceSpec`]); every field is optional:
//!
//! ```toml
//! [advice]
//! window = 3               # checkpoints the over-memorization rule looks back over (>= 2)
//! perplexity_rise = 0.05   # relative rise of test perplexity that counts as rising (> 0)
//! accuracy_flat = 0.02     # largest change of test accuracy that counts as flat (0..1)
//! stall_checkpoints = 3    # checkpoints without P-M growth for the stall rule (>= 1)
//! pm_gain = 0.01           # smallest P-M growth that counts as growth (0..1)
//! train_gain = 0.02        # train accuracy growth the stall rule needs (0..1)
//! stop_when = "never"      # "never" | "memorized" (P-M stalled) | "over-memorized"
//! ```
//!
//! # The rules
//!
//! Both rules are evaluated at the newest checkpoint only: they describe the
//! state of the run now. [`advise`] over a prefix of the checkpoints gives the
//! advice as it was when that prefix was all there was. A rule skips the
//! checkpoints where a value it needs is unknown (`None`) or not a finite
//! number. Every threshold comparison below is made with a tolerance of
//! 1e-9, so that a value written in decimal exactly at a threshold counts as
//! at it (e.g. test accuracies 0.30 and 0.32 differ by exactly 0.02).
//!
//! **Over-memorization** (`over-memorization`). Take the checkpoints whose
//! test perplexity and test accuracy are both known, in step order; there
//! must be at least `window` of them. Over the last `window` of them,
//! c_1 … c_w (c_w the newest), with perplexities P_1 … P_w and test
//! accuracies A_1 … A_w, the rule fires when all of:
//!
//! - the perplexity rose: P_w ≥ P_1 · (1 + perplexity_rise);
//! - it rose steadily: between consecutive checkpoints it never fell by more
//!   than `perplexity_rise` relative, P_{k+1} ≥ P_k · (1 − perplexity_rise).
//!   A spike that comes back down therefore does not count; a jump at the
//!   newest checkpoint does (it is where a rise starts), and stops counting
//!   as soon as a later checkpoint falls back;
//! - test accuracy stayed flat: max A − min A ≤ accuracy_flat.
//!
//! The finding reports steps, perplexities and accuracies of c_1 and c_w, and
//! the mean fraction of distinct samples among K at c_1 and c_w when both are
//! known (over-memorized models collapse onto few distinct answers).
//!
//! **P-M stalled** (`pm-stalled`). Take the checkpoints whose P-M accuracy
//! and train accuracy are both known, in step order, c_0 … c_n; with
//! s = stall_checkpoints there must be at least s + 1 of them. Let
//! b = max PM(c_0 … c_{n−s}), the best P-M up to and including the base
//! checkpoint c_{n−s}. The rule fires when both:
//!
//! - P-M did not grow over the last s checkpoints: PM(c_k) < b + pm_gain for
//!   every k in n−s+1 … n (a growth of exactly pm_gain counts as growth);
//! - train accuracy still rose: Train(c_n) − Train(c_{n−s}) ≥ train_gain.
//!
//! The finding's `since_step` is the step of the base checkpoint c_{n−s},
//! `pm_best` is b, `pm_now` is PM(c_n), and `train_from` / `train_to` are the
//! train accuracies of c_{n−s} and c_n. Further epochs then only memorize:
//! stop, or lower the learning rate.
//!
//! **The checkpoint to keep.** Among the checkpoints whose P-M accuracy is
//! known: the best P-M; ties (within 1e-9) go to the lower test perplexity (a
//! known one before an unknown one), then to the earlier step.
//!
//! **Over a sweep** ([`advise_sweep`]): a run over-memorized when its advice
//! holds an over-memorization finding, stalled when it holds a P-M-stalled
//! finding. The recommended run is, among the runs that did not over-memorize
//! and have a checkpoint to keep, the one whose kept checkpoint has the best
//! P-M; ties go to the lower test perplexity, then the lower learning rate,
//! then fewer epochs. When every run over-memorized, the recommendation is the
//! run with the smallest learning rate (then the fewest epochs), with the
//! advice to go lower still.
//!
//! [`AdviceSpec::stop_when`] names the rule that stops training when it
//! fires ([`Advice::stop_reason`]).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// Tolerance of every threshold comparison and of P-M ties.
const TOLERANCE: f64 = 1e-9;

/// One evaluated checkpoint as the rules see it. `None`: not known (yet).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointView {
    /// The optimizer step of the checkpoint.
    pub step: u64,
    /// P-M accuracy of the train subset, 0..1.
    pub pm: Option<f64>,
    /// Plain train accuracy, 0..1.
    pub train_accuracy: Option<f64>,
    /// Test accuracy, 0..1.
    pub test_accuracy: Option<f64>,
    /// Mean target-trace perplexity over the test split, >= 1.
    pub test_perplexity: Option<f64>,
    /// Mean over test examples of (distinct samples among K) / K, 0..1.
    pub distinct_fraction: Option<f64>,
}

/// `[advice]` of a job spec: the thresholds and windows of the rules, and
/// the optional action. See the module documentation for the rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdviceSpec {
    /// Checkpoints (with test perplexity and test accuracy) the
    /// over-memorization rule looks back over, the newest included.
    /// Default 3; at least 2.
    pub window: usize,
    /// Relative rise of test perplexity over the window that counts as
    /// rising (0.05 = 5 %); also the largest relative fall between
    /// consecutive checkpoints of the window still counted as rising.
    /// Default 0.05; a finite number > 0.
    pub perplexity_rise: f64,
    /// Largest absolute change (max − min) of test accuracy over the window
    /// that counts as flat, as a fraction (0.02 = 2 points).
    /// Default 0.02; between 0 and 1.
    pub accuracy_flat: f64,
    /// Checkpoints (with P-M and train accuracy) without P-M growth for the
    /// P-M-stalled rule. Default 3; at least 1.
    pub stall_checkpoints: usize,
    /// Smallest absolute growth of P-M accuracy over the best so far that
    /// counts as growth, as a fraction. Default 0.01; between 0 and 1.
    pub pm_gain: f64,
    /// Absolute growth of train accuracy over the same checkpoints that the
    /// P-M-stalled rule needs, as a fraction. Default 0.02; between 0 and 1.
    pub train_gain: f64,
    /// The rule that stops training when it fires. Default `never`.
    pub stop_when: StopWhen,
}

impl Default for AdviceSpec {
    fn default() -> AdviceSpec {
        AdviceSpec {
            window: 3,
            perplexity_rise: 0.05,
            accuracy_flat: 0.02,
            stall_checkpoints: 3,
            pm_gain: 0.01,
            train_gain: 0.02,
            stop_when: StopWhen::Never,
        }
    }
}

/// When to stop training on the advice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopWhen {
    /// Never: the advice is only reported.
    #[default]
    Never,
    /// When the P-M-stalled rule fires (`"memorized"`).
    Memorized,
    /// When the over-memorization rule fires (`"over-memorized"`).
    OverMemorized,
}

impl AdviceSpec {
    /// Checks every field; the error names each bad key as `advice.<field>`
    /// with its value and the allowed range (several joined by "; ").
    pub fn validate(&self) -> Result<(), String> {
        let errors: Vec<String> = [
            check_count("window", self.window, 2),
            check_positive("perplexity_rise", self.perplexity_rise),
            check_fraction("accuracy_flat", self.accuracy_flat),
            check_count("stall_checkpoints", self.stall_checkpoints, 1),
            check_fraction("pm_gain", self.pm_gain),
            check_fraction("train_gain", self.train_gain),
        ]
        .into_iter()
        .flatten()
        .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Whether every field has its default value (the table can be left out).
    pub fn is_default(&self) -> bool {
        *self == AdviceSpec::default()
    }
}

/// The error for an integer field below its minimum.
fn check_count(key: &str, value: usize, min: usize) -> Option<String> {
    (value < min).then(|| format!("advice.{key} = {value}: must be an integer >= {min}"))
}

/// The error for a fraction field outside 0..=1 (NaN included).
fn check_fraction(key: &str, value: f64) -> Option<String> {
    (!(0.0..=1.0).contains(&value))
        .then(|| format!("advice.{key} = {value}: must be between 0 and 1"))
}

/// The error for a field that must be a finite number > 0 (NaN refused).
fn check_positive(key: &str, value: f64) -> Option<String> {
    (!(value.is_finite() && value > 0.0))
        .then(|| format!("advice.{key} = {value}: must be a finite number > 0"))
}

/// A rule that fired at the newest checkpoint, with its figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum Finding {
    /// Test perplexity rose over the window while test accuracy stayed flat.
    OverMemorization {
        /// Step of the window's first checkpoint.
        from_step: u64,
        /// Step of the window's last (the newest) checkpoint.
        to_step: u64,
        /// Test perplexity at `from_step`.
        perplexity_from: f64,
        /// Test perplexity at `to_step`.
        perplexity_to: f64,
        /// Test accuracy at `from_step`.
        accuracy_from: f64,
        /// Test accuracy at `to_step`.
        accuracy_to: f64,
        /// Distinct-sample fraction at `from_step`, when both ends know it.
        distinct_from: Option<f64>,
        /// Distinct-sample fraction at `to_step`, when both ends know it.
        distinct_to: Option<f64>,
    },
    /// P-M accuracy did not grow for `stall_checkpoints` checkpoints while
    /// train accuracy rose.
    PmStalled {
        /// Step of the base checkpoint c_{n−s}.
        since_step: u64,
        /// Step of the newest checkpoint c_n.
        to_step: u64,
        /// Best P-M accuracy up to and including the base checkpoint.
        pm_best: f64,
        /// P-M accuracy of the newest checkpoint.
        pm_now: f64,
        /// Train accuracy of the base checkpoint.
        train_from: f64,
        /// Train accuracy of the newest checkpoint.
        train_to: f64,
    },
}

/// The checkpoint to keep: best P-M, then lower test perplexity, then earlier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Keep {
    /// Step of the checkpoint.
    pub step: u64,
    /// Its P-M accuracy, 0..1.
    pub pm: f64,
    /// Its test perplexity, when known.
    pub test_perplexity: Option<f64>,
}

/// The advice on a run's checkpoints: the rules that fired now and the
/// checkpoint to keep.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Advice {
    /// The rules that fired at the newest checkpoint (over-memorization first).
    pub findings: Vec<Finding>,
    /// The checkpoint to keep, when any has a P-M accuracy.
    pub keep: Option<Keep>,
}

/// A value the rules can use: known and finite.
fn usable(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite())
}

/// The advice for checkpoints in step order (the caller passes only
/// checkpoints whose values are final; checkpoints with a `None` field are
/// skipped by rules that need that field). Checkpoints out of step order are
/// put in order first.
pub fn advise(spec: &AdviceSpec, checkpoints: &[CheckpointView]) -> Advice {
    let mut ordered: Vec<&CheckpointView> = checkpoints.iter().collect();
    ordered.sort_by_key(|c| c.step);
    let findings = [
        over_memorization(spec, &ordered),
        pm_stalled(spec, &ordered),
    ]
    .into_iter()
    .flatten()
    .collect();
    Advice {
        findings,
        keep: keep(&ordered),
    }
}

/// One checkpoint of the over-memorization window.
struct TestPoint {
    step: u64,
    perplexity: f64,
    accuracy: f64,
    distinct: Option<f64>,
}

/// The over-memorization rule at the newest checkpoint (module docs).
fn over_memorization(spec: &AdviceSpec, ordered: &[&CheckpointView]) -> Option<Finding> {
    let points: Vec<TestPoint> = ordered
        .iter()
        .filter_map(|c| {
            Some(TestPoint {
                step: c.step,
                perplexity: usable(c.test_perplexity)?,
                accuracy: usable(c.test_accuracy)?,
                distinct: usable(c.distinct_fraction),
            })
        })
        .collect();
    if spec.window < 2 || points.len() < spec.window {
        return None;
    }
    let window = &points[points.len() - spec.window..];
    let (first, last) = (window.first()?, window.last()?);
    let rose = last.perplexity >= first.perplexity * (1.0 + spec.perplexity_rise) - TOLERANCE;
    let steady = window.windows(2).all(|pair| {
        pair[1].perplexity >= pair[0].perplexity * (1.0 - spec.perplexity_rise) - TOLERANCE
    });
    let (low, high) = window
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.accuracy), hi.max(p.accuracy))
        });
    let flat = high - low <= spec.accuracy_flat + TOLERANCE;
    if !(rose && steady && flat) {
        return None;
    }
    let distinct = first.distinct.zip(last.distinct);
    Some(Finding::OverMemorization {
        from_step: first.step,
        to_step: last.step,
        perplexity_from: first.perplexity,
        perplexity_to: last.perplexity,
        accuracy_from: first.accuracy,
        accuracy_to: last.accuracy,
        distinct_from: distinct.map(|d| d.0),
        distinct_to: distinct.map(|d| d.1),
    })
}

/// The P-M-stalled rule at the newest checkpoint (module docs).
fn pm_stalled(spec: &AdviceSpec, ordered: &[&CheckpointView]) -> Option<Finding> {
    let points: Vec<(u64, f64, f64)> = ordered
        .iter()
        .filter_map(|c| Some((c.step, usable(c.pm)?, usable(c.train_accuracy)?)))
        .collect();
    let s = spec.stall_checkpoints;
    if s < 1 || points.len() < s + 1 {
        return None;
    }
    let base = points.len() - 1 - s;
    let best = points[..=base]
        .iter()
        .map(|p| p.1)
        .fold(f64::NEG_INFINITY, f64::max);
    let no_growth = points[base + 1..]
        .iter()
        .all(|p| p.1 < best + spec.pm_gain - TOLERANCE);
    let (since, now) = (points[base], *points.last()?);
    let train_rose = now.2 - since.2 >= spec.train_gain - TOLERANCE;
    (no_growth && train_rose).then_some(Finding::PmStalled {
        since_step: since.0,
        to_step: now.0,
        pm_best: best,
        pm_now: now.1,
        train_from: since.2,
        train_to: now.2,
    })
}

/// `a` against `b`, the larger first, equal within [`TOLERANCE`].
fn larger_first(a: f64, b: f64) -> Ordering {
    if (a - b).abs() <= TOLERANCE {
        Ordering::Equal
    } else {
        b.total_cmp(&a)
    }
}

/// `a` against `b`, the smaller first, a known value before an unknown one.
fn known_smaller_first(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// The checkpoint to keep (module docs).
fn keep(ordered: &[&CheckpointView]) -> Option<Keep> {
    ordered
        .iter()
        .filter_map(|c| {
            Some(Keep {
                step: c.step,
                pm: usable(c.pm)?,
                test_perplexity: usable(c.test_perplexity),
            })
        })
        .min_by(|a, b| {
            larger_first(a.pm, b.pm)
                .then_with(|| known_smaller_first(a.test_perplexity, b.test_perplexity))
                .then_with(|| a.step.cmp(&b.step))
        })
}

/// A fraction as a percentage with one decimal, e.g. "41.7 %".
fn percent(fraction: f64) -> String {
    format!("{:.1} %", fraction * 100.0)
}

impl Finding {
    /// One plain sentence with the figures and the advice.
    pub fn text(&self) -> String {
        match self {
            Finding::OverMemorization {
                from_step,
                to_step,
                perplexity_from,
                perplexity_to,
                accuracy_from,
                accuracy_to,
                distinct_from,
                distinct_to,
            } => {
                let rise = (perplexity_to / perplexity_from - 1.0) * 100.0;
                let distinct = match distinct_from.zip(*distinct_to) {
                    Some((from, to)) => {
                        format!("; distinct samples {} {from:.2} → {to:.2}", trend(from, to))
                    }
                    None => String::new(),
                };
                format!(
                    "over-memorization: test perplexity rose {perplexity_from:.2} → {perplexity_to:.2} \
                     (+{rise:.0} %) from step {from_step} to step {to_step} while test accuracy stayed at \
                     {} → {}{distinct}. Keep an earlier checkpoint, train fewer epochs or lower the \
                     learning rate.",
                    percent(*accuracy_from),
                    percent(*accuracy_to),
                )
            }
            Finding::PmStalled {
                since_step,
                pm_best,
                pm_now,
                train_from,
                train_to,
                ..
            } => format!(
                "P-M stalled: P-M accuracy has not grown since step {since_step} (best {}, now {}) \
                 while train accuracy rose {} → {}: further epochs memorize. Stop, or lower the \
                 learning rate.",
                percent(*pm_best),
                percent(*pm_now),
                percent(*train_from),
                percent(*train_to),
            ),
        }
    }

    /// The rule's name: `"over-memorization"` or `"pm-stalled"` (the `rule`
    /// tag of the serialized finding).
    pub fn rule(&self) -> &'static str {
        match self {
            Finding::OverMemorization { .. } => "over-memorization",
            Finding::PmStalled { .. } => "pm-stalled",
        }
    }
}

/// "fell", "rose" or "stayed at" for a change from `from` to `to`.
fn trend(from: f64, to: f64) -> &'static str {
    match to.total_cmp(&from) {
        Ordering::Less => "fell",
        Ordering::Greater => "rose",
        Ordering::Equal => "stayed at",
    }
}

impl Keep {
    /// E.g. "keep step 96 (P-M 41.7 %, test perplexity 1.82)".
    pub fn text(&self) -> String {
        match self.test_perplexity {
            Some(p) => format!(
                "keep step {} (P-M {}, test perplexity {p:.2})",
                self.step,
                percent(self.pm)
            ),
            None => format!("keep step {} (P-M {})", self.step, percent(self.pm)),
        }
    }
}

impl Advice {
    /// The finding that the spec's `stop_when` asks to stop on, if it fired.
    pub fn stop_reason(&self, when: StopWhen) -> Option<&Finding> {
        self.findings.iter().find(|f| match when {
            StopWhen::Never => false,
            StopWhen::Memorized => matches!(f, Finding::PmStalled { .. }),
            StopWhen::OverMemorized => matches!(f, Finding::OverMemorization { .. }),
        })
    }

    /// Every finding's text and the keep line, for a status display or a report.
    pub fn lines(&self) -> Vec<String> {
        self.findings
            .iter()
            .map(Finding::text)
            .chain(self.keep.iter().map(Keep::text))
            .collect()
    }

    /// Whether the over-memorization rule fired.
    fn over_memorized(&self) -> bool {
        self.stop_reason(StopWhen::OverMemorized).is_some()
    }

    /// Whether the P-M-stalled rule fired.
    fn stalled(&self) -> bool {
        self.stop_reason(StopWhen::Memorized).is_some()
    }
}

/// One run of a sweep: its settings and its advice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunAdvice {
    /// The run's name.
    pub run: String,
    /// Its peak learning rate.
    pub lr: f64,
    /// Its number of epochs.
    pub epochs: u64,
    /// The advice on its checkpoints.
    pub advice: Advice,
    /// Test accuracy of its last checkpoint, when known.
    pub final_test_accuracy: Option<f64>,
}

/// The advice over a sweep.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SweepAdvice {
    /// Names of the runs where over-memorization fired, in input order.
    pub over_memorized: Vec<String>,
    /// Names of the runs where P-M stalled, in input order.
    pub stalled: Vec<String>,
    /// The run whose settings to prefer (module docs), when there is one.
    pub recommended: Option<RunAdvice>,
    /// The sweep's advice in plain sentences.
    pub text: Vec<String>,
}

/// Over a sweep: which runs over-memorized or stalled, and the (lr, epochs)
/// of the run to prefer: among runs where over-memorization did not fire,
/// the one whose kept checkpoint has the best P-M (ties: lower test
/// perplexity, then lower lr, then fewer epochs); when every run
/// over-memorized, the one with the smallest learning rate and fewest
/// epochs, with the suggestion to go lower.
pub fn advise_sweep(runs: &[RunAdvice]) -> SweepAdvice {
    let names = |pick: fn(&Advice) -> bool| -> Vec<String> {
        runs.iter()
            .filter(|r| pick(&r.advice))
            .map(|r| r.run.clone())
            .collect()
    };
    let over_memorized = names(Advice::over_memorized);
    let stalled = names(Advice::stalled);
    let all_over = !runs.is_empty() && over_memorized.len() == runs.len();
    let recommended = if all_over {
        smallest_setting(runs)
    } else {
        best_run(runs)
    };
    let text = sweep_text(runs, &over_memorized, &stalled, recommended, all_over);
    SweepAdvice {
        over_memorized,
        stalled,
        recommended: recommended.cloned(),
        text,
    }
}

/// Among the runs that did not over-memorize and have a kept checkpoint, the
/// best kept P-M (ties: lower test perplexity, lower lr, fewer epochs).
fn best_run(runs: &[RunAdvice]) -> Option<&RunAdvice> {
    runs.iter()
        .filter(|r| !r.advice.over_memorized())
        .filter_map(|r| Some((r, r.advice.keep.as_ref()?)))
        .min_by(|(a, ka), (b, kb)| {
            larger_first(ka.pm, kb.pm)
                .then_with(|| known_smaller_first(ka.test_perplexity, kb.test_perplexity))
                .then_with(|| a.lr.total_cmp(&b.lr))
                .then_with(|| a.epochs.cmp(&b.epochs))
        })
        .map(|(r, _)| r)
}

/// The run with the smallest learning rate, then the fewest epochs.
fn smallest_setting(runs: &[RunAdvice]) -> Option<&RunAdvice> {
    runs.iter()
        .min_by(|a, b| a.lr.total_cmp(&b.lr).then_with(|| a.epochs.cmp(&b.epochs)))
}

/// A run and its settings, e.g. "run-b (lr 2e-5, 2 epochs)".
fn describe(run: &RunAdvice) -> String {
    format!("{} (lr {:e}, {} epochs)", run.run, run.lr, run.epochs)
}

/// The sweep's sentences: the runs that over-memorized or stalled, and the
/// recommendation.
fn sweep_text(
    runs: &[RunAdvice],
    over_memorized: &[String],
    stalled: &[String],
    recommended: Option<&RunAdvice>,
    all_over: bool,
) -> Vec<String> {
    let listed = |names: &[String]| -> String {
        let runs: Vec<String> = runs
            .iter()
            .filter(|r| names.contains(&r.run))
            .map(describe)
            .collect();
        runs.join(", ")
    };
    let mut text = Vec::new();
    if !over_memorized.is_empty() {
        text.push(format!("over-memorized: {}.", listed(over_memorized)));
    }
    if !stalled.is_empty() {
        text.push(format!("P-M stalled: {}.", listed(stalled)));
    }
    text.push(match recommended {
        Some(run) if all_over => format!(
            "every run over-memorized; the smallest setting is {}: try a lower learning rate or \
             fewer epochs still.",
            describe(run)
        ),
        Some(run) => recommendation_text(run),
        None if runs.is_empty() => "no runs to advise on.".to_string(),
        None => "no run without over-memorization has a P-M accuracy yet: no recommendation."
            .to_string(),
    });
    text
}

/// "recommended: <run> (lr, epochs): keep step … (final test accuracy …)."
fn recommendation_text(run: &RunAdvice) -> String {
    let keep = run
        .advice
        .keep
        .as_ref()
        .map(|k| format!(": {}", k.text()))
        .unwrap_or_default();
    let accuracy = run
        .final_test_accuracy
        .filter(|a| a.is_finite())
        .map(|a| format!("; final test accuracy {}", percent(a)))
        .unwrap_or_default();
    format!("recommended: {}{keep}{accuracy}.", describe(run))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint with test perplexity and test accuracy only.
    fn test_cp(step: u64, perplexity: f64, accuracy: f64) -> CheckpointView {
        CheckpointView {
            step,
            test_perplexity: Some(perplexity),
            test_accuracy: Some(accuracy),
            ..CheckpointView::default()
        }
    }

    /// A checkpoint with P-M and train accuracy only.
    fn pm_cp(step: u64, pm: f64, train: f64) -> CheckpointView {
        CheckpointView {
            step,
            pm: Some(pm),
            train_accuracy: Some(train),
            ..CheckpointView::default()
        }
    }

    /// Checkpoints at steps 32, 64, … with these perplexities and accuracies.
    fn test_run(perplexities: &[f64], accuracies: &[f64]) -> Vec<CheckpointView> {
        perplexities
            .iter()
            .zip(accuracies)
            .enumerate()
            .map(|(i, (&p, &a))| test_cp(32 * (i as u64 + 1), p, a))
            .collect()
    }

    /// Checkpoints at steps 32, 64, … with these P-M and train accuracies.
    fn pm_run(pms: &[f64], trains: &[f64]) -> Vec<CheckpointView> {
        pms.iter()
            .zip(trains)
            .enumerate()
            .map(|(i, (&p, &t))| pm_cp(32 * (i as u64 + 1), p, t))
            .collect()
    }

    fn fired(checkpoints: &[CheckpointView], rule: &str) -> bool {
        advise(&AdviceSpec::default(), checkpoints)
            .findings
            .iter()
            .any(|f| f.rule() == rule)
    }

    const OM: &str = "over-memorization";
    const PS: &str = "pm-stalled";

    #[test]
    fn rising_perplexity_flat_accuracy_fires() {
        let mut run = test_run(&[1.7, 1.82, 1.95, 2.10], &[0.30, 0.312, 0.31, 0.315]);
        run[1].distinct_fraction = Some(0.80);
        run[3].distinct_fraction = Some(0.55);
        let advice = advise(&AdviceSpec::default(), &run);
        assert_eq!(
            advice.findings,
            vec![Finding::OverMemorization {
                from_step: 64,
                to_step: 128,
                perplexity_from: 1.82,
                perplexity_to: 2.10,
                accuracy_from: 0.312,
                accuracy_to: 0.315,
                distinct_from: Some(0.80),
                distinct_to: Some(0.55),
            }]
        );
        let text = advice.findings[0].text();
        for figure in [
            "1.82 → 2.10",
            "+15 %",
            "step 64",
            "step 128",
            "31.2 % → 31.5 %",
            "fell 0.80 → 0.55",
        ] {
            assert!(text.contains(figure), "{figure} not in {text}");
        }
    }

    #[test]
    fn distinct_needs_both_ends() {
        let mut run = test_run(&[1.8, 1.9, 2.1], &[0.3, 0.3, 0.3]);
        run[0].distinct_fraction = Some(0.8);
        let advice = advise(&AdviceSpec::default(), &run);
        match &advice.findings[..] {
            [
                Finding::OverMemorization {
                    distinct_from,
                    distinct_to,
                    ..
                },
            ] => {
                assert_eq!((*distinct_from, *distinct_to), (None, None));
            }
            other => panic!("{other:?}"),
        }
        assert!(!advice.findings[0].text().contains("distinct"));
    }

    #[test]
    fn rising_accuracy_does_not_fire() {
        assert!(!fired(&test_run(&[1.8, 1.9, 2.1], &[0.30, 0.33, 0.36]), OM));
    }

    #[test]
    fn flat_perplexity_does_not_fire() {
        assert!(!fired(&test_run(&[1.8, 1.81, 1.82], &[0.3, 0.3, 0.3]), OM));
    }

    #[test]
    fn single_spike_does_not_fire() {
        assert!(!fired(&test_run(&[1.8, 2.5, 1.9], &[0.3, 0.3, 0.3]), OM));
        assert!(!fired(
            &test_run(&[1.8, 1.8, 2.5, 1.8], &[0.3, 0.3, 0.3, 0.3]),
            OM
        ));
    }

    #[test]
    fn too_few_checkpoints_do_not_fire() {
        assert!(!fired(&test_run(&[1.8, 2.5], &[0.3, 0.3]), OM));
        // Four checkpoints, but only two know their perplexity.
        let mut run = test_run(&[1.8, 1.9, 2.0, 2.5], &[0.3, 0.3, 0.3, 0.3]);
        run[1].test_perplexity = None;
        run[2].test_accuracy = None;
        assert!(!fired(&run, OM));
        run[2].test_accuracy = Some(0.3);
        assert!(fired(&run, OM), "three usable checkpoints are enough");
        run[2].test_perplexity = Some(f64::NAN);
        assert!(!fired(&run, OM), "a NaN is not a usable value");
    }

    #[test]
    fn perplexity_rise_at_threshold() {
        let acc = [0.3, 0.3, 0.3];
        assert!(fired(&test_run(&[1.0, 1.02, 1.05], &acc), OM));
        assert!(!fired(&test_run(&[1.0, 1.02, 1.0499], &acc), OM));
    }

    #[test]
    fn perplexity_fall_at_threshold() {
        let acc = [0.3, 0.3, 0.3];
        // 1.2 → 1.14 falls by exactly 5 %: still rising.
        assert!(fired(&test_run(&[1.0, 1.2, 1.14], &acc), OM));
        assert!(!fired(&test_run(&[1.0, 1.2, 1.139], &acc), OM));
    }

    #[test]
    fn accuracy_flat_at_threshold() {
        let perp = [1.8, 1.9, 2.1];
        assert!(fired(&test_run(&perp, &[0.30, 0.31, 0.32]), OM));
        assert!(fired(&test_run(&perp, &[0.32, 0.30, 0.31]), OM));
        assert!(!fired(&test_run(&perp, &[0.30, 0.31, 0.3201]), OM));
    }

    #[test]
    fn rules_describe_the_newest_checkpoint() {
        let run = test_run(&[1.8, 1.9, 2.1, 1.6], &[0.3, 0.3, 0.3, 0.3]);
        assert!(fired(&run[..3], OM), "fired on the prefix");
        assert!(!fired(&run, OM), "not any more");
    }

    #[test]
    fn checkpoints_are_put_in_step_order() {
        let mut run = test_run(&[1.8, 1.9, 2.1], &[0.3, 0.3, 0.3]);
        run.reverse();
        assert!(fired(&run, OM));
    }

    #[test]
    fn pm_stall_fires() {
        let run = pm_run(
            &[0.30, 0.417, 0.41, 0.412, 0.41],
            &[0.40, 0.52, 0.60, 0.65, 0.683],
        );
        let advice = advise(&AdviceSpec::default(), &run);
        assert_eq!(
            advice.findings,
            vec![Finding::PmStalled {
                since_step: 64,
                to_step: 160,
                pm_best: 0.417,
                pm_now: 0.41,
                train_from: 0.52,
                train_to: 0.683,
            }]
        );
        let text = advice.findings[0].text();
        for figure in [
            "since step 64",
            "best 41.7 %",
            "now 41.0 %",
            "52.0 % → 68.3 %",
            "Stop",
        ] {
            assert!(text.contains(figure), "{figure} not in {text}");
        }
    }

    #[test]
    fn pm_best_counts_earlier_checkpoints() {
        // The best P-M (0.5) came before the base checkpoint.
        let run = pm_run(&[0.50, 0.40, 0.45, 0.48, 0.505], &[0.4, 0.5, 0.6, 0.7, 0.8]);
        match &advise(&AdviceSpec::default(), &run).findings[..] {
            [
                Finding::PmStalled {
                    pm_best,
                    since_step,
                    ..
                },
            ] => assert_eq!((*pm_best, *since_step), (0.50, 64)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pm_growing_does_not_fire() {
        assert!(!fired(
            &pm_run(&[0.30, 0.40, 0.41, 0.42, 0.43], &[0.4, 0.5, 0.6, 0.7, 0.8]),
            PS
        ));
    }

    #[test]
    fn train_flat_does_not_fire() {
        assert!(!fired(
            &pm_run(&[0.40, 0.40, 0.40, 0.40], &[0.52, 0.53, 0.535, 0.539]),
            PS
        ));
    }

    #[test]
    fn pm_stall_needs_enough_checkpoints() {
        assert!(!fired(&pm_run(&[0.40, 0.40, 0.40], &[0.5, 0.6, 0.7]), PS));
        assert!(fired(
            &pm_run(&[0.40, 0.40, 0.40, 0.40], &[0.5, 0.6, 0.7, 0.8]),
            PS
        ));
        let mut run = pm_run(&[0.40, 0.40, 0.40, 0.40], &[0.5, 0.6, 0.7, 0.8]);
        run[2].pm = None;
        assert!(!fired(&run, PS));
    }

    #[test]
    fn pm_gain_at_threshold() {
        let train = [0.5, 0.6, 0.7, 0.8];
        // A growth of exactly pm_gain counts as growth.
        assert!(!fired(&pm_run(&[0.40, 0.40, 0.41, 0.40], &train), PS));
        assert!(fired(&pm_run(&[0.40, 0.40, 0.4099, 0.40], &train), PS));
    }

    #[test]
    fn train_gain_at_threshold() {
        let pm = [0.40, 0.40, 0.40, 0.40];
        assert!(fired(&pm_run(&pm, &[0.52, 0.53, 0.53, 0.54]), PS));
        assert!(!fired(&pm_run(&pm, &[0.52, 0.53, 0.53, 0.5399]), PS));
    }

    #[test]
    fn keep_ties_go_to_lower_perplexity_then_earlier_step() {
        let cp = |step, pm, perp| CheckpointView {
            step,
            pm: Some(pm),
            test_perplexity: perp,
            ..CheckpointView::default()
        };
        let run = vec![
            cp(32, 0.30, Some(1.5)),
            cp(64, 0.417, Some(1.9)),
            cp(96, 0.417, Some(1.82)),
            cp(128, 0.417, None),
            cp(160, 0.417, Some(1.82)),
            CheckpointView {
                step: 192,
                ..CheckpointView::default()
            },
        ];
        let keep = advise(&AdviceSpec::default(), &run).keep;
        let expected = Keep {
            step: 96,
            pm: 0.417,
            test_perplexity: Some(1.82),
        };
        assert_eq!(keep, Some(expected.clone()));
        assert_eq!(
            expected.text(),
            "keep step 96 (P-M 41.7 %, test perplexity 1.82)"
        );
        let unknown = Keep {
            test_perplexity: None,
            ..expected
        };
        assert_eq!(unknown.text(), "keep step 96 (P-M 41.7 %)");
        assert_eq!(advise(&AdviceSpec::default(), &run[5..]).keep, None);
    }

    fn both_findings() -> Advice {
        let mut run = pm_run(&[0.40, 0.40, 0.40, 0.40], &[0.5, 0.6, 0.7, 0.8]);
        for (c, p) in run.iter_mut().zip([1.5, 1.8, 1.9, 2.1]) {
            c.test_perplexity = Some(p);
            c.test_accuracy = Some(0.3);
        }
        advise(&AdviceSpec::default(), &run)
    }

    #[test]
    fn stop_reason_follows_stop_when() {
        let advice = both_findings();
        assert_eq!(advice.findings.len(), 2);
        assert_eq!(advice.stop_reason(StopWhen::Never), None);
        assert_eq!(
            advice.stop_reason(StopWhen::Memorized).map(Finding::rule),
            Some(PS)
        );
        assert_eq!(
            advice
                .stop_reason(StopWhen::OverMemorized)
                .map(Finding::rule),
            Some(OM)
        );
        let only_stall = Advice {
            findings: vec![advice.findings[1].clone()],
            keep: None,
        };
        assert_eq!(only_stall.stop_reason(StopWhen::OverMemorized), None);
        assert!(only_stall.stop_reason(StopWhen::Memorized).is_some());
    }

    #[test]
    fn lines_hold_findings_and_keep() {
        let lines = both_findings().lines();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("over-memorization:"));
        assert!(lines[1].starts_with("P-M stalled:"));
        assert!(lines[2].starts_with("keep step 32"));
    }

    #[test]
    fn findings_serialize_with_their_rule() {
        for finding in both_findings().findings {
            let json = serde_json::to_value(&finding).expect("serializes");
            assert_eq!(json["rule"], finding.rule());
            let back: Finding = serde_json::from_value(json).expect("deserializes");
            assert_eq!(back, finding);
        }
    }

    #[test]
    fn validate_names_the_key() {
        assert_eq!(AdviceSpec::default().validate(), Ok(()));
        let bad = |edit: fn(&mut AdviceSpec), key: &str, value: &str| {
            let mut spec = AdviceSpec::default();
            edit(&mut spec);
            let err = spec.validate().expect_err(key);
            assert!(err.contains(&format!("advice.{key} = {value}")), "{err}");
        };
        bad(|s| s.window = 1, "window", "1");
        bad(|s| s.perplexity_rise = 0.0, "perplexity_rise", "0");
        bad(
            |s| s.perplexity_rise = f64::INFINITY,
            "perplexity_rise",
            "inf",
        );
        bad(|s| s.accuracy_flat = -0.1, "accuracy_flat", "-0.1");
        bad(|s| s.stall_checkpoints = 0, "stall_checkpoints", "0");
        bad(|s| s.pm_gain = f64::NAN, "pm_gain", "NaN");
        bad(|s| s.train_gain = 1.5, "train_gain", "1.5");
        let both = AdviceSpec {
            window: 0,
            pm_gain: 2.0,
            ..AdviceSpec::default()
        };
        let err = both.validate().expect_err("two errors");
        assert!(
            err.contains("advice.window") && err.contains("advice.pm_gain"),
            "{err}"
        );
    }

    #[test]
    fn spec_from_toml() {
        let spec: AdviceSpec =
            toml::from_str("window = 4\nstop_when = \"memorized\"\n").expect("parses");
        assert_eq!(
            spec,
            AdviceSpec {
                window: 4,
                stop_when: StopWhen::Memorized,
                ..AdviceSpec::default()
            }
        );
        assert!(!spec.is_default());
        let empty: AdviceSpec = toml::from_str("").expect("parses");
        assert!(empty.is_default());
        let over: AdviceSpec = toml::from_str("stop_when = \"over-memorized\"").expect("parses");
        assert_eq!(over.stop_when, StopWhen::OverMemorized);
        let err = toml::from_str::<AdviceSpec>("windows = 3").expect_err("unknown key");
        assert!(err.to_string().contains("windows"), "{err}");
        assert!(toml::from_str::<AdviceSpec>("stop_when = \"sometimes\"").is_err());
        let round = toml::to_string(&spec).expect("serializes");
        assert_eq!(toml::from_str::<AdviceSpec>(&round).expect("parses"), spec);
    }

    fn run_advice(run: &str, lr: f64, epochs: u64, pm: f64, over: bool) -> RunAdvice {
        let mut findings = Vec::new();
        if over {
            findings.push(Finding::OverMemorization {
                from_step: 96,
                to_step: 160,
                perplexity_from: 1.8,
                perplexity_to: 2.1,
                accuracy_from: 0.3,
                accuracy_to: 0.3,
                distinct_from: None,
                distinct_to: None,
            });
        }
        RunAdvice {
            run: run.to_string(),
            lr,
            epochs,
            advice: Advice {
                findings,
                keep: Some(Keep {
                    step: 96,
                    pm,
                    test_perplexity: Some(1.8),
                }),
            },
            final_test_accuracy: Some(0.4),
        }
    }

    #[test]
    fn sweep_recommends_the_best_run_without_over_memorization() {
        let mut stalled = run_advice("c", 1e-5, 2, 0.42, false);
        stalled.advice.findings.push(Finding::PmStalled {
            since_step: 96,
            to_step: 192,
            pm_best: 0.42,
            pm_now: 0.41,
            train_from: 0.5,
            train_to: 0.7,
        });
        let runs = vec![
            run_advice("a", 1e-4, 3, 0.50, true),
            run_advice("b", 2e-5, 2, 0.42, false),
            stalled,
            run_advice("d", 5e-6, 1, 0.30, false),
        ];
        let sweep = advise_sweep(&runs);
        assert_eq!(sweep.over_memorized, vec!["a"]);
        assert_eq!(sweep.stalled, vec!["c"]);
        // b and c tie on P-M and perplexity: the lower lr wins.
        assert_eq!(
            sweep.recommended.as_ref().map(|r| r.run.as_str()),
            Some("c")
        );
        let text = sweep.text.join("\n");
        for figure in [
            "over-memorized: a (lr 1e-4, 3 epochs)",
            "recommended: c (lr 1e-5, 2 epochs)",
            "P-M 42.0 %",
        ] {
            assert!(text.contains(figure), "{figure} not in {text}");
        }
        let sweep = advise_sweep(&runs[..2]);
        assert_eq!(sweep.recommended.map(|r| r.run), Some("b".to_string()));
    }

    #[test]
    fn sweep_when_every_run_over_memorized() {
        let runs = vec![
            run_advice("a", 1e-4, 3, 0.50, true),
            run_advice("b", 2e-5, 3, 0.42, true),
            run_advice("c", 2e-5, 2, 0.40, true),
        ];
        let sweep = advise_sweep(&runs);
        assert_eq!(sweep.over_memorized, vec!["a", "b", "c"]);
        assert_eq!(
            sweep.recommended.as_ref().map(|r| r.run.as_str()),
            Some("c")
        );
        let text = sweep.text.join("\n");
        assert!(text.contains("every run over-memorized"), "{text}");
        assert!(
            text.contains("c (lr 2e-5, 2 epochs)") && text.contains("lower learning rate"),
            "{text}"
        );
    }

    #[test]
    fn empty_sweep() {
        let sweep = advise_sweep(&[]);
        assert_eq!(sweep.recommended, None);
        assert!(sweep.over_memorized.is_empty());
    }
}
