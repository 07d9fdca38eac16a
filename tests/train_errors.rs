//! Bad input to `premem train`: a clear error naming the thing and where it
//! is, and nothing half-published in the store.

mod common;

use std::path::Path;

use common::{job_spec, run, synth_task, text};

fn train(spec: &Path) -> (i32, String) {
    let out = run(&["train", "--config", spec.to_str().unwrap(), "--no-progress"]);
    (out.status.code().unwrap_or(-1), text(&out.stderr))
}

/// The test job writing to `output`, its model the base directory `base`.
fn spec_with_base(dir: &Path, output: &Path, base: &Path) -> std::path::PathBuf {
    let spec = job_spec(dir, output, "", "");
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
    spec
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
    let spec = spec_with_base(tmp.path(), &output, &base);
    let (code, stderr) = train(&spec);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("model.safetensors") && stderr.contains("not a usable safetensors"),
        "{stderr}"
    );
    assert_nothing_written(&output);
}

/// No published checkpoint (no MANIFEST.json) anywhere under `output`
/// from step `from` on, and finite weights in those before it.
fn assert_nothing_published(output: &Path, from: u64) {
    for manifest in walk(output)
        .into_iter()
        .filter(|p| p.ends_with("MANIFEST.json"))
    {
        let dir = manifest.parent().unwrap();
        let step: u64 = dir
            .to_string_lossy()
            .rsplit("step-")
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(step < from, "published at step {step}: {}", dir.display());
        let weights = dir.join("model.safetensors");
        for (name, t) in tch::Tensor::read_safetensors(&weights).unwrap_or_default() {
            assert!(
                t.isfinite().all().int64_value(&[]) == 1,
                "{name} of step {step}"
            );
        }
    }
}

/// The step an error line "error: step N: ..." names.
fn failed_step(stderr: &str) -> u64 {
    let at = stderr.find("error: step ").expect("an error naming a step") + "error: step ".len();
    stderr[at..].split(':').next().unwrap().parse().unwrap()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok())
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// Issue 18, finding 10: a learning rate that overflows the weights stops
/// the run with an error naming the step, and nothing is published (before:
/// exit 0 and NaN checkpoints).
#[test]
fn a_diverging_run_stops_with_an_error_and_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    synth_task(tmp.path());
    for (name, checkpoint) in [("every", "every_steps = 1"), ("end", "")] {
        let output = tmp.path().join(name);
        let spec = job_spec(tmp.path(), &output, "", checkpoint);
        let text = std::fs::read_to_string(&spec).unwrap();
        std::fs::write(&spec, text.replace("lr = 3e-3", "lr = 1e300")).unwrap();
        let (code, stderr) = train(&spec);
        assert_eq!(code, 1, "{stderr}");
        // Checkpointing every step, the first overflowed weights are
        // refused; else the loss they give.
        let named = stderr.contains(": weight") && stderr.contains("non-finite values")
            || stderr.contains(": the loss is NaN");
        assert!(named && stderr.contains("train.lr"), "{name}: {stderr}");
        assert_nothing_published(&output, failed_step(&stderr));
    }
}

/// Finding 10: a base model with a NaN tensor stops at the first step.
#[test]
fn a_base_model_with_a_nan_weight_stops_at_step_one() {
    let tmp = tempfile::tempdir().unwrap();
    synth_task(tmp.path());
    let base = tmp.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("model/fixtures/llama");
    for name in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture.join(name), base.join(name)).unwrap();
    }
    let mut tensors = tch::Tensor::read_safetensors(fixture.join("model.safetensors")).unwrap();
    let (_, first) = tensors
        .iter_mut()
        .find(|(name, _)| name.contains("layers.0.mlp"))
        .unwrap();
    let _ = first.get(0).get(0).fill_(f64::NAN);
    tch::Tensor::write_safetensors(&tensors, base.join("model.safetensors")).unwrap();
    let output = tmp.path().join("out");
    let spec = spec_with_base(tmp.path(), &output, &base);
    let (code, stderr) = train(&spec);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("step 1: the loss is NaN"), "{stderr}");
    assert_nothing_published(&output, 1);
}

/// Finding 10: an in-memory output would be lost at exit: refused at start.
#[test]
fn a_memory_output_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    synth_task(tmp.path());
    let spec = job_spec(tmp.path(), Path::new("memory:///run"), "", "");
    let (code, stderr) = train(&spec);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("memory:///run") && stderr.contains("keeps nothing past the process"),
        "{stderr}"
    );
}

/// Finding 13: a max_length past the model's context is refused before
/// training (before: trained, and the evaluators then refused the examples).
#[test]
fn a_max_length_past_the_models_context_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    synth_task(tmp.path());
    let output = tmp.path().join("out");
    let spec = job_spec(tmp.path(), &output, "", "");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replace("max_length = 256", "max_length = 513")).unwrap();
    let (code, stderr) = train(&spec);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("train.max_length 513 is above the model's context")
            && stderr.contains("tiny.json has max_position_embeddings 512"),
        "{stderr}"
    );
    assert_nothing_written(&output);
}
