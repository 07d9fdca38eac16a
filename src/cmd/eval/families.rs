//! `premem eval`'s view per problem family (the synthetic task's 1-step,
//! 2-step, …): accuracy, and the target perplexity of the problems the
//! model solves next to the perfect solver's (from `synth.json` beside the
//! data), which says whether the model knows the traces' style without
//! having seen these traces.

use std::collections::BTreeMap;
use std::path::Path;

use premem_core::data::dataset::FAMILY;
use premem_core::data::synth::summarize_families;
use premem_core::{Example, Split};
use premem_evaluator::ExampleResult;

/// An example counts as solved when at least half its samples are right.
const SOLVED: f64 = 0.5;

/// Prints one line per family when the examples have families.
pub fn print(examples: &[&Example], rows: &[ExampleResult], split: Split, data: &Path) {
    let family_of: BTreeMap<&str, &str> = examples
        .iter()
        .filter_map(|e| e.meta.get(FAMILY).map(|f| (e.id.as_str(), f.as_str())))
        .collect();
    if family_of.is_empty() {
        return;
    }
    let mut by_family: BTreeMap<&str, Vec<&ExampleResult>> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.preamble.is_empty()) {
        if let Some(family) = family_of.get(row.id.as_str()) {
            by_family.entry(family).or_default().push(row);
        }
    }
    let perfect = perfect_solver(data, split);
    for (family, rows) in by_family {
        let accuracy = rows.iter().map(|r| r.accuracy).sum::<f64>() / rows.len() as f64;
        let solved: Vec<(String, f64)> = rows
            .iter()
            .filter(|r| r.accuracy >= SOLVED)
            .map(|r| (family.to_string(), r.target_perplexity))
            .collect();
        let median = summarize_families(&solved)
            .first()
            .map_or(f64::NAN, |f| f.median);
        let floor = perfect
            .get(family)
            .map(|p| format!(", the perfect solver's {p:.3}"))
            .unwrap_or_default();
        println!(
            "  {family}: {} examples, accuracy {:.1}%, target perplexity median {:.3} over the {} solved (>= {:.0}% of samples right){floor}",
            rows.len(),
            100.0 * accuracy,
            median,
            solved.len(),
            100.0 * SOLVED,
        );
    }
}

/// The perfect solver's median perplexity per family of `split`, from the
/// `synth.json` that `premem data synth` wrote beside the data (empty when
/// there is none).
fn perfect_solver(data: &Path, split: Split) -> BTreeMap<String, f64> {
    premem_core::data::synth::perfect_solver_beside(data)
        .and_then(|mut splits| splits.remove(split.name()))
        .unwrap_or_default()
        .into_iter()
        .map(|f| (f.family, f.median))
        .collect()
}
