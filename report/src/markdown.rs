//! `report.md`: one function per section, in the order they appear.

mod limits;
mod task;

use std::fmt::Write as _;

use super::analysis::{Analysis, MetricCorrelation, ThresholdSource};
use super::charts::heatmap_stems;

/// The protocol's gates alone (`premem report --gates-only`).
pub fn gates(g: &crate::analysis::Gates) -> String {
    let mut md = String::new();
    task::gates_markdown(&mut md, g);
    if md.is_empty() {
        md.push_str("No gate applies: neither a base with test results nor runs from a base.\n");
    }
    md
}

pub(crate) fn markdown(location: &str, a: &Analysis) -> String {
    let mut md = String::new();
    title(&mut md, location, a);
    headline(&mut md, a);
    task::task(&mut md, a);
    checkpoints(&mut md, a);
    advice(&mut md, a);
    learning_progression(&mut md, a);
    baselines(&mut md, a);
    limits::limits(&mut md, a);
    robustness(&mut md, a);
    calibration(&mut md, a);
    missing(&mut md, a);
    notes(&mut md, a);
    tables(&mut md);
    provenance(&mut md, a);
    md
}

fn title(md: &mut String, location: &str, a: &Analysis) {
    let names: Vec<&str> = a.runs.iter().map(|r| r.name.as_str()).collect();
    let _ = writeln!(md, "# premem report\n");
    let _ = writeln!(
        md,
        "Source: `{location}` — {} run{} ({}); premem {}.\n",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", "),
        env!("CARGO_PKG_VERSION")
    );
}

/// The threshold, P-M against test accuracy, each run's latest values and
/// coverage, how many gaps there are, and the two main charts.
fn headline(md: &mut String, a: &Analysis) {
    let _ = writeln!(md, "## Headline\n");
    for warning in &a.warnings {
        let _ = writeln!(md, "- **Warning:** {warning}");
    }
    threshold_line(md, a);
    pm_vs_test_line(md, a);
    latest_lines(md, a);
    coverage_lines(md, a);
    let missing = gaps(a);
    if missing > 0 {
        let _ = writeln!(
            md,
            "- **{missing} gaps in the results** (see [Missing or partial results](#missing-or-partial-results)): checkpoints with gaps have no dataset value."
        );
    }
    let _ = writeln!(
        md,
        "\n![P-M train accuracy vs test accuracy](pm_vs_test.png)\n"
    );
    let _ = writeln!(md, "![Accuracy over training](training.png)\n");
}

fn threshold_line(md: &mut String, a: &Analysis) {
    let source = match &a.threshold_source {
        ThresholdSource::Given => "given".to_string(),
        ThresholdSource::Calibrated => {
            let c = a.calibration.as_ref().expect("calibrated");
            format!(
                "calibrated: the least error over {} values of p on {} checkpoints. The in-sample R² below is computed on the same checkpoints; the out-of-sample R² calibrates p again without the checkpoints it scores",
                c.curve.len(),
                c.checkpoints_used
            )
        }
        ThresholdSource::Default(why) => {
            format!("not calibrated ({why}); the authors' GSM8K value")
        }
    };
    let _ = writeln!(
        md,
        "- **Memorization threshold p**: {} — {source}. An example is memorized at a checkpoint when its target perplexity is below p.",
        a.threshold
    );
}

/// The out-of-sample R² of a metric and how it was measured.
fn out_of_sample(c: &MetricCorrelation) -> String {
    match &c.out_of_sample {
        Some(o) => format!("**{}** ({})", fmt(o.r2, 3), o.protocol.describe()),
        None => "– (nothing to hold out)".into(),
    }
}

/// The threshold each fold calibrated on the others, when any was.
fn fold_thresholds(c: &MetricCorrelation) -> String {
    let tuned = c.out_of_sample.as_ref().map_or(&[][..], |o| &o.tuned[..]);
    if tuned.is_empty() {
        return String::new();
    }
    let each: Vec<String> = tuned.iter().map(|(_, p)| format!("{p:.4}")).collect();
    format!(", p by fold {}", each.join(", "))
}

fn pm_vs_test_line(md: &mut String, a: &Analysis) {
    let pm = &a.pm_vs_test;
    let _ = writeln!(
        md,
        "- **P-M train accuracy vs test accuracy** over {} checkpoints: R² out of sample {}{}. In sample: R² against y = x {}; least-squares line {}.",
        pm.points.len(),
        out_of_sample(pm),
        fold_thresholds(pm),
        fmt(pm.r2_identity, 3),
        match pm.fit {
            Some(f) => format!(
                "test = {:.3} · P-M {} {:.3}, R² {:.3}",
                f.slope,
                if f.intercept < 0.0 { "−" } else { "+" },
                f.intercept.abs(),
                f.r2
            ),
            None => "– (needs at least 2 checkpoints with spread)".into(),
        }
    );
}

/// Per run, its last checkpoint with a dataset value.
fn latest_lines(md: &mut String, a: &Analysis) {
    for run in &a.runs {
        if let Some(last) = run
            .checkpoints
            .iter()
            .rev()
            .find(|c| c.pm.is_some() || c.test_accuracy.is_some())
        {
            let _ = writeln!(
                md,
                "- **{}**, step {}: P-M train accuracy {}, test accuracy {}, train accuracy {}, memorized {} of train examples.",
                run.name,
                last.step,
                percent(last.pm),
                percent(last.test_accuracy),
                percent(last.train_accuracy),
                percent(last.memorized_fraction)
            );
        }
    }
}

/// Per run, which examples its results cover and with what K.
fn coverage_lines(md: &mut String, a: &Analysis) {
    for run in &a.runs {
        let c = &run.coverage;
        let of = |n: Option<usize>| n.map_or(String::new(), |n| format!(" of {n}"));
        let _ = writeln!(
            md,
            "- **{}** results cover {}{} train examples (the examples it trains on) and {}{} test examples; K = {} samples per example.",
            run.name,
            c.train_evaluated,
            of(c.train_size),
            c.test_evaluated,
            of(c.test_size),
            c.samples_per_example
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" / ")
        );
        if c.samples_per_example.len() > 1 {
            let _ = writeln!(
                md,
                "  **Warning:** the checkpoints of {} were evaluated with different K; their accuracies are not comparable (re-run `premem eval-run --redo`).",
                run.name
            );
        }
    }
}

/// Results missing over all runs, one per line of their `missing`.
fn gaps(a: &Analysis) -> usize {
    a.runs.iter().map(|r| r.missing.len()).sum()
}

fn checkpoints(md: &mut String, a: &Analysis) {
    let _ = writeln!(md, "## Checkpoints\n");
    let _ = writeln!(
        md,
        "Dataset values are means over every expected example; a checkpoint missing any has none (–).\n"
    );
    for run in &a.runs {
        let _ = writeln!(md, "### {}\n", run.name);
        let _ = writeln!(
            md,
            "| step | P-M train acc. | test acc. | train acc. | memorized | test below p | median train perplexity | grad. variance | distance from init | ATC | train / test examples | missing train / test |"
        );
        let _ = writeln!(
            md,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for c in &run.checkpoints {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} |",
                c.step,
                percent(c.pm),
                percent(c.test_accuracy),
                percent(c.train_accuracy),
                percent(c.memorized_fraction),
                percent(c.test_below_p),
                fmt(c.median_train_perplexity, 3),
                sci(c.grad_variance),
                sci(c.distance_from_init),
                percent(c.atc),
                c.train_examples,
                c.test_examples,
                c.missing_train,
                c.missing_test
            );
        }
        let _ = writeln!(md);
    }
}

/// The advice on each run's checkpoints (premem_core::science::advice), its early
/// stop, and over a sweep the settings to prefer.
fn advice(md: &mut String, a: &Analysis) {
    let _ = writeln!(md, "## Advice\n");
    for run in &a.advice {
        let _ = writeln!(md, "### {}\n", run.run);
        if let Some(stop) = &run.early_stop {
            let _ = writeln!(md, "- **The run stopped early**: {stop}");
        }
        let lines = run.advice.lines();
        if run.advice.findings.is_empty() {
            let _ = writeln!(
                md,
                "- No over-memorization or stalled P-M at the last checkpoint."
            );
        }
        for line in lines {
            let _ = writeln!(md, "- {line}");
        }
        let _ = writeln!(md);
    }
    if let Some(sweep) = &a.sweep_advice {
        let _ = writeln!(md, "### Over the runs\n");
        for line in &sweep.text {
            let _ = writeln!(md, "- {line}");
        }
        let _ = writeln!(md);
    }
}

fn learning_progression(md: &mut String, a: &Analysis) {
    let _ = writeln!(md, "## Learning progression\n");
    let _ = writeln!(
        md,
        "Each row is a train example, each column a checkpoint. Blue: not memorized, darker = more accurate samples; orange/red: memorized (target perplexity < p); grey: no result. Rows are ordered by the checkpoint at which the example was first memorized.\n"
    );
    for (run, stem) in a.runs.iter().zip(heatmap_stems(a)) {
        let _ = writeln!(md, "![Learning progression of {}]({stem}.png)\n", run.name);
    }
}

fn baselines(md: &mut String, a: &Analysis) {
    let _ = writeln!(md, "## Baselines vs test accuracy\n");
    let protocol = a
        .correlations
        .iter()
        .find_map(|c| c.out_of_sample.as_ref())
        .map_or("", |o| o.protocol.describe());
    let _ = writeln!(
        md,
        "Out of sample ({protocol}): P-M at a threshold calibrated without the held-out checkpoints; each baseline through a least-squares line fitted without them. In sample: on the checkpoints everything was tuned on.\n"
    );
    let _ = writeln!(
        md,
        "| metric | R² out of sample | in sample: R² vs y = x | in sample: least-squares R² | Pearson r | checkpoints |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for c in &a.correlations {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            c.metric,
            fmt(c.out_of_sample.as_ref().and_then(|o| o.r2), 3),
            fmt(c.r2_identity, 3),
            fmt(c.fit.map(|f| f.r2), 3),
            fmt(c.pearson, 3),
            c.points.len()
        );
    }
    let _ = writeln!(md);
    match &a.atc {
        Some(atc) => {
            let others = if a.runs.len() > 1 {
                " and used for the other runs"
            } else {
                ""
            };
            let _ = writeln!(
                md,
                "ATC threshold {:.4} (mean log-probability per token of a sample), fitted on the test samples of run `{}` ({} samples, pooled accuracy {:.1}%){others}; each checkpoint of `{1}` itself gets a threshold fitted on its other checkpoints (leave one out), so no ATC value saw the test labels it is compared with.\n",
                atc.threshold,
                atc.reference,
                atc.samples,
                100.0 * atc.reference_accuracy
            );
        }
        None => {
            let _ = writeln!(
                md,
                "ATC: no complete test results to fit its threshold on.\n"
            );
        }
    }
    let _ = writeln!(
        md,
        "![Generalization metrics vs test accuracy](baselines.png)\n"
    );
}

fn robustness(md: &mut String, a: &Analysis) {
    let _ = writeln!(md, "## Robustness\n");
    match &a.robustness {
        Some(r) => {
            let at: Vec<String> = r
                .checkpoints
                .iter()
                .map(|(run, step)| format!("{run} step {step}"))
                .collect();
            let _ = writeln!(
                md,
                "Train queries re-sampled with the answer started by a preamble, at {}; examples bucketed by their P-M accuracy at that checkpoint.\n",
                at.join(", ")
            );
            let mut header = "| P-M bucket | examples | no preamble |".to_string();
            let mut rule = "|---|---:|---:|".to_string();
            for p in &r.preambles {
                let _ = write!(header, " \"{p}\" |");
                rule.push_str("---:|");
            }
            let _ = writeln!(md, "{header}\n{rule}");
            for b in &r.buckets {
                let mut line = format!(
                    "| {:.1}–{:.1} | {} | {} |",
                    b.low,
                    b.high,
                    b.examples,
                    percent(b.base_accuracy)
                );
                for v in &b.preamble_accuracy {
                    let _ = write!(line, " {} |", percent(*v));
                }
                let _ = writeln!(md, "{line}");
            }
            let _ = writeln!(
                md,
                "\n![Accuracy under preambles by P-M accuracy](robustness.png)\n"
            );
        }
        None => {
            let _ = writeln!(
                md,
                "No results with preambles (evaluate with `--preamble First --preamble \"We know that\"`).\n"
            );
        }
    }
}

fn calibration(md: &mut String, a: &Analysis) {
    let _ = writeln!(md, "## Calibration of p\n");
    match &a.calibration {
        Some(c) => {
            let _ = writeln!(
                md,
                "Each p of the grid gives P-M accuracies; the error is the mean squared difference from test accuracy over {} checkpoints. Best: p = {:.4} (ln ln {:.3}), error {:.5}, R² vs y = x {}.\n",
                c.checkpoints_used,
                c.best.p,
                c.best.loglog,
                c.best.mse,
                fmt(c.best.r2_identity, 3)
            );
            let best = c.curve.iter().position(|q| q.p == c.best.p).unwrap_or(0);
            let _ = writeln!(
                md,
                "| p | ln ln p | mean squared error | R² vs y = x | least-squares R² |\n|---:|---:|---:|---:|---:|"
            );
            for q in &c.curve[best.saturating_sub(3)..(best + 4).min(c.curve.len())] {
                let mark = if q.p == c.best.p { " **(best)**" } else { "" };
                let _ = writeln!(
                    md,
                    "| {:.4}{mark} | {:.3} | {:.5} | {} | {} |",
                    q.p,
                    q.loglog,
                    q.mse,
                    fmt(q.r2_identity, 3),
                    fmt(q.r2_fit, 3)
                );
            }
            let _ = writeln!(
                md,
                "\nThe whole curve is in `calibration.parquet`.\n\n![Calibration of p](calibration.png)\n"
            );
        }
        None => {
            let _ = writeln!(
                md,
                "Not possible: no checkpoint has both complete train and test results.\n"
            );
        }
    }
}

/// Missing results, then the other limits of the runs.
fn missing(md: &mut String, a: &Analysis) {
    let _ = writeln!(md, "## Missing or partial results\n");
    if gaps(a) == 0 {
        let _ = writeln!(
            md,
            "None: every checkpoint has train and test results for every example seen at any checkpoint.\n"
        );
    }
    for run in &a.runs {
        for line in &run.missing {
            let _ = writeln!(md, "- {}: {line}", run.name);
        }
    }
    let limits: Vec<String> = a
        .runs
        .iter()
        .flat_map(|r| r.limits.iter().map(move |l| format!("{}: {l}", r.name)))
        .collect();
    if !limits.is_empty() {
        let _ = writeln!(md, "\nOther limits:\n");
        for line in limits {
            let _ = writeln!(md, "- {line}");
        }
    }
}

/// What loading noted (unreadable side files, orphan results), if anything.
fn notes(md: &mut String, a: &Analysis) {
    if !a.notes.is_empty() {
        let _ = writeln!(md, "\n## Notes\n");
        for n in &a.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
}

fn tables(md: &mut String) {
    let _ = writeln!(
        md,
        "\n## Tables\n\n- `examples.parquet`: per run, checkpoint and train example: accuracy, perplexity, memorized, masked accuracy, P-M.\n- `checkpoints.parquet`: per run and checkpoint: the columns of the tables above (nulls where missing).\n- `calibration.parquet`: every p of the grid with its error and R²."
    );
}

fn fmt(value: Option<f64>, digits: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "–".into(),
    }
}

fn percent(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{:.1}%", 100.0 * v),
        _ => "–".into(),
    }
}

fn sci(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.3e}"),
        _ => "–".into(),
    }
}

/// The first 12 characters of a hash or revision.
fn short(value: &str) -> &str {
    value.get(..12).unwrap_or(value)
}

/// A value in a markdown table cell.
fn cell(value: &str) -> String {
    value.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The "Provenance" section: per run, the premem build, training hash and
/// input checksums.
fn provenance(md: &mut String, a: &Analysis) {
    let _ = writeln!(
        md,
        "\n## Provenance\n\n| run | premem | git revision | training hash | checksums (SHA-256) |\n|---|---|---|---|---|"
    );
    for p in &a.provenance {
        let checksums = if p.checksums.is_empty() {
            "none recorded".to_string()
        } else {
            p.checksums
                .iter()
                .map(|(path, sum)| format!("{}: `{}`", cell(path), short(sum)))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | `{}` | {checksums} |",
            cell(&p.run),
            cell(&p.premem_version),
            p.git_revision
                .as_deref()
                .map(|r| format!("`{}`", cell(short(r))))
                .unwrap_or_else(|| "unknown".into()),
            cell(&p.training_hash),
        );
    }
    let _ = writeln!(
        md,
        "\nThe resolved configs of every run, with the full revisions and checksums, are in `provenance.json`."
    );
}

#[cfg(test)]
mod tests {
    use crate::analysis::{ReportOptions, analyze};
    use crate::tables::write_provenance;
    use crate::test_runs::run;

    #[test]
    fn provenance_is_in_the_json_and_the_markdown() {
        let runs = vec![run("lr-a", Some("0123456789abcdef0123")), run("lr-b", None)];
        let analysis = analyze(&runs, &ReportOptions::default()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = write_provenance(&analysis, tmp.path()).unwrap();
        assert_eq!(path, tmp.path().join("provenance.json"));
        let bytes = std::fs::read(&path).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let entries = json.as_array().unwrap();
        assert_eq!(entries.len(), 2);
        for (entry, name) in entries.iter().zip(["lr-a", "lr-b"]) {
            assert_eq!(entry["run"], name);
            assert_eq!(entry["premem_version"], "9.8.7-test");
            assert_eq!(entry["spec"]["run"]["name"], name);
            assert_eq!(
                entry["checksums"]["data/train.jsonl"],
                "ab".repeat(32).as_str()
            );
            assert_eq!(
                entry["training_hash"],
                runs[0].record.training_hash.as_str()
            );
        }
        assert_eq!(entries[0]["git_revision"], "0123456789abcdef0123");
        assert!(entries[1]["git_revision"].is_null());
        // Deterministic: the same analysis writes the same bytes.
        write_provenance(&analysis, tmp.path()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);

        let md = super::markdown("runs", &analysis);
        let section = &md[md.find("## Provenance").expect("a provenance section")..];
        assert!(!section[3..].contains("\n## "), "the last section: {md}");
        assert!(
            section.contains("| lr-a | 9.8.7-test | `0123456789ab` |")
                && section.contains("| lr-b | 9.8.7-test | unknown |"),
            "{section}"
        );
        assert!(
            section.contains(&format!(
                "data/train.jsonl: `{}`<br>models/tiny/model.safetensors: `{}`",
                "ab".repeat(6),
                "cd".repeat(6)
            )),
            "{section}"
        );
        assert!(section.contains("`provenance.json`"), "{section}");
        let html = {
            let parser =
                pulldown_cmark::Parser::new_ext(section, pulldown_cmark::Options::ENABLE_TABLES);
            let mut html = String::new();
            pulldown_cmark::html::push_html(&mut html, parser);
            html
        };
        assert!(
            html.contains("<td>lr-a</td>") && html.contains("<br>"),
            "{html}"
        );
    }
}
