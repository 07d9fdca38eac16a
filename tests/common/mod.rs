//! Helpers for end-to-end tests: the premem binary, a tiny synthetic task and
//! job specs in a temporary directory.
#![allow(dead_code)]

pub mod cluster;
pub mod live_run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use premem_core::data::results::{ExampleResult, read_parquet};

pub fn premem() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_premem"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "warn");
    cmd
}

pub fn run(args: &[&str]) -> Output {
    premem().args(args).output().expect("run premem")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A tiny Llama for the synthetic tokenizer (vocab <= 320).
pub const TINY_CONFIG: &str = r#"{
  "model_type": "llama", "vocab_size": 320, "hidden_size": 32, "intermediate_size": 64,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
  "eos_token_id": 1, "pad_token_id": 0
}"#;

/// Synthetic data (64 train examples) and the tiny config in `dir`.
pub fn synth_task(dir: &Path) -> PathBuf {
    synth_data(
        dir,
        &["--train", "64", "--test", "8", "--pool-per-example", "1"],
    )
}

/// `premem data synth` into `dir/data` (seed 3, a vocabulary the tiny
/// config fits) with `args` added, and the tiny config in `dir/tiny.json`.
pub fn synth_data(dir: &Path, args: &[&str]) -> PathBuf {
    let data = dir.join("data");
    let mut all = vec![
        "data",
        "synth",
        "--out",
        data.to_str().unwrap(),
        "--vocab-size",
        "320",
        "--seed",
        "3",
    ];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(out.status.success(), "synth failed: {}", text(&out.stderr));
    std::fs::write(dir.join("tiny.json"), TINY_CONFIG).unwrap();
    data
}

/// Every file under `dir` (none if it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Modification times of every file under `dir`.
pub fn file_times(dir: &Path) -> BTreeMap<PathBuf, SystemTime> {
    files_under(dir)
        .into_iter()
        .map(|f| {
            let time = f.metadata().unwrap().modified().unwrap();
            (f, time)
        })
        .collect()
}

/// A job spec over `synth_task(dir)` writing to `output`; `extra` is
/// appended to the [train] table.
pub fn job_spec(dir: &Path, output: &Path, train_extra: &str, checkpoint: &str) -> PathBuf {
    let data = dir.join("data");
    let spec = format!(
        r#"[run]
name = "test"
output = "{output}"
seed = 5

[model]
config = "{config}"
tokenizer = "{tokenizer}"
init_seed = 2

[data.train]
path = "{train}"
format = "gsm8k"

[train]
lr = 3e-3
schedule = {{ type = "linear", warmup_steps = 10 }}
batch_size = 8
micro_batch_size = 4
max_grad_norm = 1.0
max_length = 256
precision = "fp32"
device = "cpu"
{train_extra}

[checkpoint]
{checkpoint}
"#,
        output = output.display(),
        config = dir.join("tiny.json").display(),
        tokenizer = data.join("tokenizer.json").display(),
        train = data.join("train.jsonl").display(),
    );
    let path = dir.join(format!(
        "job-{}.toml",
        output.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&path, spec).unwrap();
    path
}

/// A job spec named `name` over the synthetic task (with its test split),
/// `tail` appended after the [checkpoint] table's settings.
pub fn spec(dir: &Path, name: &str, train_extra: &str, tail: &str) -> PathBuf {
    let output = dir.join(name);
    let path = job_spec(dir, &output, train_extra, tail);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("name = \"test\"", &format!("name = \"{name}\""))
        .replace(
            "[train]\n",
            &format!(
                "[data.test]\npath = \"{}\"\nformat = \"gsm8k\"\n\n[train]\n",
                dir.join("data/test.jsonl").display()
            ),
        );
    std::fs::write(&path, text).unwrap();
    path
}

/// Whether the run in `run` published its checkpoint of `step`.
pub fn published(run: &Path, step: u64) -> bool {
    run.join(format!("checkpoints/step-{step:08}/MANIFEST.json"))
        .exists()
}

/// Every result row of a run, keyed by (step, split, id, preamble); panics
/// on a row that appears twice.
pub fn all_rows(run: &Path) -> BTreeMap<(u64, String, String, String), ExampleResult> {
    let mut rows = BTreeMap::new();
    let results = run.join("results");
    for step_dir in std::fs::read_dir(&results).unwrap() {
        let step_dir = step_dir.unwrap().path();
        for file in std::fs::read_dir(&step_dir).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_none_or(|e| e != "parquet") {
                continue;
            }
            for row in read_parquet(&file).unwrap() {
                let key = (
                    row.checkpoint_step,
                    row.split.clone(),
                    row.id.clone(),
                    row.preamble.clone(),
                );
                assert!(
                    rows.insert(key.clone(), row).is_none(),
                    "{key:?} appears twice (second time in {})",
                    file.display()
                );
            }
        }
    }
    rows
}
