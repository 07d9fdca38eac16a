//! The curation report: `curation.md`, `curation.csv`, `chosen.csv` and the
//! chart `test-vs-examples.png`/`.svg` (paper Fig. 6: test accuracy against
//! the number of training examples, one line per strategy).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::CurationError;
use super::spec::{HeuristicKey, Strategy};
use super::state::{CurationState, IterationRecord};
use premem_report::plots::{Lines, Series, lines};

/// Parents and added ids listed per iteration in `curation.md` (all of them
/// are in `chosen.csv` and the state).
const LISTED: usize = 20;

/// Writes the report into `out_dir` (created); returns the files written:
/// `curation.md`, `curation.csv`, `chosen.csv`, `test-vs-examples.png`,
/// `test-vs-examples.svg`.
pub fn write_outputs(state: &CurationState, out_dir: &Path) -> Result<Vec<PathBuf>, CurationError> {
    create_dir(out_dir)?;
    let write = |name: &str, text: String| write_text(out_dir, name, &text);
    let strategies = strategies(state);
    let mut files = vec![
        write("curation.md", markdown(state, &strategies))?,
        write("curation.csv", summary_csv(state, &strategies))?,
        write("chosen.csv", chosen_csv(state, &strategies))?,
    ];
    files.extend(lines(
        &out_dir.join("test-vs-examples"),
        &chart(state, &strategies),
    )?);
    Ok(files)
}

/// Creates a report directory (and its parents).
pub(crate) fn create_dir(out_dir: &Path) -> Result<(), CurationError> {
    std::fs::create_dir_all(out_dir).map_err(|source| CurationError::Io {
        path: out_dir.into(),
        source,
    })
}

/// Writes `text` to `out_dir/name` atomically; returns the path.
pub(crate) fn write_text(out_dir: &Path, name: &str, text: &str) -> Result<PathBuf, CurationError> {
    let path = out_dir.join(name);
    premem_core::storage::files::write_atomic(&path, text.as_bytes()).map_err(|source| {
        CurationError::Io {
            path: path.clone(),
            source,
        }
    })?;
    Ok(path)
}

/// Paper Fig. 6: test accuracy against training examples, one line per
/// strategy.
fn chart(state: &CurationState, strategies: &[Strategy]) -> Lines {
    Lines {
        title: format!(
            "{}: test accuracy vs training examples",
            state.spec.curation.name
        ),
        x_label: "training examples (D + D')".into(),
        y_label: "test accuracy".into(),
        log_x: false,
        series: strategies
            .iter()
            .map(|s| Series {
                label: label(*s).into(),
                points: state
                    .records(*s)
                    .iter()
                    .filter_map(|r| Some((r.train_examples as f64, r.test_accuracy?)))
                    .collect(),
            })
            .collect(),
        marker: None,
        bars: vec![],
    }
}

/// The spec's strategies in its order, then any other the state holds.
fn strategies(state: &CurationState) -> Vec<Strategy> {
    let mut out = state.spec.curation.strategies.clone();
    for s in state.strategies.keys() {
        if !out.contains(s) {
            out.push(*s);
        }
    }
    out
}

/// A strategy's name in reports and legends.
pub(crate) fn label(s: Strategy) -> &'static str {
    match s {
        Strategy::Pm => "P-M (pre-memorization)",
        Strategy::Iid => "IID",
        Strategy::Ifd => "IFD",
        Strategy::Heuristic => "heuristic",
    }
}

/// What a strategy's parent score is.
fn score_name(state: &CurationState, s: Strategy) -> &'static str {
    match s {
        Strategy::Pm | Strategy::Iid => "P-M accuracy",
        Strategy::Ifd => "IFD score",
        Strategy::Heuristic => match state.spec.heuristic.as_ref().map(|h| h.key) {
            Some(HeuristicKey::Level) => "level",
            _ => "trace lines",
        },
    }
}

fn how_chosen(state: &CurationState, s: Strategy) -> String {
    let spec = &state.spec;
    match s {
        Strategy::Pm => format!(
            "train examples with P-M accuracy below t = {}",
            spec.curation.threshold
        ),
        Strategy::Iid => "every train example (uniform over the candidates)".into(),
        Strategy::Ifd => format!(
            "the top {} of the train set by IFD score",
            percent(spec.ifd_fraction())
        ),
        Strategy::Heuristic => match &spec.heuristic {
            Some(h) => format!(
                "the top {} of the train set by {}",
                percent(h.fraction),
                match h.key {
                    HeuristicKey::Lines => "trace lines",
                    HeuristicKey::Level => "MATH level",
                }
            ),
            None => "the top fraction by a heuristic".into(),
        },
    }
}

fn percent(f: f64) -> String {
    format!("{}%", (f * 1000.0).round() / 10.0)
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.4}"),
        _ => "—".into(),
    }
}

fn csv_num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => v.to_string(),
        _ => String::new(),
    }
}

/// A markdown table cell: pipes escaped, newlines flattened.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn markdown(state: &CurationState, strategies: &[Strategy]) -> String {
    let mut md = String::new();
    header(&mut md, state, strategies);
    summary(&mut md, state, strategies);
    for s in strategies {
        strategy_section(&mut md, state, *s);
    }
    md
}

/// The title, the settings and how each strategy chooses, the chart.
fn header(md: &mut String, state: &CurationState, strategies: &[Strategy]) {
    let spec = &state.spec;
    let c = &spec.curation;
    let _ = writeln!(md, "# Curation: {}\n", c.name);
    let _ = writeln!(
        md,
        "Paper Algorithm 1: each iteration trains on the train set D plus the examples added \
         so far (D'), then adds new examples derived from parents chosen by the strategy. The \
         last iteration's run is only measured.\n"
    );
    let new_examples = match &c.new_examples {
        super::NewExamples::Each(n) => format!("{n} per iteration"),
        super::NewExamples::PerIteration(v) => {
            format!("{v:?} after iterations 1..{}", c.iterations - 1)
        }
    };
    let source = match (&spec.source.pool, &spec.source.generator) {
        (Some(pool), _) => format!("candidate pool `{}`", pool.path),
        (_, Some(g)) => format!("generator `{}`", g.display()),
        _ => "—".into(),
    };
    let _ = writeln!(md, "- iterations: {}", c.iterations);
    let _ = writeln!(md, "- new examples: {new_examples}");
    let _ = writeln!(md, "- source: {source}");
    let _ = writeln!(md, "- seed: {}", c.seed);
    if c.measure_last_checkpoint_only {
        let _ = writeln!(
            md,
            "- checkpoints: only the shared first run and pm's runs before the last iteration \
             keep every checkpoint; the other runs checkpoint once, at the end, so their P-M \
             accuracy is that of one checkpoint (every example memorized there counts 0)"
        );
    }
    for s in strategies {
        let _ = writeln!(md, "- **{s}**: {}", how_chosen(state, *s));
    }
    let _ = writeln!(
        md,
        "\n![test accuracy vs training examples](test-vs-examples.svg)\n"
    );
}

/// Per strategy: iterations done and its best test accuracy.
fn summary(md: &mut String, state: &CurationState, strategies: &[Strategy]) {
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(
        md,
        "| strategy | iterations done | best test accuracy | at training examples |"
    );
    let _ = writeln!(md, "| --- | ---: | ---: | ---: |");
    for s in strategies {
        let records = state.records(*s);
        let best = records
            .iter()
            .filter_map(|r| Some((r.test_accuracy.filter(|v| v.is_finite())?, r.train_examples)))
            .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
        let _ = writeln!(
            md,
            "| {s} | {} / {} | {} | {} |",
            records.len(),
            state.spec.curation.iterations,
            num(best.map(|b| b.0)),
            best.map_or("—".into(), |b| b.1.to_string())
        );
    }
}

/// A strategy's iterations as a table, then each in detail.
fn strategy_section(md: &mut String, state: &CurationState, s: Strategy) {
    let records = state.records(s);
    let _ = writeln!(md, "\n## {s}: {}\n", how_chosen(state, s));
    if records.is_empty() {
        let _ = writeln!(md, "No iteration done yet.");
        return;
    }
    let _ = writeln!(
        md,
        "| iteration | train examples | test accuracy | P-M accuracy | parents | added | run |"
    );
    let _ = writeln!(md, "| ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for r in records {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | `{}` |",
            r.iteration,
            r.train_examples,
            num(r.test_accuracy),
            num(r.pm_accuracy),
            r.chosen.len(),
            r.added.len(),
            cell(&r.run)
        );
    }
    for r in records {
        iteration_details(md, state, s, r);
    }
}

fn iteration_details(md: &mut String, state: &CurationState, s: Strategy, r: &IterationRecord) {
    let _ = writeln!(md, "\n### {s}, iteration {}\n", r.iteration);
    if r.chosen.is_empty() && r.added.is_empty() {
        let last = r.iteration >= state.spec.curation.iterations;
        let _ = writeln!(
            md,
            "{}",
            if last {
                "The last iteration: measured only, nothing added."
            } else {
                "No parents chosen, nothing added."
            }
        );
    } else {
        chosen_and_added(md, state, s, r);
    }
    if !r.notes.is_empty() {
        let _ = writeln!(md, "\nNotes:\n");
        for n in &r.notes {
            let _ = writeln!(md, "- {}", n.replace('\n', " "));
        }
    }
    if !r.failures.is_empty() {
        let _ = writeln!(md, "\nFailed generator tries (retried):\n");
        for f in &r.failures {
            let _ = writeln!(md, "- {}", f.replace('\n', " "));
        }
    }
}

/// The first [`LISTED`] parents with their scores, and the first added ids.
fn chosen_and_added(md: &mut String, state: &CurationState, s: Strategy, r: &IterationRecord) {
    let _ = writeln!(
        md,
        "Parents chosen: {}{}\n",
        r.chosen.len(),
        if r.chosen.len() > LISTED {
            format!(" (the first {LISTED}; all in chosen.csv)")
        } else {
            String::new()
        }
    );
    if !r.chosen.is_empty() {
        let _ = writeln!(md, "| parent | {} |", score_name(state, s));
        let _ = writeln!(md, "| --- | ---: |");
        for c in r.chosen.iter().take(LISTED) {
            let _ = writeln!(md, "| `{}` | {} |", cell(&c.id), num(Some(c.score)));
        }
    }
    let shown: Vec<String> = r
        .added
        .iter()
        .take(LISTED)
        .map(|id| format!("`{}`", cell(id)))
        .collect();
    let more = if r.added.len() > LISTED {
        format!(", ... ({} in all)", r.added.len())
    } else {
        String::new()
    };
    let _ = writeln!(
        md,
        "\nAdded: {}{}{more}",
        r.added.len(),
        if shown.is_empty() {
            String::new()
        } else {
            format!(": {}", shown.join(", "))
        }
    );
}

/// `strategy,iteration,train_examples,test_accuracy,pm_accuracy,parents,added,run`.
fn summary_csv(state: &CurationState, strategies: &[Strategy]) -> String {
    let mut out = String::from(
        "strategy,iteration,train_examples,test_accuracy,pm_accuracy,parents,added,run\n",
    );
    for s in strategies {
        for r in state.records(*s) {
            let _ = writeln!(
                out,
                "{s},{},{},{},{},{},{},{}",
                r.iteration,
                r.train_examples,
                csv_num(r.test_accuracy),
                csv_num(r.pm_accuracy),
                r.chosen.len(),
                r.added.len(),
                csv_field(&r.run)
            );
        }
    }
    out
}

/// `strategy,iteration,parent_id,score` (empty score: unknown).
fn chosen_csv(state: &CurationState, strategies: &[Strategy]) -> String {
    let mut out = String::from("strategy,iteration,parent_id,score\n");
    for s in strategies {
        for r in state.records(*s) {
            for c in &r.chosen {
                let _ = writeln!(
                    out,
                    "{s},{},{},{}",
                    r.iteration,
                    csv_field(&c.id),
                    csv_num(Some(c.score))
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::sample_state;

    #[test]
    fn writes_the_report_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("report");
        let state = sample_state();
        let files = write_outputs(&state, &out).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "curation.md",
                "curation.csv",
                "chosen.csv",
                "test-vs-examples.png",
                "test-vs-examples.svg"
            ]
        );
        assert!(files.iter().all(|f| f.starts_with(&out) && f.exists()));

        let csv = std::fs::read_to_string(out.join("curation.csv")).unwrap();
        assert_eq!(
            csv,
            "strategy,iteration,train_examples,test_accuracy,pm_accuracy,parents,added,run\n\
             pm,1,6,0.25,0.35,2,2,runs/synth-curation/x-1\n\
             pm,2,8,0.5,0.6,1,1,runs/synth-curation/x-2\n\
             pm,3,9,0.625,0.725,0,0,runs/synth-curation/x-3\n\
             iid,1,6,0.25,0.35,2,2,runs/synth-curation/x-1\n\
             iid,2,8,0.375,0.475,0,0,runs/synth-curation/x-2\n"
        );
        let chosen = std::fs::read_to_string(out.join("chosen.csv")).unwrap();
        assert_eq!(
            chosen,
            "strategy,iteration,parent_id,score\n\
             pm,1,a,0\n\
             pm,1,e,0.2\n\
             pm,2,e,0.4\n\
             iid,1,a,0\n\
             iid,1,b,\n"
        );

        let md = std::fs::read_to_string(out.join("curation.md")).unwrap();
        assert!(md.starts_with("# Curation: synth-curation\n"), "{md}");
        assert!(md.contains("| pm | 3 / 3 | 0.6250 | 9 |"), "{md}");
        assert!(md.contains("| iid | 2 / 3 | 0.3750 | 8 |"), "{md}");
        assert!(md.contains("| ifd | 0 / 3 | — | — |"), "{md}");
        assert!(
            md.contains("| 2 | 8 | 0.5000 | 0.6000 | 1 | 1 | `runs/synth-curation/x-2` |"),
            "{md}"
        );
        assert!(
            md.contains("## pm: train examples with P-M accuracy below t = 0.75"),
            "{md}"
        );
        assert!(md.contains("| `e` | 0.2000 |"), "{md}");
        assert!(md.contains("| `b` | — |"), "{md}");
        assert!(md.contains("Added: 2: `a-1`, `e-0`"), "{md}");
        assert!(
            md.contains("The last iteration: measured only, nothing added."),
            "{md}"
        );
        assert!(
            md.contains("- iteration 2: asked for 2 new examples"),
            "{md}"
        );
        assert!(
            md.contains("Failed generator tries (retried):\n\n- attempt 1 of 3"),
            "{md}"
        );
        assert!(
            md.contains("## heuristic: the top 75% of the train set by trace lines"),
            "{md}"
        );

        assert!(!md.contains("- checkpoints: only"), "{md}");
        let mut lean = state.clone();
        lean.spec.curation.measure_last_checkpoint_only = true;
        write_outputs(&lean, &out).unwrap();
        let md = std::fs::read_to_string(out.join("curation.md")).unwrap();
        assert!(md.contains("checkpoint once, at the end"), "{md}");

        let png = image::open(out.join("test-vs-examples.png")).expect("the PNG decodes");
        assert_eq!((png.width(), png.height()), (900, 600));
        let svg = std::fs::read_to_string(out.join("test-vs-examples.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("test accuracy"), "svg");
        assert!(svg.contains("IID") && svg.contains("P-M (pre-memorization)"));
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(percent(0.75), "75%");
        assert_eq!(percent(0.333), "33.3%");
    }
}
