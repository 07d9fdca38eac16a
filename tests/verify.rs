//! Checkpoints are verified against their manifests before `premem eval`
//! and `premem eval-run` read them, plain Hugging Face directories are read
//! with a warning, and `premem report` warns of non-finite perplexities:
//! real (tiny, CPU) training runs, real `premem` processes.

mod common;

use std::path::{Path, PathBuf};

use common::{job_spec, run, synth_task, text};
use premem_core::data::results::{read_parquet, write_parquet};
use premem_core::storage::checkpoint::{MANIFEST, Manifest};

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

/// A trained run (checkpoints at steps 8 and 16) in `dir/run`; its data.
fn trained_run(dir: &Path) -> (PathBuf, PathBuf) {
    let data = synth_task(dir);
    let output = dir.join("run");
    let spec = job_spec(dir, &output, "epochs = 2", "");
    let out = run(&["train", "--config", spec.to_str().unwrap(), "--no-progress"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    (output, data)
}

/// `premem eval --checkpoint <checkpoint>` on two train examples.
fn eval(dir: &Path, data: &Path, checkpoint: &str) -> std::process::Output {
    run(&[
        "eval",
        "--checkpoint",
        checkpoint,
        "--data",
        data.join("train.jsonl").to_str().unwrap(),
        "--limit",
        "2",
        "--max-new-tokens",
        "4",
        "--out",
        dir.join("r.parquet").to_str().unwrap(),
        "--cache-dir",
        dir.join("cache").to_str().unwrap(),
    ])
}

fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn success(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stderr)
}

fn failure(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "{}", text(&out.stdout));
    text(&out.stderr)
}

#[test]
fn eval_refuses_a_checkpoint_with_a_flipped_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let (output, data) = trained_run(tmp.path());
    let copy = tmp.path().join("copy");
    copy_dir(&output.join("checkpoints/step-00000016"), &copy);
    let stderr = success(&eval(tmp.path(), &data, copy.to_str().unwrap()));
    assert!(!stderr.contains("not verified"), "{stderr}");

    // Refused though it passed before (its verified-marker no longer holds).
    flip_a_byte(&copy.join("model.safetensors"));
    let stderr = failure(&eval(tmp.path(), &data, copy.to_str().unwrap()));
    assert!(
        stderr.contains(copy.to_str().unwrap())
            && stderr.contains("model.safetensors is corrupt")
            && stderr.contains("sha256"),
        "{stderr}"
    );
}

#[test]
fn eval_refuses_a_checkpoint_whose_manifest_was_edited() {
    let tmp = tempfile::tempdir().unwrap();
    let (output, data) = trained_run(tmp.path());
    let copy = tmp.path().join("copy");
    copy_dir(&output.join("checkpoints/step-00000016"), &copy);
    let path = copy.join(MANIFEST);
    let mut manifest: Manifest = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let edited = "ab".repeat(32);
    let entry = manifest
        .files
        .iter_mut()
        .find(|f| f.name == "model.safetensors");
    entry.unwrap().sha256 = edited.clone();
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();

    let stderr = failure(&eval(tmp.path(), &data, copy.to_str().unwrap()));
    assert!(
        stderr.contains(copy.to_str().unwrap())
            && stderr.contains("model.safetensors is corrupt")
            && stderr.contains(&format!("sha256 {edited}")),
        "{stderr}"
    );
}

#[test]
fn eval_run_refuses_a_run_whose_checkpoint_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let (output, _) = trained_run(tmp.path());
    flip_a_byte(&output.join("checkpoints/step-00000008/model.safetensors"));
    let out = run(&[
        "eval-run",
        "--run",
        output.to_str().unwrap(),
        "--splits",
        "train",
        "--limit",
        "2",
        "--max-new-tokens",
        "4",
        "--cache-dir",
        tmp.path().join("cache").to_str().unwrap(),
    ]);
    let stderr = failure(&out);
    assert!(
        stderr.contains("checkpoints/step-00000008")
            && stderr.contains("model.safetensors is corrupt")
            && stderr.contains("sha256"),
        "{stderr}"
    );
    assert!(!output.join("results/step-00000008/train.parquet").exists());
}

#[test]
fn a_plain_model_directory_is_read_with_a_warning_as_a_path_or_a_file_url() {
    let tmp = tempfile::tempdir().unwrap();
    let (output, data) = trained_run(tmp.path());
    let plain = tmp.path().join("plain");
    copy_dir(&output.join("checkpoints/step-00000016"), &plain);
    std::fs::remove_file(plain.join(MANIFEST)).unwrap();
    let warning = format!(
        "{} has no MANIFEST.json: its files are not verified",
        plain.display()
    );
    let stderr = success(&eval(tmp.path(), &data, plain.to_str().unwrap()));
    assert!(stderr.contains(&warning), "{stderr}");
    let url = format!("file://{}", plain.display());
    let stderr = success(&eval(tmp.path(), &data, &url));
    assert!(stderr.contains(&warning), "{stderr}");
}

#[test]
fn report_warns_of_non_finite_perplexities() {
    let tmp = tempfile::tempdir().unwrap();
    let (output, _) = trained_run(tmp.path());
    let out = run(&[
        "eval-run",
        "--run",
        output.to_str().unwrap(),
        "--splits",
        "train",
        "--limit",
        "4",
        "--samples",
        "1",
        "--max-new-tokens",
        "4",
        "--cache-dir",
        tmp.path().join("cache").to_str().unwrap(),
    ]);
    success(&out);
    let path = output.join("results/step-00000016/train.parquet");
    let mut rows = read_parquet(&path).unwrap();
    rows[0].target_perplexity = f64::INFINITY;
    rows[1].target_perplexity = f64::INFINITY;
    write_parquet(&path, &rows).unwrap();

    let report = tmp.path().join("report");
    let out = run(&[
        "report",
        output.to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
    ]);
    success(&out);
    let warning = "step 16: 2 of 4 result rows have a non-finite target perplexity";
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("warning: run `test` {warning}")),
        "{stdout}"
    );
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains(warning), "{md}");
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains(warning), "{html}");
}

#[test]
fn generate_and_model_convert_refuse_a_corrupt_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (output, _) = trained_run(tmp.path());
    let copy = tmp.path().join("copy");
    copy_dir(&output.join("checkpoints/step-00000016"), &copy);
    flip_a_byte(&copy.join("model.safetensors"));
    let model = copy.to_str().unwrap();
    let out = run(&[
        "generate", "--model", model, "--prompt", "Natalia", "--device", "cpu",
    ]);
    let stderr = failure(&out);
    assert!(stderr.contains("model.safetensors is corrupt"), "{stderr}");
    let converted = tmp.path().join("converted");
    let out = run(&[
        "model",
        "convert",
        "--model",
        model,
        "--out",
        converted.to_str().unwrap(),
    ]);
    let stderr = failure(&out);
    assert!(stderr.contains("model.safetensors is corrupt"), "{stderr}");
    assert!(!converted.exists());
}
