//! The "Task and base" section of `report.md` (the perfect solver, the
//! base model, the protocol's gates, P-M per family, P-M where most of the
//! train set is memorized), and the gates alone for `--gates-only`.

use std::fmt::Write as _;

use super::{fmt, percent, short};
use crate::analysis::gates::{self, Gate0, Gate1, Gates};
use crate::analysis::{Analysis, MOSTLY_MEMORIZED, TaskReport};

pub(super) fn task(md: &mut String, a: &Analysis) {
    let t = &a.task;
    if t.perfect_solver.is_none() && t.base.is_none() && t.families.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Task and base\n");
    perfect_solver(md, t);
    base(md, t);
    gates_markdown(md, &t.gates);
    families(md, t);
    memorized_fit(md, a);
}

fn perfect_solver(md: &mut String, t: &TaskReport) {
    let Some(splits) = &t.perfect_solver else {
        return;
    };
    let _ = writeln!(
        md,
        "**The perfect solver's perplexity** of the target traces (`synth.json`, computed exactly by `premem data synth`): what a model that knows each problem's answer and steps and the traces' style, but not which wording a trace drew, assigns to it — the least perplexity a model that solves a problem without having memorized its trace reaches. Median (least–largest) per family:\n"
    );
    let _ = writeln!(md, "| split | family | examples | median | range |");
    let _ = writeln!(md, "|---|---|---:|---:|---:|");
    for (split, families) in splits {
        for f in families {
            let _ = writeln!(
                md,
                "| {split} | {} | {} | {:.3} | {:.3}–{:.3} |",
                f.family, f.examples, f.median, f.min, f.max
            );
        }
    }
    let _ = writeln!(md);
}

fn base(md: &mut String, t: &TaskReport) {
    let Some(b) = &t.base else { return };
    let from = match &b.run {
        Some((run, step)) => format!(" (run `{run}`, step {step})"),
        None => String::new(),
    };
    let _ = writeln!(
        md,
        "**Base model**: `{}`{from}; weights SHA-256 `{}`.\n",
        b.path,
        b.sha256.as_deref().map_or("not recorded", short)
    );
}

/// Gate 0 and Gate 1 (what `premem report --gates-only` prints).
pub(crate) fn gates_markdown(md: &mut String, g: &Gates) {
    if let Some(g0) = &g.gate0 {
        gate0(md, g0);
    }
    if let Some(g1) = &g.gate1 {
        gate1(md, g1);
    }
}

fn gate0(md: &mut String, g: &Gate0) {
    let _ = writeln!(
        md,
        "**Gate 0** (examples/reproduce/PROTOCOL.md), the base (`{}` at step {}) on the test split, test accuracy {}: **{}**.\n",
        g.run,
        g.step,
        percent(Some(g.test_accuracy)),
        pass(g.pass)
    );
    let _ = writeln!(
        md,
        "| family | examples | accuracy | bound | solved (≥ {:.0}% of samples right) | their median perplexity | perfect solver | ratio (≤ {:.2}) | pass |",
        100.0 * gates::SOLVED,
        gates::FLOOR_RATIO
    );
    let _ = writeln!(md, "|---|---:|---:|---|---:|---:|---:|---:|---|");
    for f in &g.families {
        let bound = match (f.min_accuracy, f.max_accuracy) {
            (Some(lo), _) => format!("≥ {:.0}%", 100.0 * lo),
            (_, Some(hi)) => format!("≤ {:.0}%", 100.0 * hi),
            _ => "–".into(),
        };
        let ratio = match (f.solved_median_perplexity, f.perfect_solver_median) {
            (Some(m), Some(p)) => Some(m / p),
            _ => None,
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {bound} | {} | {} | {} | {} | {} |",
            f.family,
            f.examples,
            percent(Some(f.accuracy)),
            f.solved,
            fmt(f.solved_median_perplexity, 3),
            fmt(f.perfect_solver_median, 3),
            fmt(ratio, 3),
            pass(f.pass)
        );
    }
    let _ = writeln!(md);
}

fn gate1(md: &mut String, g: &Gate1) {
    let _ = writeln!(
        md,
        "**Gate 1**, p = {:.3} (the runs' `eval.threshold`): (a) every run's first checkpoint keeps ≥ {:.0}% of the base's test accuracy ({}): {}; at the end of most runs (b) ≥ {:.0}% of train memorized and (c) ≤ {:.0}% of test below p: {} of {} runs; (d) final test accuracies span {:.1} points (≥ {:.0}). **{}**.\n",
        g.p,
        100.0 * gates::KEPT,
        percent(g.base_test_accuracy),
        pass(g.kept_everywhere),
        100.0 * gates::MEMORIZED,
        100.0 * gates::TEST_BELOW_P,
        g.memorizing_runs,
        g.runs.len(),
        100.0 * g.span,
        100.0 * gates::SPAN,
        pass(g.pass)
    );
    let _ = writeln!(
        md,
        "| run | first step | its test acc. | kept of base | last step | train memorized | test below p | final test acc. |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &g.runs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.run,
            r.first_step,
            percent(Some(r.first_test_accuracy)),
            percent(r.kept),
            r.last_step,
            percent(Some(r.memorized)),
            percent(Some(r.test_below_p)),
            percent(Some(r.final_test_accuracy))
        );
    }
    let _ = writeln!(md);
}

fn pass(ok: bool) -> &'static str {
    if ok { "pass" } else { "fail" }
}

fn families(md: &mut String, t: &TaskReport) {
    if t.families.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "**P-M per family** at each run's last checkpoint with P-M: mean P-M accuracy of the family's train examples, and the family's test accuracy.\n"
    );
    let names: std::collections::BTreeSet<&str> = t
        .families
        .iter()
        .flat_map(|r| r.families.iter().map(|f| f.family.as_str()))
        .collect();
    let header: Vec<String> = names
        .iter()
        .map(|n| format!("{n} P-M | {n} test"))
        .collect();
    let _ = writeln!(md, "| run | step | {} |", header.join(" | "));
    let _ = writeln!(md, "|---|---:|{}", "---:|".repeat(2 * names.len()));
    for r in &t.families {
        let cells: Vec<String> = names
            .iter()
            .map(|n| match r.families.iter().find(|f| f.family == *n) {
                Some(f) => format!("{} | {}", percent(Some(f.pm)), percent(f.test_accuracy)),
                None => "– | –".into(),
            })
            .collect();
        let _ = writeln!(md, "| {} | {} | {} |", r.run, r.step, cells.join(" | "));
    }
    let _ = writeln!(md);
}

fn memorized_fit(md: &mut String, a: &Analysis) {
    let Some(m) = &a.task.memorized_fit else {
        return;
    };
    let _ = writeln!(
        md,
        "**Where most of the train set is memorized** (≥ {:.0}% below p = {}: {} checkpoints), P-M against test accuracy: R² out of sample (their held-out predictions) **{}**, in sample {}.\n",
        100.0 * MOSTLY_MEMORIZED,
        a.threshold,
        m.checkpoints,
        fmt(m.out_of_sample, 3),
        fmt(m.in_sample, 3)
    );
}
