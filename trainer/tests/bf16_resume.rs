//! bf16 weights with fp32 master weights (the CUDA default), run on the CPU:
//! the model learns, and a run stopped early and resumed ends with the same
//! weights as one never stopped (the fp32 master is saved and restored).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use premem_core::spec::JobSpec;
use premem_core::testing;
use premem_trainer::{SingleProcess, TrainOptions, train};

fn setup(dir: &Path) {
    testing::write_synth_inputs(dir, 32, 0, 1, 300);
    let tied = serde_json::json!({"tie_word_embeddings": true});
    testing::write_tiny_config(&dir.join("tiny.json"), "qwen2", 300, tied);
}

fn spec(dir: &Path, output: &str) -> JobSpec {
    let text = format!(
        r#"
[run]
name = "bf16"
output = "{out}"
[model]
config = "{dir}/tiny.json"
tokenizer = "{dir}/tokenizer.json"
[data.train]
path = "{dir}/train.jsonl"
format = "gsm8k"
[train]
optimizer = "adam"
weight_decay = 0.01
lr = 3e-3
schedule = {{ type = "cosine", warmup_fraction = 0.1 }}
batch_size = 8
micro_batch_size = 4
epochs = 6
precision = "bf16"
device = "cpu"
[checkpoint]
every_epoch = false
every_steps = 6
"#,
        out = dir.join(output).display(),
        dir = dir.display()
    );
    JobSpec::from_toml(&text, Path::new("bf16.toml")).unwrap()
}

fn final_weights(dir: &Path, output: &str, step: u64) -> Vec<u8> {
    std::fs::read(
        dir.join(output)
            .join(format!("checkpoints/step-{step:08}/model.safetensors")),
    )
    .unwrap()
}

#[test]
fn bf16_with_fp32_master_learns_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());

    let full = train(
        &spec(tmp.path(), "full"),
        &TrainOptions::default(),
        &mut SingleProcess,
    )
    .unwrap();
    assert_eq!(full.steps, 24);
    assert!(
        std::fs::read_to_string(
            tmp.path()
                .join("full/checkpoints/step-00000024/config.json")
        )
        .unwrap()
        .contains("\"dtype\": \"bfloat16\"")
    );

    // Stopped (as by SIGTERM) after its first step: checkpoint at step 1.
    let stop = Arc::new(AtomicBool::new(true));
    let options = TrainOptions {
        stop: Some(stop),
        ..Default::default()
    };
    let stopped = train(&spec(tmp.path(), "stopped"), &options, &mut SingleProcess).unwrap();
    assert!(stopped.interrupted);
    assert_eq!(stopped.steps, 1);
    let resume = TrainOptions {
        resume: true,
        ..Default::default()
    };
    let resumed = train(&spec(tmp.path(), "stopped"), &resume, &mut SingleProcess).unwrap();
    assert_eq!((resumed.resumed_from, resumed.steps), (Some(1), 24));
    assert!(final_weights(tmp.path(), "full", 24) == final_weights(tmp.path(), "stopped", 24));
    let (first, last) = (
        first_loss(&tmp.path().join("full")),
        resumed.final_loss.unwrap(),
    );
    assert!(last < 0.85 * first, "loss {first} -> {last}");
}

fn first_loss(run: &Path) -> f64 {
    let text = std::fs::read_to_string(run.join("metrics/step-00000006.jsonl")).unwrap();
    let first: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["step"] == 1 && v.get("loss").is_some())
        .unwrap();
    first["loss"].as_f64().unwrap()
}
