//! The report of a summary over seeds: `summary.md`, `summary.csv` and the
//! chart `test-vs-examples.png`/`.svg` (test accuracy against training
//! examples, mean over seeds with 95 % intervals).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::CurationError;
use super::output::{create_dir, label, write_text};
use super::summary::{Efficiency, Estimate, Ratio, Summary};
use premem_report::plots::{Lines, Series, lines};

/// Writes the report into `out_dir` (created); returns the files written.
pub fn write_summary(summary: &Summary, out_dir: &Path) -> Result<Vec<PathBuf>, CurationError> {
    create_dir(out_dir)?;
    let mut files = vec![
        write_text(out_dir, "summary.md", &markdown(summary))?,
        write_text(out_dir, "summary.csv", &csv(summary))?,
    ];
    files.extend(lines(&out_dir.join("test-vs-examples"), &chart(summary))?);
    Ok(files)
}

/// `12.3 % ± 4.5` (the interval's half-width), in percent.
fn percent(e: &Estimate) -> String {
    match e.half_width {
        Some(h) => format!("{:.1} % ± {:.1}", e.mean * 100.0, h * 100.0),
        None => format!("{:.1} %", e.mean * 100.0),
    }
}

/// `1.52× ± 0.40`, `≥ 1.00×` for a lower bound.
fn times(r: Ratio) -> String {
    match r {
        Ratio::Exact(v) => format!("{v:.2}×"),
        Ratio::AtLeast(v) => format!("≥ {v:.2}×"),
    }
}

fn efficiency_cell(e: &Efficiency) -> String {
    let bound = if e.censored() > 0 { "≥ " } else { "" };
    match e.estimate.half_width {
        Some(h) => format!(
            "{bound}{:.2}× ± {h:.2} ([{:.2}, {:.2}])",
            e.estimate.mean,
            e.estimate.mean - h,
            e.estimate.mean + h
        ),
        None => format!("{bound}{:.2}×", e.estimate.mean),
    }
}

fn markdown(s: &Summary) -> String {
    let mut md = format!(
        "# Curation over {} seeds\n\nCurations: {}. Means over the seeds with 95 % confidence intervals (Student's t, {} degrees of freedom).\n\n",
        s.seeds.len(),
        s.seeds.join(", "),
        s.seeds.len() - 1
    );
    md.push_str("## Test accuracy against training examples\n\n![test accuracy vs training examples](test-vs-examples.svg)\n\n");
    md.push_str("| strategy | iteration | train examples | test accuracy | per seed |\n|---|---:|---:|---:|---|\n");
    for c in &s.curves {
        for p in &c.points {
            let per_seed: Vec<String> = p
                .accuracies
                .iter()
                .map(|a| format!("{:.1}", a * 100.0))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {} | {} |",
                label(c.strategy),
                p.iteration,
                p.train_examples,
                percent(&p.accuracy),
                per_seed.join(", ")
            );
        }
    }
    md.push_str(&efficiency_section(s));
    md.push_str(&families_section(s));
    md
}

/// P-M per family after the first run and each strategy's parents by
/// family.
fn families_section(s: &Summary) -> String {
    let Some(f) = &s.families else {
        return String::new();
    };
    let mut md = String::from("\n## Families\n\n");
    md.push_str("Mean P-M accuracy of each family of D after the first (shared) run, per seed:\n\n| family | mean | per seed |\n|---|---:|---|\n");
    for (family, values) in f.families.iter().zip(&f.first_run_pm) {
        let known: Vec<f64> = values.iter().flatten().copied().collect();
        let cells: Vec<String> = values
            .iter()
            .map(|v| v.map_or("–".into(), |v| format!("{:.2}", v)))
            .collect();
        let mean = known.iter().sum::<f64>() / known.len().max(1) as f64;
        let _ = writeln!(md, "| {family} | {mean:.2} | {} |", cells.join(", "));
    }
    md.push_str("\nThe parents each strategy chose (every seed and iteration), by family:\n\n");
    let _ = writeln!(md, "| strategy | parents | {} |", f.families.join(" | "));
    let _ = writeln!(md, "|---|---:|{}", "---:|".repeat(f.families.len()));
    for (strategy, counts) in &f.parents {
        let total: usize = counts.values().sum();
        let cells: Vec<String> = f
            .families
            .iter()
            .map(|family| {
                let n = counts.get(family).copied().unwrap_or(0);
                format!("{:.0} % ({n})", 100.0 * n as f64 / total.max(1) as f64)
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} | {total} | {} |",
            label(*strategy),
            cells.join(" | ")
        );
    }
    md
}

fn efficiency_section(s: &Summary) -> String {
    let mut md = String::from("\n## Sample efficiency over IID\n\n");
    if s.efficiency.is_empty() {
        md.push_str("No `iid` strategy: nothing to compare against.\n");
        return md;
    }
    md.push_str(
        "How many examples IID must add to reach a strategy's test accuracy, as a multiple of the examples the strategy added (1× = as good as IID, 2× = worth twice its examples). Per seed, on that seed's IID curve (its test accuracy at each iteration), linearly interpolated at the first crossing; a strategy below IID's first run counts 0×. `≥`: the strategy beat IID's largest run, so the ratio is only a lower bound (IID's largest addition over the strategy's), and a mean with such a seed is a lower bound too.\n\n",
    );
    md.push_str("| strategy | after iteration | ratio (mean ± 95 % CI) | per seed | seeds beyond IID's curve |\n|---|---:|---:|---|---:|\n");
    for e in &s.efficiency {
        let per_seed: Vec<String> = e.per_seed.iter().map(|r| times(*r)).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} of {} |",
            label(e.strategy),
            e.iteration,
            efficiency_cell(e),
            per_seed.join(", "),
            e.censored(),
            e.per_seed.len()
        );
    }
    md
}

fn csv(s: &Summary) -> String {
    let mut out = String::from(
        "kind,strategy,iteration,train_examples,mean,ci95_half_width,per_seed,censored\n",
    );
    let hw = |e: &Estimate| e.half_width.map_or(String::new(), |h| format!("{h:.6}"));
    for c in &s.curves {
        for p in &c.points {
            let per_seed: Vec<String> = p.accuracies.iter().map(|a| format!("{a:.6}")).collect();
            let _ = writeln!(
                out,
                "test_accuracy,{},{},{},{:.6},{},{},",
                c.strategy.name(),
                p.iteration,
                p.train_examples,
                p.accuracy.mean,
                hw(&p.accuracy),
                per_seed.join(";")
            );
        }
    }
    for e in &s.efficiency {
        let per_seed: Vec<String> = e
            .per_seed
            .iter()
            .map(|r| format!("{:.6}", r.value()))
            .collect();
        let _ = writeln!(
            out,
            "efficiency_over_iid,{},{},,{:.6},{},{},{}",
            e.strategy.name(),
            e.iteration,
            e.estimate.mean,
            hw(&e.estimate),
            per_seed.join(";"),
            e.censored()
        );
    }
    out
}

/// Test accuracy against training examples, one line per strategy with its
/// 95 % intervals; each strategy's points shifted sideways by a little (1 %
/// of the largest size per strategy) so that bars at one size stay apart.
fn chart(s: &Summary) -> Lines {
    let largest = s
        .curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.train_examples))
        .fold(0.0, f64::max);
    let shift = |k: usize| (k as f64 - (s.curves.len() as f64 - 1.0) / 2.0) * 0.01 * largest;
    let at = |k: usize, p: &super::summary::Point| (p.train_examples + shift(k), p.accuracy.mean);
    Lines {
        title: format!(
            "test accuracy vs training examples ({} seeds)",
            s.seeds.len()
        ),
        x_label: "training examples (D + D')".into(),
        y_label: "test accuracy (mean, 95 % CI)".into(),
        log_x: false,
        series: s
            .curves
            .iter()
            .enumerate()
            .map(|(k, c)| Series {
                label: label(c.strategy).into(),
                points: c.points.iter().map(|p| at(k, p)).collect(),
            })
            .collect(),
        marker: None,
        bars: s
            .curves
            .iter()
            .enumerate()
            .map(|(k, c)| {
                c.points
                    .iter()
                    .filter_map(|p| {
                        let h = p.accuracy.half_width?;
                        let (x, y) = at(k, p);
                        Some((x, y - h, y + h))
                    })
                    .collect()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Strategy;
    use crate::summary::{Curve, Point, estimate};

    fn point(iteration: u32, examples: f64, accuracies: &[f64]) -> Point {
        Point {
            iteration,
            train_examples: examples,
            examples: vec![examples; accuracies.len()],
            accuracies: accuracies.to_vec(),
            accuracy: estimate(accuracies),
        }
    }

    /// The report of two seeds, without and with an iid curve: the
    /// accuracy with its interval and per-seed values, the ratios (hand
    /// computed in summary.rs's tests) and a lower bound marked as one.
    #[test]
    fn report_shows_intervals_ratios_and_bounds() {
        let curve = |strategy, acc: [[f64; 2]; 3]| Curve {
            strategy,
            points: (0..3)
                .map(|i| point(i as u32 + 1, 100.0 + 50.0 * i as f64, &acc[i]))
                .collect(),
        };
        let pm = curve(Strategy::Pm, [[0.1, 0.2], [0.25, 0.4], [0.35, 0.38]]);
        let iid = curve(Strategy::Iid, [[0.1, 0.2], [0.2, 0.3], [0.3, 0.4]]);
        let seeds = vec!["a".to_string(), "b".to_string()];
        let dir = tempfile::tempdir().unwrap();
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();

        let alone = Summary::of_curves(seeds.clone(), vec![pm.clone()]);
        assert_eq!(write_summary(&alone, dir.path()).unwrap().len(), 4);
        assert!(read("summary.md").contains("No `iid` strategy"));

        write_summary(&Summary::of_curves(seeds, vec![pm, iid]), dir.path()).unwrap();
        let md = read("summary.md");
        // pm after 2: 32.5 %, ± t(0.975, 1) · sd(25, 40) / √2 = 12.706 · 10.61 / 1.414 = 95.3.
        assert!(
            md.contains("| P-M (pre-memorization) | 2 | 150 | 32.5 % ± 95.3 | 25.0, 40.0 |"),
            "{md}"
        );
        assert!(md.contains("| 1.50×, 2.00× | 0 of 2 |"), "{md}");
        assert!(md.contains("| ≥ 0.95× ± "), "{md}");
        assert!(md.contains("| ≥ 1.00×, 0.90× | 1 of 2 |"), "{md}");
        let csv = read("summary.csv");
        assert!(csv.contains("efficiency_over_iid,pm,2,,1.750000,"), "{csv}");
        assert!(csv.contains("test_accuracy,iid,3,200,0.350000,"), "{csv}");
        let svg = read("test-vs-examples.svg");
        assert!(svg.contains("IID") && svg.contains("(2 seeds)"), "{svg}");
    }
}
