//! The report's charts (through [`super::plots`]) and documents: `report.md`
//! and `report.html` (the same content, charts inlined as SVG, no external
//! files).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::analysis::{Analysis, MetricCorrelation, ThresholdSource};
use super::plots::{self, Bars, HeatCell, Heatmap, Lines, Scatter, Series};
use super::{ReportError, Result};

/// A run name as part of a file name.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The heatmap file stem of each run, unique even where run names differ
/// only in characters a file name cannot keep.
fn heatmap_stems(analysis: &Analysis) -> Vec<String> {
    let stems: Vec<String> = analysis
        .runs
        .iter()
        .map(|r| format!("heatmap-{}", file_safe(&r.name)))
        .collect();
    stems
        .iter()
        .enumerate()
        .map(|(i, stem)| {
            if stems.iter().filter(|s| *s == stem).count() > 1 {
                format!("{stem}-{}", i + 1)
            } else {
                stem.clone()
            }
        })
        .collect()
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

fn fit_notes(c: &MetricCorrelation) -> Vec<String> {
    let mut notes = vec![];
    if let Some(r2) = c.r2_identity {
        notes.push(format!("R² vs y = x: {r2:.3}"));
    }
    if let Some(fit) = c.fit {
        notes.push(format!("least-squares R²: {:.3}", fit.r2));
    }
    notes.push(format!("{} checkpoints", c.points.len()));
    notes
}

/// Writes every chart; returns the files.
pub fn charts(analysis: &Analysis, out: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![];
    for (run, stem) in analysis.runs.iter().zip(heatmap_stems(analysis)) {
        let steps: Vec<u64> = run.checkpoints.iter().map(|c| c.step).collect();
        let by_key: std::collections::HashMap<(u64, &str), &super::analysis::ExampleCheckpoint> =
            run.examples
                .iter()
                .map(|e| ((e.step, e.id.as_str()), e))
                .collect();
        let cells = run
            .heatmap_ids
            .iter()
            .map(|id| {
                steps
                    .iter()
                    .map(|&step| {
                        by_key.get(&(step, id.as_str())).map(|e| HeatCell {
                            accuracy: e.accuracy,
                            memorized: e.memorized,
                        })
                    })
                    .collect()
            })
            .collect();
        let total = run
            .examples
            .iter()
            .map(|e| e.id.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let shown = run.heatmap_ids.len();
        files.extend(plots::heatmap(
            &out.join(stem),
            &Heatmap {
                title: format!(
                    "Learning progression: {} ({shown} of {total} train examples)",
                    run.name
                ),
                rows: run.heatmap_ids.clone(),
                steps,
                cells,
            },
        )?);
    }

    let by_run = |f: &dyn Fn(&super::analysis::CheckpointSummary) -> Option<f64>| {
        analysis
            .runs
            .iter()
            .map(|run| Series {
                label: run.name.clone(),
                points: run
                    .checkpoints
                    .iter()
                    .filter_map(|c| Some((f(c)?, c.test_accuracy?)))
                    .collect(),
            })
            .collect::<Vec<_>>()
    };
    let pm = &analysis.pm_vs_test;
    let mut notes = fit_notes(pm);
    notes.push(format!("p: {}", analysis.threshold));
    files.extend(plots::scatter(
        &out.join("pm_vs_test"),
        &Scatter {
            title: "P-M train accuracy vs test accuracy".into(),
            x_label: "P-M train accuracy".into(),
            y_label: "test accuracy".into(),
            series: by_run(&|c| c.pm),
            identity: true,
            fit: pm.fit.map(|f| (f.slope, f.intercept)),
            notes,
            x_range: Some((0.0, 1.0)),
            y_range: Some((0.0, 1.0)),
        },
    )?);

    let panels: Vec<Scatter> = analysis
        .correlations
        .iter()
        .map(|c| {
            let accuracy_scale = c.accuracy_scale;
            let getter: &dyn Fn(&super::analysis::CheckpointSummary) -> Option<f64> =
                match c.metric.as_str() {
                    "P-M train accuracy" => &|c| c.pm,
                    "train accuracy" => &|c| c.train_accuracy,
                    "ATC" => &|c| c.atc,
                    "gradient variance" => &|c| c.grad_variance,
                    _ => &|c| c.distance_from_init,
                };
            let mut notes = fit_notes(c);
            if let Some(r) = c.pearson {
                notes.push(format!("Pearson r: {r:.3}"));
            }
            Scatter {
                title: format!("{} vs test", c.metric),
                x_label: c.metric.clone(),
                y_label: "test accuracy".into(),
                series: by_run(getter),
                identity: accuracy_scale,
                fit: c.fit.map(|f| (f.slope, f.intercept)),
                notes,
                x_range: accuracy_scale.then_some((0.0, 1.0)),
                y_range: Some((0.0, 1.0)),
            }
        })
        .collect();
    files.extend(plots::scatter_grid(
        &out.join("baselines"),
        "Generalization metrics vs test accuracy",
        &panels,
        3,
    )?);

    if let Some(r) = &analysis.robustness {
        let mut series = vec![(
            "no preamble".to_string(),
            r.buckets.iter().map(|b| b.base_accuracy).collect(),
        )];
        for (k, preamble) in r.preambles.iter().enumerate() {
            series.push((
                format!("preamble \"{preamble}\""),
                r.buckets.iter().map(|b| b.preamble_accuracy[k]).collect(),
            ));
        }
        files.extend(plots::bars(
            &out.join("robustness"),
            &Bars {
                title: "Accuracy under preambles by P-M accuracy".into(),
                x_label: "per-example P-M train accuracy".into(),
                y_label: "train accuracy".into(),
                categories: r
                    .buckets
                    .iter()
                    .map(|b| format!("{:.1}–{:.1}", b.low, b.high))
                    .collect(),
                counts: r.buckets.iter().map(|b| b.examples).collect(),
                series,
            },
        )?);
    }

    if let Some(c) = &analysis.calibration {
        files.extend(plots::lines(
            &out.join("calibration"),
            &Lines {
                title: "Calibration of the memorization threshold p".into(),
                x_label: "p on the ln(ln perplexity) scale".into(),
                y_label: "mean squared error, test − P-M".into(),
                log_x: false,
                series: vec![Series {
                    label: format!("{} checkpoints", c.checkpoints_used),
                    points: c.curve.iter().map(|p| (p.loglog, p.mse)).collect(),
                }],
                marker: Some((
                    analysis.threshold.loglog(),
                    format!(
                        "p = {:.4} (ln ln {:.2})",
                        analysis.threshold.perplexity(),
                        analysis.threshold.loglog()
                    ),
                )),
            },
        )?);
    }

    let mut series = vec![];
    for run in &analysis.runs {
        let prefix = if analysis.runs.len() > 1 {
            format!("{}: ", run.name)
        } else {
            String::new()
        };
        let points = |f: &dyn Fn(&super::analysis::CheckpointSummary) -> Option<f64>| {
            run.checkpoints
                .iter()
                .filter_map(|c| Some((c.step as f64, f(c)?)))
                .collect()
        };
        series.push(Series {
            label: format!("{prefix}P-M train accuracy"),
            points: points(&|c| c.pm),
        });
        series.push(Series {
            label: format!("{prefix}test accuracy"),
            points: points(&|c| c.test_accuracy),
        });
        series.push(Series {
            label: format!("{prefix}train accuracy"),
            points: points(&|c| c.train_accuracy),
        });
    }
    files.extend(plots::lines(
        &out.join("training"),
        &Lines {
            title: "Accuracy over training".into(),
            x_label: "checkpoint step".into(),
            y_label: "accuracy".into(),
            log_x: false,
            series,
            marker: None,
        },
    )?);
    Ok(files)
}

fn markdown(location: &str, a: &Analysis) -> String {
    let mut md = String::new();
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

    let _ = writeln!(md, "## Headline\n");
    let source = match &a.threshold_source {
        ThresholdSource::Given => "given".to_string(),
        ThresholdSource::Calibrated => {
            let c = a.calibration.as_ref().expect("calibrated");
            format!(
                "calibrated: the least error over {} values of p on {} checkpoints — the same checkpoints the R² below is computed on, so that R² is in-sample; pass `--p` to judge a threshold chosen elsewhere",
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
    let pm = &a.pm_vs_test;
    let _ = writeln!(
        md,
        "- **P-M train accuracy vs test accuracy** over {} checkpoints: R² against y = x **{}**; least-squares line {}.",
        pm.points.len(),
        fmt(pm.r2_identity, 3),
        match pm.fit {
            Some(f) => format!(
                "test = {:.3} · P-M {} {:.3}, R² **{:.3}**",
                f.slope,
                if f.intercept < 0.0 { "−" } else { "+" },
                f.intercept.abs(),
                f.r2
            ),
            None => "– (needs at least 2 checkpoints with spread)".into(),
        }
    );
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
    let missing: usize = a.runs.iter().map(|r| r.missing.len()).sum();
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

    let _ = writeln!(md, "## Checkpoints\n");
    let _ = writeln!(
        md,
        "Dataset values are means over every expected example; a checkpoint missing any has none (–).\n"
    );
    for run in &a.runs {
        let _ = writeln!(md, "### {}\n", run.name);
        let _ = writeln!(
            md,
            "| step | P-M train acc. | test acc. | train acc. | memorized | median train perplexity | grad. variance | distance from init | ATC | train / test examples | missing train / test |"
        );
        let _ = writeln!(
            md,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for c in &run.checkpoints {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} |",
                c.step,
                percent(c.pm),
                percent(c.test_accuracy),
                percent(c.train_accuracy),
                percent(c.memorized_fraction),
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

    let _ = writeln!(md, "## Learning progression\n");
    let _ = writeln!(
        md,
        "Each row is a train example, each column a checkpoint. Blue: not memorized, darker = more accurate samples; orange/red: memorized (target perplexity < p); grey: no result. Rows are ordered by the checkpoint at which the example was first memorized.\n"
    );
    for (run, stem) in a.runs.iter().zip(heatmap_stems(a)) {
        let _ = writeln!(md, "![Learning progression of {}]({stem}.png)\n", run.name);
    }

    let _ = writeln!(md, "## Baselines vs test accuracy\n");
    let _ = writeln!(
        md,
        "| metric | R² vs y = x | least-squares R² | Pearson r | checkpoints |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for c in &a.correlations {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            c.metric,
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

    let _ = writeln!(md, "## Missing or partial results\n");
    if missing == 0 {
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
    if !a.notes.is_empty() {
        let _ = writeln!(md, "\n## Notes\n");
        for n in &a.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    let _ = writeln!(
        md,
        "\n## Tables\n\n- `examples.parquet`: per run, checkpoint and train example: accuracy, perplexity, memorized, masked accuracy, P-M.\n- `checkpoints.parquet`: per run and checkpoint: the columns of the tables above (nulls where missing).\n- `calibration.parquet`: every p of the grid with its error and R²."
    );
    provenance(&mut md, a);
    md
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

/// `report.md` and `report.html`.
pub fn documents(location: &str, analysis: &Analysis, out: &Path) -> Result<Vec<PathBuf>> {
    let md = markdown(location, analysis);
    let md_path = out.join("report.md");
    write(&md_path, md.as_bytes())?;

    let parser = pulldown_cmark::Parser::new_ext(&md, pulldown_cmark::Options::ENABLE_TABLES);
    let mut body = String::new();
    pulldown_cmark::html::push_html(&mut body, parser);
    // Charts inline as SVG: the page needs no other file.
    let mut inlined = String::with_capacity(body.len());
    let mut rest = body.as_str();
    while let Some(start) = rest.find("<img src=\"") {
        inlined.push_str(&rest[..start]);
        let after = &rest[start + 10..];
        let end = after.find('"').unwrap_or(0);
        let src = &after[..end];
        let close = after.find("/>").map(|i| i + 2).unwrap_or(after.len());
        let svg_path = out.join(Path::new(src).with_extension("svg"));
        match std::fs::read_to_string(&svg_path) {
            Ok(svg) => {
                let svg = svg.trim_start_matches(|c| c != '<');
                let svg = match svg.strip_prefix("<?xml") {
                    Some(s) => &s[s.find("?>").map(|i| i + 2).unwrap_or(0)..],
                    None => svg,
                };
                let _ = write!(inlined, "<div class=\"chart\">{svg}</div>");
            }
            Err(source) => {
                return Err(ReportError::Io {
                    path: svg_path,
                    source,
                });
            }
        }
        rest = &after[close..];
    }
    inlined.push_str(rest);
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>premem report</title>\n<style>\nbody {{ font-family: sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }}\ntable {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}\nth, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; }}\nth {{ background: #f3f3f3; }}\n.chart svg {{ max-width: 100%; height: auto; }}\ncode {{ background: #f3f3f3; padding: 0 0.2em; }}\n</style></head><body>\n{inlined}</body></html>\n"
    );
    let html_path = out.join("report.html");
    write(&html_path, html.as_bytes())?;
    Ok(vec![md_path, html_path])
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    };
    premem_core::files::write_atomic(path, bytes).map_err(io)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::analysis::{ReportOptions, analyze};
    use super::super::load::RunData;
    use super::super::tables::write_provenance;
    use premem_core::checkpoint::RunRecord;
    use premem_core::spec::JobSpec;

    fn run(name: &str, git_revision: Option<&str>) -> RunData {
        let spec = JobSpec::from_toml(
            &format!(
                r#"
[run]
name = "{name}"
output = "runs/{name}"

[model]
base = "models/tiny"

[data.train]
path = "data/train.jsonl"
format = "gsm8k"

[train]
lr = 1e-4
schedule = {{ type = "linear", warmup_steps = 20 }}
batch_size = 8
micro_batch_size = 4
"#
            ),
            std::path::Path::new("job.toml"),
        )
        .unwrap();
        RunData {
            name: name.into(),
            url: format!("file:///runs/{name}"),
            record: RunRecord {
                name: name.into(),
                training_hash: spec.training_hash(),
                inputs_digest: "digest".into(),
                premem_version: "9.8.7-test".into(),
                spec,
                git_revision: git_revision.map(Into::into),
                checksums: BTreeMap::from([
                    ("data/train.jsonl".to_string(), "ab".repeat(32)),
                    ("models/tiny/model.safetensors".to_string(), "cd".repeat(32)),
                ]),
            },
            published: vec![],
            rows: BTreeMap::new(),
            baselines: BTreeMap::new(),
            notes: vec![],
        }
    }

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
