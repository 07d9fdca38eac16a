//! `premem sweep` end to end: the runs of a sweep packed onto pool trainers
//! and evaluated by one fleet; a coordinator killed mid-sweep; the same
//! sweep run twice.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cluster::{Cluster, TOKEN};
use common::{file_times, job_spec, premem, synth_task, text};
use premem_core::data::results::{ExampleResult, read_parquet};

type Rows = BTreeMap<(String, u64, String, String), ExampleResult>;

/// Every result row of every run under `sweep`, keyed by (run directory,
/// step, split, id); panics on a duplicate.
fn sweep_rows(sweep: &Path) -> Rows {
    let mut rows = BTreeMap::new();
    for run in std::fs::read_dir(sweep).unwrap() {
        let run = run.unwrap().path();
        let name = run.file_name().unwrap().to_string_lossy().into_owned();
        let Ok(steps) = std::fs::read_dir(run.join("results")) else {
            continue;
        };
        for step in steps {
            for file in std::fs::read_dir(step.unwrap().path()).unwrap() {
                let file = file.unwrap().path();
                for row in read_parquet(&file).unwrap() {
                    let key = (
                        name.clone(),
                        row.checkpoint_step,
                        row.split.clone(),
                        row.id.clone(),
                    );
                    assert!(rows.insert(key.clone(), row).is_none(), "{key:?} twice");
                }
            }
        }
    }
    rows
}

/// A sweep of 3 tiny runs (2 learning rates, one of them with 2 seeds) over
/// the synthetic task, writing under `output`.
fn sweep_file(dir: &Path, output: &Path) -> PathBuf {
    let job = job_spec(
        dir,
        &dir.join("base"),
        "epochs = 2",
        "every_steps = 8\nbaselines = false",
    );
    let job_text = std::fs::read_to_string(&job).unwrap().replace(
        "[train]\n",
        &format!(
            "[data.test]\npath = \"{}\"\nformat = \"gsm8k\"\n\n[train]\n",
            dir.join("data/test.jsonl").display()
        ),
    ) + "\n[eval]\nlimit = 6\nsamples = 2\nmax_new_tokens = 12\ntask_examples = 3\nbatch_size = 3\n";
    std::fs::write(&job, job_text).unwrap();
    let path = dir.join(format!(
        "sweep-{}.toml",
        output.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(
        &path,
        format!(
            r#"[sweep]
name = "t"
output = "{output}"
trainers = 2
evaluators = 1
job = "{job}"

[grid]
"train.lr" = [3e-3]
"run.seed" = [1, 2]

[[list]]
"train.max_grad_norm" = 1.0

[[list]]
"train.max_grad_norm" = 0.5
"#,
            output = output.display(),
            job = job.display()
        ),
    )
    .unwrap();
    path
}

/// The names of the sweep's runs, from a dry run.
fn run_names(sweep: &Path) -> Vec<String> {
    let out = premem()
        .args(["sweep", sweep.to_str().unwrap(), "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("t-")
                .map(|r| format!("t-{}", r.split_whitespace().next().unwrap()))
        })
        .collect()
}

#[test]
fn a_sweep_survives_a_coordinator_restart_and_reruns_nothing_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_task(dir);

    // Undisturbed: the local cluster of `premem sweep`.
    let calm = dir.join("calm");
    let sweep = sweep_file(dir, &calm);
    let names = run_names(&sweep);
    assert_eq!(names.len(), 4, "{names:?}");
    let out = premem()
        .env("PREMEM_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .env("OMP_NUM_THREADS", "1")
        .args([
            "sweep",
            sweep.to_str().unwrap(),
            "--workdir",
            dir.join("calm-work").to_str().unwrap(),
            "--cache-dir",
            dir.join("calm-cache").to_str().unwrap(),
            "--report",
            dir.join("calm-report").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    for name in &names {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(name.as_str()) && l.contains(" done ")),
            "{name} not done:\n{stdout}"
        );
    }
    assert!(dir.join("calm-report/report.md").exists());

    // Disturbed: a cluster of 2 pool trainers and 1 evaluator whose
    // coordinator is killed once the first run is finished.
    let rough = dir.join("rough");
    let sweep = sweep_file(dir, &rough);
    // One pool trainer: the runs train one after another, so some are
    // finished and some are not when the coordinator dies.
    let mut cluster = Cluster::start(dir);
    cluster.start_pool_trainer("pool-0");
    cluster.start_evaluator("e");
    cluster.start_cli(
        "sweep",
        &["sweep", sweep.to_str().unwrap(), "--remote", "--no-report"],
    );
    // Finished: both checkpoints evaluated (2 train + 2 test tasks each).
    // Only finished result files count: the local store writes each one as
    // `<name>#<n>` first and then renames it.
    let evaluated = |name: &str| {
        std::fs::read_dir(rough.join(name).join("results/step-00000016"))
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
                })
                .count()
                    == 4
            })
            .unwrap_or(false)
    };
    let mut finished = String::new();
    cluster.wait_for("a finished run", || {
        finished = names
            .iter()
            .find(|n| evaluated(n))
            .cloned()
            .unwrap_or_default();
        !finished.is_empty()
    });
    let unfinished = names.iter().filter(|n| !evaluated(n)).count();
    assert!(unfinished > 0, "every run ended before the restart");
    let before = file_times(&rough.join(&finished));
    cluster.kill_coordinator();
    std::thread::sleep(Duration::from_millis(1500));
    cluster.start_coordinator();
    cluster.wait_success("sweep", Duration::from_secs(300));

    // The finished run was not trained or evaluated again: none of its
    // files was written after the restart. The restarted coordinator may
    // add the TensorBoard event files its predecessor had not written yet.
    let mut after = file_times(&rough.join(&finished));
    after.retain(|path, _| {
        before.contains_key(path) || !path.to_string_lossy().contains("/tensorboard/events.")
    });
    assert_eq!(before, after, "{finished} was touched after the restart");
    let log = cluster.log_text("pool-0");
    let assigned = log
        .lines()
        .filter(|l| l.contains(" assigned ") && l.contains(finished.as_str()))
        .count();
    assert_eq!(assigned, 1, "{finished} assigned {assigned} times:\n{log}");

    // Both sweeps hold the same rows.
    let (calm_rows, rough_rows) = (sweep_rows(&calm), sweep_rows(&rough));
    assert_eq!(
        calm_rows.len(),
        4 * 2 * 12,
        "4 runs x 2 checkpoints x (6 train + 6 test)"
    );
    assert_eq!(calm_rows, rough_rows);
}

#[test]
fn bad_sweeps_are_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_task(dir);
    let sweep = sweep_file(dir, &dir.join("bad"));
    let text_of = |sweep: &Path| {
        let out = premem()
            .args(["sweep", sweep.to_str().unwrap(), "--dry-run"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        text(&out.stderr)
    };
    let original = std::fs::read_to_string(&sweep).unwrap();
    std::fs::write(
        &sweep,
        original.replace("\"train.lr\"", "\"train.learning_rate\""),
    )
    .unwrap();
    let err = text_of(&sweep);
    assert!(
        err.contains("train.learning_rate") && err.contains("learning_rate") && err.contains("lr"),
        "{err}"
    );
    std::fs::write(&sweep, original.replace("[3e-3]", "[]")).unwrap();
    let err = text_of(&sweep);
    assert!(err.contains("train.lr"), "{err}");
    assert!(!dir.join("bad").exists());
}
