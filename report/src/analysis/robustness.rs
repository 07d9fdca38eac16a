//! The robustness view (paper §5.1): accuracy with and without preambles,
//! by the examples' P-M accuracy.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::run::RunAnalysis;
use crate::load::RunData;

#[derive(Clone, Debug, Serialize)]
pub struct Bucket {
    pub low: f64,
    pub high: f64,
    pub examples: usize,
    /// Mean accuracy without a preamble.
    pub base_accuracy: Option<f64>,
    /// Mean accuracy with each preamble (in `Robustness::preambles` order).
    pub preamble_accuracy: Vec<Option<f64>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Robustness {
    /// (run, step) whose preamble rows are used (per run: the last
    /// checkpoint that has them).
    pub checkpoints: Vec<(String, u64)>,
    pub preambles: Vec<String>,
    pub buckets: Vec<Bucket>,
}

/// One train example at the checkpoint the view uses.
struct Entry {
    pm: f64,
    /// Accuracy without a preamble.
    base: Option<f64>,
    /// Accuracy by preamble.
    with: BTreeMap<String, f64>,
}

/// Per run, the last checkpoint with preamble rows; its examples bucketed by
/// P-M accuracy into `buckets` equal-width buckets. Only examples with a row
/// for no preamble and for every preamble count, so each bucket's numbers
/// average over the same examples. `None`: no such example.
pub(super) fn robustness(
    runs: &[RunData],
    analyses: &[RunAnalysis],
    buckets: usize,
) -> Option<Robustness> {
    let buckets = buckets.max(1);
    let mut preambles = BTreeSet::new();
    let mut checkpoints = vec![];
    let mut entries = vec![];
    for (run, analysis) in runs.iter().zip(analyses) {
        if let Some((step, run_entries)) = entries_of(run, analysis, &mut preambles) {
            checkpoints.push((run.name.clone(), step));
            entries.extend(run_entries);
        }
    }
    if entries.is_empty() {
        return None;
    }
    let preambles: Vec<String> = preambles.into_iter().collect();
    // Each bucket's numbers then average over the same examples.
    entries.retain(|e| e.base.is_some() && preambles.iter().all(|p| e.with.contains_key(p)));
    if entries.is_empty() {
        return None;
    }
    let buckets = (0..buckets)
        .map(|b| bucket(b, buckets, &entries, &preambles))
        .collect();
    Some(Robustness {
        checkpoints,
        preambles,
        buckets,
    })
}

/// The step of a run's last checkpoint with preamble rows and the entries of
/// its train examples that have some; adds the preambles seen to `preambles`.
fn entries_of(
    run: &RunData,
    analysis: &RunAnalysis,
    preambles: &mut BTreeSet<String>,
) -> Option<(u64, Vec<Entry>)> {
    let (&step, rows) = run.rows.iter().rev().find(|(_, rows)| {
        rows.iter()
            .any(|r| r.split == "train" && !r.preamble.is_empty())
    })?;
    let pm: BTreeMap<&str, f64> = analysis
        .examples
        .iter()
        .filter(|e| e.step == step)
        .map(|e| (e.id.as_str(), e.pm))
        .collect();
    let mut by_id: BTreeMap<&str, (Option<f64>, BTreeMap<String, f64>)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.split == "train") {
        let entry = by_id.entry(&r.id).or_default();
        if r.preamble.is_empty() {
            entry.0 = Some(r.accuracy);
        } else {
            preambles.insert(r.preamble.clone());
            entry.1.insert(r.preamble.clone(), r.accuracy);
        }
    }
    let entries = by_id
        .into_iter()
        .filter_map(|(id, (base, with))| {
            let &pm = pm.get(id)?;
            (!with.is_empty()).then_some(Entry { pm, base, with })
        })
        .collect();
    Some((step, entries))
}

/// Bucket `b` of `n`: `[b/n, (b+1)/n)`, the last one closed.
fn bucket(b: usize, n: usize, entries: &[Entry], preambles: &[String]) -> Bucket {
    let mean = |values: Vec<f64>| {
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    let (low, high) = (b as f64 / n as f64, (b + 1) as f64 / n as f64);
    let last = b + 1 == n;
    let members: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.pm >= low && (e.pm < high || (last && e.pm <= high)))
        .collect();
    Bucket {
        low,
        high,
        examples: members.len(),
        base_accuracy: mean(members.iter().filter_map(|e| e.base).collect()),
        preamble_accuracy: preambles
            .iter()
            .map(|p| {
                mean(
                    members
                        .iter()
                        .filter_map(|e| e.with.get(p).copied())
                        .collect(),
                )
            })
            .collect(),
    }
}
