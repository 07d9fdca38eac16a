//! The "What limits the fit" section of `report.md`.

use std::fmt::Write as _;

use super::{fmt, percent};
use crate::analysis::{AfterMemorization, Analysis, MEMORIZED};

pub(super) fn limits(md: &mut String, a: &Analysis) {
    let Some(l) = &a.limits else { return };
    let _ = writeln!(md, "## What limits the fit\n");
    let _ = writeln!(
        md,
        "Over the {} checkpoints with a complete test split, one standard error of a checkpoint's test accuracy (the spread of its per-problem accuracies over √problems) is {:.2} points (median; at most {:.2}), while the test accuracies differ between checkpoints by a standard deviation of {:.2} points. That noise alone caps the R² of any predictor, even the true test accuracy, at **{}** (1 − mean SE² / variance).\n",
        l.checkpoints,
        100.0 * l.test_se_median,
        100.0 * l.test_se_max,
        100.0 * l.test_variance.sqrt(),
        fmt(l.ceiling, 3)
    );
    let _ = writeln!(
        md,
        "P-M accuracy recomputed from fewer samples per train example (k of the K drawn, without replacement) from fewer train examples (every 4th, every 2nd by id), and from fewer checkpoints (every 2nd, every 4th of each run, counted back from its last; scored on those only); the test side otherwise unchanged, R² out of sample by the same protocol:\n"
    );
    row(md, "samples per train example (k)", &l.by_samples, |k| {
        k.to_string()
    });
    row(md, "train examples", &l.by_examples, |f| {
        format!("{:.0}%", 100.0 * f)
    });
    row(md, "checkpoints: every n-th", &l.by_spacing, |n| {
        n.to_string()
    });
    after_memorization(md, a);
}

/// P-M and test accuracy from the memorization of each run's train set to
/// its last checkpoint.
fn after_memorization(md: &mut String, a: &Analysis) {
    let Some(l) = &a.limits else { return };
    if l.after_memorization.is_empty() {
        return;
    }
    let n = l.after_memorization.len() as f64;
    let mean = |f: &dyn Fn(&AfterMemorization) -> f64| {
        100.0 * l.after_memorization.iter().map(f).sum::<f64>() / n
    };
    let _ = writeln!(
        md,
        "Once a train example is memorized its P-M accuracy is fixed, so P-M cannot follow test accuracy that moves after the train set is memorized (from the first checkpoint with at least {:.0}% of it memorized). Over these {} runs test accuracy moved by {:+.1} points on average after that checkpoint, P-M by {:+.1}:\n",
        100.0 * MEMORIZED,
        l.after_memorization.len(),
        mean(&|r| r.last_test - r.test),
        mean(&|r| r.last_pm - r.pm)
    );
    let _ = writeln!(
        md,
        "| run | memorized at step | last step | P-M then → last | test then → last |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for r in &l.after_memorization {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} → {} | {} → {} |",
            r.run,
            r.step,
            r.last_step,
            percent(Some(r.pm)),
            percent(Some(r.last_pm)),
            percent(Some(r.test)),
            percent(Some(r.last_test))
        );
    }
    let _ = writeln!(md);
}

/// A two-line table: the settings, then P-M's out-of-sample R² at each.
fn row<T: Copy>(
    md: &mut String,
    what: &str,
    values: &[(T, Option<f64>)],
    label: impl Fn(T) -> String,
) {
    let header: Vec<String> = values.iter().map(|&(v, _)| label(v)).collect();
    let r2: Vec<String> = values.iter().map(|&(_, r2)| fmt(r2, 3)).collect();
    let _ = writeln!(md, "| {what} | {} |", header.join(" | "));
    let _ = writeln!(md, "|---|{}", "---:|".repeat(values.len()));
    let _ = writeln!(md, "| P-M R² out of sample | {} |\n", r2.join(" | "));
}
