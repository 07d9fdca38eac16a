//! What makes a report's numbers suspect, said up front: result rows whose
//! target perplexity is not finite (`inf` when a checkpoint's weights were
//! corrupt, or its scores overflowed), counted per run and checkpoint. Such
//! rows are never memorized under any threshold, so they silently pull P-M
//! down; the report keeps them and names them.

use super::super::load::RunData;

/// One line per run and checkpoint with rows of non-finite perplexity.
pub fn non_finite_perplexities(runs: &[RunData]) -> Vec<String> {
    let mut warnings = vec![];
    for run in runs {
        for (step, rows) in &run.rows {
            let bad = rows
                .iter()
                .filter(|r| !r.target_perplexity.is_finite())
                .count();
            if bad > 0 {
                warnings.push(format!(
                    "run `{}` step {step}: {bad} of {} result rows have a non-finite target perplexity; the checkpoint's weights may be corrupt (check it, then evaluate it again with --redo)",
                    run.name,
                    rows.len()
                ));
            }
        }
    }
    warnings
}
