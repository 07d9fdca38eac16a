//! The gates of `make reproduce`'s protocol (examples/reproduce/PROTOCOL.md),
//! computed from result rows alone — no calibration, no R² — so that a
//! pilot can read them (`premem report --gates-only`) without seeing what
//! the experiment is for.
//!
//! - Gate 0, on the base: accuracy per family within the protocol's bounds
//!   (1-step ≥ 90 %, 2-step ≥ 75 %, 3-step ≤ 40 %), and the median target
//!   perplexity of the test problems it solves within 15 % of the perfect
//!   solver's, per family.
//! - Gate 1, on the runs: the first checkpoint keeps ≥ 80 % of the base's
//!   test accuracy; at the end of most runs ≥ 80 % of train memorized and
//!   ≤ 5 % of test below p; final test accuracies spanning ≥ 25 points.

use std::collections::BTreeMap;

use serde::Serialize;

use premem_core::data::results::ExampleResult;
use premem_core::data::synth::FamilyPerplexity;
use premem_core::science::pm::memorized;

use super::run::{base_rows, median};
use super::task::{Base, families_of, mean, perfect_solver};
use crate::load::RunData;

/// An example is solved when at least this share of its samples is right.
pub const SOLVED: f64 = 0.5;
/// Gate 0: the solved examples' median perplexity over the perfect
/// solver's, at most.
pub const FLOOR_RATIO: f64 = 1.15;
/// Gate 1 (a): the first checkpoint's test accuracy over the base's.
pub const KEPT: f64 = 0.8;
/// Gate 1 (b): memorized train examples at the end.
pub const MEMORIZED: f64 = 0.8;
/// Gate 1 (c): test examples below p at the end, at most.
pub const TEST_BELOW_P: f64 = 0.05;
/// Gate 1 (d): the spread of final test accuracies, at least.
pub const SPAN: f64 = 0.25;

/// Gate 0's bound on a family's accuracy: (at least, at most).
fn accuracy_bounds(family: &str) -> (Option<f64>, Option<f64>) {
    match family {
        "1-step" => (Some(0.90), None),
        "2-step" => (Some(0.75), None),
        "3-step" => (None, Some(0.40)),
        _ => (None, None),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Gate0Family {
    pub family: String,
    pub examples: usize,
    pub accuracy: f64,
    pub min_accuracy: Option<f64>,
    pub max_accuracy: Option<f64>,
    pub solved: usize,
    pub solved_median_perplexity: Option<f64>,
    pub perfect_solver_median: Option<f64>,
    pub pass: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Gate0 {
    /// The base run and the step its test results are from.
    pub run: String,
    pub step: u64,
    pub test_accuracy: f64,
    pub families: Vec<Gate0Family>,
    pub pass: bool,
}

/// Gate 0 of `run`'s test results at `step`; `None` without test rows or
/// families.
pub fn gate0(run: &RunData, step: u64) -> Option<Gate0> {
    let test = run.record.spec.data.test.as_ref()?;
    let families = families_of(test);
    let floors: BTreeMap<String, f64> = perfect_solver(test)
        .and_then(|mut p| p.remove("test"))
        .unwrap_or_default()
        .into_iter()
        .map(|f: FamilyPerplexity| (f.family, f.median))
        .collect();
    let rows: Vec<&ExampleResult> = base_rows(run.rows.get(&step)?, "test").collect();
    if rows.is_empty() || families.is_empty() {
        return None;
    }
    let mut by_family: BTreeMap<&str, Vec<&ExampleResult>> = BTreeMap::new();
    for r in &rows {
        if let Some(family) = families.get(&r.id) {
            by_family.entry(family).or_default().push(r);
        }
    }
    let families: Vec<Gate0Family> = by_family
        .into_iter()
        .map(|(family, rows)| gate0_family(family, &rows, floors.get(family).copied()))
        .collect();
    Some(Gate0 {
        run: run.name.clone(),
        step,
        test_accuracy: mean(&rows.iter().map(|r| r.accuracy).collect::<Vec<_>>()),
        pass: families.iter().all(|f| f.pass),
        families,
    })
}

fn gate0_family(family: &str, rows: &[&ExampleResult], floor: Option<f64>) -> Gate0Family {
    let accuracy = mean(&rows.iter().map(|r| r.accuracy).collect::<Vec<_>>());
    let solved: Vec<f64> = rows
        .iter()
        .filter(|r| r.accuracy >= SOLVED)
        .map(|r| r.target_perplexity)
        .collect();
    let (min_accuracy, max_accuracy) = accuracy_bounds(family);
    let solved_median = median(solved.clone());
    let near_floor = match (solved_median, floor) {
        (Some(m), Some(f)) => m <= f * FLOOR_RATIO,
        _ => false,
    };
    Gate0Family {
        family: family.to_string(),
        examples: rows.len(),
        accuracy,
        min_accuracy,
        max_accuracy,
        solved: solved.len(),
        solved_median_perplexity: solved_median,
        perfect_solver_median: floor,
        pass: near_floor
            && min_accuracy.is_none_or(|m| accuracy >= m)
            && max_accuracy.is_none_or(|m| accuracy <= m),
    }
}

/// Gate 0 of the base, when it is a premem run with test results at its
/// step; else of a lone run without a base at its last step with test
/// results (the base itself, reported on its own).
pub fn base_gate0(runs: &[RunData], base: Option<&Base>) -> Option<Gate0> {
    if let Some(Base {
        run: Some((run, step)),
        ..
    }) = base
    {
        return gate0(run, *step);
    }
    match runs {
        [run] if run.record.spec.model.base.is_none() => {
            let step = *run
                .rows
                .iter()
                .rev()
                .find(|(_, rows)| base_rows(rows, "test").next().is_some())?
                .0;
            gate0(run, step)
        }
        _ => None,
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Gate1Run {
    pub run: String,
    pub first_step: u64,
    pub first_test_accuracy: f64,
    /// The first checkpoint's test accuracy over the base's.
    pub kept: Option<f64>,
    pub last_step: u64,
    pub memorized: f64,
    pub test_below_p: f64,
    pub final_test_accuracy: f64,
}

impl Gate1Run {
    /// (b) and (c) at the end.
    pub fn memorizes(&self) -> bool {
        self.memorized >= MEMORIZED && self.test_below_p <= TEST_BELOW_P
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Gate1 {
    /// The threshold of the gates: the runs' own `eval.threshold`.
    pub p: f64,
    pub base_test_accuracy: Option<f64>,
    pub runs: Vec<Gate1Run>,
    /// (a): every run kept enough.
    pub kept_everywhere: bool,
    /// Runs that meet (b) and (c).
    pub memorizing_runs: usize,
    pub span: f64,
    pub pass: bool,
}

/// Gate 1 over the runs (each with test results at two checkpoints or
/// more); `None` when no run has them.
pub fn gate1(runs: &[RunData], base_test_accuracy: Option<f64>) -> Option<Gate1> {
    let p = runs.first()?.record.spec.eval.threshold.perplexity();
    let runs: Vec<Gate1Run> = runs
        .iter()
        .filter_map(|r| gate1_run(r, p, base_test_accuracy))
        .collect();
    if runs.is_empty() {
        return None;
    }
    let finals: Vec<f64> = runs.iter().map(|r| r.final_test_accuracy).collect();
    let span = finals.iter().copied().fold(f64::MIN, f64::max)
        - finals.iter().copied().fold(f64::MAX, f64::min);
    let kept_everywhere = runs.iter().all(|r| r.kept.is_some_and(|k| k >= KEPT));
    let memorizing_runs = runs.iter().filter(|r| r.memorizes()).count();
    Some(Gate1 {
        p,
        base_test_accuracy,
        pass: kept_everywhere && 2 * memorizing_runs > runs.len() && span >= SPAN,
        kept_everywhere,
        memorizing_runs,
        span,
        runs,
    })
}

fn gate1_run(run: &RunData, p: f64, base: Option<f64>) -> Option<Gate1Run> {
    let tested: Vec<(u64, &Vec<ExampleResult>)> = run
        .rows
        .iter()
        .filter(|(_, rows)| base_rows(rows, "test").next().is_some())
        .map(|(step, rows)| (*step, rows))
        .collect();
    let (&(first_step, first), &(last_step, last)) = (tested.first()?, tested.last()?);
    let accuracy = |rows: &[ExampleResult]| {
        mean(
            &base_rows(rows, "test")
                .map(|r| r.accuracy)
                .collect::<Vec<_>>(),
        )
    };
    let below = |split: &str| {
        let values: Vec<f64> = base_rows(last, split)
            .map(|r| f64::from(u8::from(memorized(r.target_perplexity, p))))
            .collect();
        mean(&values)
    };
    let first_test_accuracy = accuracy(first);
    Some(Gate1Run {
        run: run.name.clone(),
        first_step,
        first_test_accuracy,
        kept: base.filter(|b| *b > 0.0).map(|b| first_test_accuracy / b),
        last_step,
        memorized: below("train"),
        test_below_p: below("test"),
        final_test_accuracy: accuracy(last),
    })
}

/// Both gates of `runs` and their base.
#[derive(Clone, Debug, Serialize)]
pub struct Gates {
    pub gate0: Option<Gate0>,
    pub gate1: Option<Gate1>,
}

pub fn gates(runs: &[RunData], base: Option<&Base>) -> Gates {
    let gate0 = base_gate0(runs, base);
    let with_base = base.is_some();
    Gates {
        gate1: with_base
            .then(|| gate1(runs, gate0.as_ref().map(|g| g.test_accuracy)))
            .flatten(),
        gate0,
    }
}
