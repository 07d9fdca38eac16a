//! `premem eval-run` and `premem report` on a real (tiny, CPU) training run:
//! baselines beside every checkpoint, results for every checkpoint, every
//! report file, and gaps in the results named instead of averaged over.

mod common;

use std::fs::File;
use std::path::Path;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt64Type};
use common::{job_spec, run, synth_task, text};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use premem_core::data::results::{read_parquet, write_parquet};
use premem_core::science::baselines::{BASELINES_FILE, CheckpointBaselines};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn table(path: &Path) -> arrow_array::RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 1, "small tables come in one batch");
    batches.remove(0)
}

/// (step, column value) of `checkpoints.parquet`.
fn column(batch: &arrow_array::RecordBatch, name: &str) -> Vec<(u64, Option<f64>)> {
    let steps = batch
        .column_by_name("step")
        .unwrap()
        .as_primitive::<UInt64Type>();
    let values = batch
        .column_by_name(name)
        .unwrap()
        .as_primitive::<Float64Type>();
    (0..batch.num_rows())
        .map(|i| {
            (
                steps.value(i),
                (!values.is_null(i)).then(|| values.value(i)),
            )
        })
        .collect()
}

#[test]
fn a_tiny_run_is_evaluated_and_reported_with_every_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synth_task(tmp.path());
    let output = tmp.path().join("run");
    let spec = job_spec(tmp.path(), &output, "epochs = 3", "");
    let with_test = std::fs::read_to_string(&spec).unwrap().replace(
        "[train]\n",
        &format!(
            "[data.test]\npath = \"{}\"\nformat = \"gsm8k\"\n\n[train]\n",
            data.join("test.jsonl").display()
        ),
    );
    std::fs::write(&spec, with_test).unwrap();
    let out = run(&["train", "--config", spec.to_str().unwrap(), "--no-progress"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // 64 examples / batch 8: checkpoints at steps 8, 16, 24, each with the
    // trainer's baseline measurements.
    let mut distances = vec![];
    for step in [8u64, 16, 24] {
        let path = output.join(format!("checkpoints/step-{step:08}/{BASELINES_FILE}"));
        let b: CheckpointBaselines =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            (b.step, b.grad_minibatches, b.grad_minibatch_size),
            (step, 5, 8)
        );
        assert!(b.grad_variance.is_some_and(|v| v > 0.0), "{b:?}");
        distances.push(b.distance_from_init.unwrap());
    }
    assert!(
        distances[0] > 0.0 && distances[2] > distances[0],
        "{distances:?}"
    );

    let run_dir = output.to_str().unwrap();
    let cache = tmp.path().join("cache");
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval-run",
            "--run",
            run_dir,
            "--limit",
            "8",
            "--samples",
            "2",
            "--max-new-tokens",
            "24",
            "--cache-dir",
            cache.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let out = eval(&["--preamble", "First"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("evaluated 6 checkpoint splits"),
        "{}",
        text(&out.stdout)
    );
    let train_rows = read_parquet(&output.join("results/step-00000016/train.parquet")).unwrap();
    assert_eq!(
        train_rows.len(),
        16,
        "8 examples, with and without the preamble"
    );
    assert!(
        train_rows
            .iter()
            .all(|r| r.sample_confidences.len() == 2
                && r.sample_confidences.iter().all(|c| *c < 0.0))
    );
    // A second call has nothing left to do (results with more preambles
    // than asked for serve).
    let out = eval(&[]);
    assert!(
        text(&out.stdout).contains("evaluated 0 checkpoint splits")
            && text(&out.stdout).contains("6 already had results"),
        "{}",
        text(&out.stdout)
    );
    // Other settings do not silently stand beside the old results.
    let out = eval(&["--preamble", "First", "--temperature", "0.5"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("step-00000008/train.parquet")
            && stderr.contains("other settings")
            && stderr.contains("--redo"),
        "{stderr}"
    );

    let report = tmp.path().join("report");
    let out = run(&["report", run_dir, "--out", report.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("P-M vs test over 3 checkpoints"),
        "{stdout}"
    );
    // One run: R² out of sample over alternating checkpoints, in sample beside.
    assert!(
        stdout.contains("R² out of sample")
            && stdout.contains("(one run, two folds of alternating checkpoints")
            && stdout.contains("in sample: R² vs y = x"),
        "{stdout}"
    );
    for chart in [
        "heatmap-test",
        "pm_vs_test",
        "baselines",
        "robustness",
        "calibration",
        "training",
    ] {
        let png = std::fs::read(report.join(format!("{chart}.png"))).unwrap();
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5000,
            "{chart}"
        );
        let svg = std::fs::read_to_string(report.join(format!("{chart}.svg"))).unwrap();
        assert!(svg.contains("<svg"), "{chart}");
    }
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.contains("None: every checkpoint has train and test results"),
        "{md}"
    );
    assert!(md.contains("| 24 |") && md.contains("preamble"), "{md}");
    assert!(
        md.contains("| metric | R² out of sample | in sample: R² vs y = x |"),
        "{md}"
    );
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(
        html.contains("<svg") && !html.contains("<img"),
        "self-contained"
    );
    assert!(html.contains("<table>"));
    // What the run was made with: the build, its inputs' checksums and the
    // resolved spec.
    assert!(md.contains("## Provenance") && html.contains("Provenance"));
    let provenance: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("provenance.json")).unwrap()).unwrap();
    let entry = &provenance.as_array().unwrap()[0];
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output.join("run.json")).unwrap()).unwrap();
    assert_eq!(entry["run"], record["name"]);
    assert_eq!(entry["premem_version"], record["premem_version"]);
    assert_eq!(entry["spec"], record["spec"]);
    assert_eq!(entry["checksums"], record["checksums"]);
    assert!(md.contains(record["premem_version"].as_str().unwrap()));
    let examples = table(&report.join("examples.parquet"));
    assert_eq!(examples.num_rows(), 3 * 8);
    let checkpoints = table(&report.join("checkpoints.parquet"));
    assert_eq!(checkpoints.num_rows(), 3);
    assert_eq!(table(&report.join("calibration.parquet")).num_rows(), 61);
    assert!(column(&checkpoints, "pm").iter().all(|(_, v)| v.is_some()));
    assert!(
        column(&checkpoints, "grad_variance")
            .iter()
            .all(|(_, v)| v.is_some())
    );

    // A sweep: a directory of runs (here three copies under other names).
    let sweep = tmp.path().join("sweep");
    for name in ["lr-a", "lr-b", "lr-c"] {
        copy_dir(&output, &sweep.join(name));
        let record = sweep.join(name).join("run.json");
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        json["name"] = name.into();
        json["spec"]["run"]["name"] = name.into();
        std::fs::write(&record, serde_json::to_vec(&json).unwrap()).unwrap();
    }
    let sweep_report = tmp.path().join("sweep-report");
    let out = run(&[
        "report",
        sweep.to_str().unwrap(),
        "--out",
        sweep_report.to_str().unwrap(),
        "--atc-reference",
        "lr-b",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("P-M vs test over 9 checkpoints") && stdout.contains("(leave one run out"),
        "{stdout}"
    );
    assert!(
        sweep_report.join("heatmap-lr-a.png").exists()
            && sweep_report.join("heatmap-lr-b.svg").exists()
    );
    let md = std::fs::read_to_string(sweep_report.join("report.md")).unwrap();
    assert!(
        md.contains("3 runs (lr-a, lr-b, lr-c)") && md.contains("run `lr-b`"),
        "{md}"
    );
    // Three runs: what limits the fit, measured.
    let limits = &md[md.find("## What limits the fit").expect("a limits section")..];
    assert!(
        limits.contains("caps the R² of any predictor")
            && limits.contains("| samples per train example (k) | 1 | 2 |")
            && limits.contains("| train examples | 25% | 50% | 100% |")
            && limits.contains("| checkpoints: every n-th | 1 | 2 | 4 |"),
        "{limits}"
    );
    let provenance: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sweep_report.join("provenance.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = provenance
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["run"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lr-a", "lr-b", "lr-c"]);
    assert_eq!(
        table(&sweep_report.join("checkpoints.parquet")).num_rows(),
        9
    );

    // Gaps: step 16 loses its test results, step 24 one train example.
    std::fs::remove_file(output.join("results/step-00000016/test.parquet")).unwrap();
    let path = output.join("results/step-00000024/train.parquet");
    let mut rows = read_parquet(&path).unwrap();
    let dropped = rows[0].id.clone();
    rows.retain(|r| r.id != dropped);
    write_parquet(&path, &rows).unwrap();
    let out = run(&["report", run_dir, "--out", report.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 gaps"),
        "{}",
        text(&out.stdout)
    );
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.contains("step 16: 8 of 8 test examples have no results"),
        "{md}"
    );
    assert!(
        md.contains(&format!(
            "step 24: 1 of 8 train examples have no results: {dropped}"
        )),
        "{md}"
    );
    let checkpoints = table(&report.join("checkpoints.parquet"));
    let test = column(&checkpoints, "test_accuracy");
    assert_eq!(
        test.iter().map(|(_, v)| v.is_some()).collect::<Vec<_>>(),
        [true, false, true]
    );
    let pm = column(&checkpoints, "pm");
    assert_eq!(
        pm.iter().map(|(_, v)| v.is_some()).collect::<Vec<_>>(),
        [true, true, false]
    );

    // A row filed under the wrong checkpoint is an error naming the file.
    let mut rows = read_parquet(&output.join("results/step-00000008/test.parquet")).unwrap();
    rows[0].checkpoint_step = 99;
    write_parquet(
        &output.join("results/step-00000008/test-extra.parquet"),
        &rows,
    )
    .unwrap();
    let out = run(&["report", run_dir, "--out", report.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("step-00000008/test-extra.parquet")
            && stderr.contains("checkpoint_step 99"),
        "{stderr}"
    );
    // Not a run at all.
    let out = run(&["report", tmp.path().join("data").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("neither a run"),
        "{}",
        text(&out.stderr)
    );
    // A location that is not there is not created (issue 18, finding 14).
    let absent = tmp.path().join("absent");
    let out = run(&[
        "report",
        absent.to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("absent: not found"),
        "{}",
        text(&out.stderr)
    );
    assert!(!absent.exists(), "the report created {}", absent.display());
}

#[test]
fn measuring_baselines_leaves_training_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    synth_task(tmp.path());
    let mut weights = vec![];
    for (name, checkpoint) in [
        ("with", "baselines = true"),
        ("without", "baselines = false"),
    ] {
        let output = tmp.path().join(name);
        let spec = job_spec(tmp.path(), &output, "epochs = 2", checkpoint);
        let out = run(&["train", "--config", spec.to_str().unwrap(), "--no-progress"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let last = output.join("checkpoints/step-00000016");
        assert_eq!(last.join(BASELINES_FILE).exists(), name == "with");
        weights.push(std::fs::read(last.join("model.safetensors")).unwrap());
    }
    assert!(weights[0] == weights[1], "the probe changed the training");
}

/// `eval-run --last --sampling-of-run --preambles-only`: the last
/// checkpoint re-sampled with a preamble as the run's own evaluation sampled
/// it, beside the run's own rows (what `make reproduce-sweep` does).
#[test]
fn eval_run_adds_preamble_rows_to_the_last_checkpoint_as_the_run_sampled() {
    let tmp = tempfile::tempdir().unwrap();
    synth_task(tmp.path());
    let output = tmp.path().join("run");
    let eval = "\n[eval]\nsamples = 2\nmax_new_tokens = 24\ntemperature = 0.7";
    let spec = job_spec(tmp.path(), &output, "epochs = 2", eval);
    let out = run(&["train", "--config", spec.to_str().unwrap(), "--no-progress"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run_dir = output.to_str().unwrap();
    let cache = tmp.path().join("cache");
    let eval_run = |extra: &[&str]| {
        let mut args = vec!["eval-run", "--run", run_dir, "--splits", "train"];
        args.extend_from_slice(&["--limit", "8", "--cache-dir", cache.to_str().unwrap()]);
        args.extend_from_slice(extra);
        run(&args)
    };
    let flags = [
        "--samples",
        "2",
        "--max-new-tokens",
        "24",
        "--temperature",
        "0.7",
    ];
    let out = eval_run(&flags);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("evaluated 2 checkpoint splits"));
    // The run's own rows, named as its evaluators name their files.
    let step = output.join("results/step-00000016");
    std::fs::rename(step.join("train.parquet"), step.join("train-0000.parquet")).unwrap();
    let own = std::fs::read(step.join("train-0000.parquet")).unwrap();
    let first = std::fs::read(output.join("results/step-00000008/train.parquet")).unwrap();

    let out = eval_run(&[
        "--last",
        "--sampling-of-run",
        "--preambles-only",
        "--preamble",
        "First",
        "--redo",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("evaluated 1 checkpoint splits"),
        "only the last checkpoint: {}",
        text(&out.stdout)
    );
    let added = read_parquet(&step.join("train.parquet")).unwrap();
    assert_eq!(added.len(), 8);
    assert!(
        added
            .iter()
            .all(|r| r.preamble == "First" && r.samples == 2)
    );
    assert_eq!(std::fs::read(step.join("train-0000.parquet")).unwrap(), own);
    let untouched = std::fs::read(output.join("results/step-00000008/train.parquet")).unwrap();
    assert_eq!(untouched, first);
    let report = tmp.path().join("report");
    let out = run(&["report", run_dir, "--out", report.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.contains("at test step 16") && md.contains("\"First\" |"),
        "{md}"
    );

    // The run's settings leave no room for others; preamble rows need a preamble.
    let out = eval_run(&["--sampling-of-run", "--samples", "4"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--samples"),
        "{}",
        text(&out.stderr)
    );
    let out = eval_run(&["--preambles-only"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--preamble"),
        "{}",
        text(&out.stderr)
    );
}
