//! Bad input to `premem train`: a clear error naming the thing and where it
//! is, and nothing half-published in the store.

mod common;

use std::path::Path;

use common::{job_spec, run, synth_task, text};

fn train(spec: &Path) -> (i32, String) {
    let out = run(&["train", "--config", spec.to_str().unwrap(), "--no-progress"]);
    (out.status.code().unwrap_or(-1), text(&out.stderr))
}

fn assert_nothing_written(output: &Path) {
    let entries: Vec<_> = std::fs::read_dir(output)
        .map(|d| d.filter_map(|e| e.ok()).collect())
        .unwrap_or_default();
    assert!(entries.is_empty(), "the store holds {entries:?}");
}

#[test]
fn bad_data_is_named_by_file_and_line_before_the_store_is_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synth_task(tmp.path());
    let train_file = data.join("train.jsonl");
    let mut lines: Vec<String> = std::fs::read_to_string(&train_file)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();

    lines[2] = "{\"question\": \"broken".into();
    std::fs::write(&train_file, lines.join("\n")).unwrap();
    let output = tmp.path().join("out");
    let (code, stderr) = train(&job_spec(tmp.path(), &output, "", ""));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("train.jsonl:3: not valid JSON"), "{stderr}");
    assert_nothing_written(&output);

    lines[2] = "{\"question\": \"no answer here\"}".into();
    std::fs::write(&train_file, lines.join("\n")).unwrap();
    let (_, stderr) = train(&job_spec(tmp.path(), &output, "", ""));
    assert!(
        stderr.contains("train.jsonl:3: missing field `answer`"),
        "{stderr}"
    );
    assert_nothing_written(&output);
}

#[test]
fn unknown_keys_and_bad_values_in_the_spec_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    synth_task(tmp.path());
    let output = tmp.path().join("out");
    let (code, stderr) = train(&job_spec(tmp.path(), &output, "learning_rate = 0.1", ""));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("job-out.toml") && stderr.contains("unknown field `learning_rate`"),
        "{stderr}"
    );
    let (_, stderr) = train(&job_spec(tmp.path(), &output, "", "every_steps = 0"));
    assert!(stderr.contains("checkpoint.every_steps"), "{stderr}");
    let spec = job_spec(tmp.path(), &output, "", "");
    std::fs::write(
        &spec,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("device = \"cpu\"", "device = \"tpu\""),
    )
    .unwrap();
    let (_, stderr) = train(&spec);
    assert!(
        stderr.contains("train.device 'tpu': expected auto, cpu, cuda or cuda:N"),
        "{stderr}"
    );
    assert_nothing_written(&output);
}

#[test]
fn an_unwritable_store_fails_at_start_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    synth_task(tmp.path());
    let blocker = tmp.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let output = blocker.join("run");
    let (code, stderr) = train(&job_spec(tmp.path(), &output, "", ""));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("not-a-dir/run") && stderr.contains("cannot create the directory"),
        "{stderr}"
    );
}

#[test]
fn an_existing_run_is_not_overwritten_and_a_changed_spec_is_not_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    synth_task(tmp.path());
    let output = tmp.path().join("out");
    let spec = job_spec(tmp.path(), &output, "epochs = 1", "");
    let (code, stderr) = train(&spec);
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = train(&spec);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("already holds run 'test'") && stderr.contains("--resume"),
        "{stderr}"
    );

    let changed = job_spec(tmp.path(), &output, "epochs = 2", "");
    let out = run(&[
        "train",
        "--config",
        changed.to_str().unwrap(),
        "--no-progress",
        "--resume",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("the job spec changed since this run started"),
        "{stderr}"
    );

    // The same spec (and paths) over other data.
    let spec = job_spec(tmp.path(), &output, "epochs = 1", "");
    let train_file = tmp.path().join("data/train.jsonl");
    let data = std::fs::read_to_string(&train_file).unwrap();
    std::fs::write(&train_file, data.replacen("has ", "now has ", 1)).unwrap();
    let out = run(&[
        "train",
        "--config",
        spec.to_str().unwrap(),
        "--no-progress",
        "--resume",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("the train data, tokenizer or model files changed"),
        "{stderr}"
    );
}

#[test]
fn a_broken_base_model_fails_before_the_output_is_claimed() {
    let tmp = tempfile::tempdir().unwrap();
    synth_task(tmp.path());
    let base = tmp.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("model/fixtures/llama");
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(fixture.join(name), base.join(name)).unwrap();
    }
    let weights = std::fs::read(base.join("model.safetensors")).unwrap();
    std::fs::write(
        base.join("model.safetensors"),
        &weights[..weights.len() - 100],
    )
    .unwrap();
    let output = tmp.path().join("out");
    let spec = job_spec(tmp.path(), &output, "", "");
    let original = std::fs::read_to_string(&spec).unwrap();
    let (start, end) = (
        original.find("[model]").unwrap(),
        original.find("[data.train]").unwrap(),
    );
    let with_base = format!(
        "{}[model]\nbase = \"{}\"\n\n{}",
        &original[..start],
        base.display(),
        &original[end..]
    );
    std::fs::write(&spec, with_base).unwrap();
    let (code, stderr) = train(&spec);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("model.safetensors") && stderr.contains("not a usable safetensors"),
        "{stderr}"
    );
    assert_nothing_written(&output);
}
