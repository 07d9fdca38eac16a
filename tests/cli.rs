//! The premem binary as a user runs it.

use std::path::PathBuf;
use std::process::{Command, Output};

fn premem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_premem"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run premem")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn doctor_reports_libtorch_cuda_and_nccl() {
    let out = premem(&["doctor"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("libtorch: 2.11.0"), "{stdout}");
    assert!(stdout.contains("libtorch_cuda:"), "{stdout}");
    assert!(stdout.contains("cuda: available="), "{stdout}");
    assert!(stdout.contains("nccl:"), "{stdout}");
    #[cfg(target_env = "gnu")]
    assert!(
        stdout.contains("host allocator: glibc keeps freed buffers under 1024 MiB"),
        "{stdout}"
    );
}

#[test]
fn bench_train_stages_account_for_the_step() {
    let out = premem(&[
        "bench",
        "train",
        "--config",
        "benches/llama-tiny.json",
        "--batch-size",
        "4",
        "--micro-batch-size",
        "2",
        "--seq-len",
        "32",
        "--warmup-steps",
        "1",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--stages",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    let stages = result["stages"].as_object().expect("stages");
    let names: Vec<&str> = stages.keys().map(String::as_str).collect();
    let mut expected = premem_trainer::step::STAGES.to_vec();
    expected.sort();
    assert_eq!(names, expected);
    let sum: f64 = stages.values().map(|v| v.as_f64().unwrap()).sum();
    let step = result["seconds_per_step"].as_f64().unwrap();
    // The stages cover the step but for collating the batches.
    assert!(
        sum <= step && sum > 0.8 * step,
        "stages {sum} s of a {step} s step"
    );
    for stage in ["forward", "loss", "backward", "clip", "update"] {
        assert!(stages[stage].as_f64().unwrap() > 0.0, "{stage}: {stdout}");
    }
    assert_eq!(result["tokens_per_step"], 4 * 32);
}

#[test]
fn bench_train_shardings_agree_at_one_rank_and_report_the_plan() {
    let run = |sharding: &str| -> serde_json::Value {
        let out = premem(&[
            "bench",
            "train",
            "--config",
            "benches/llama-tiny.json",
            "--batch-size",
            "2",
            "--micro-batch-size",
            "1",
            "--seq-len",
            "16",
            "--warmup-steps",
            "0",
            "--steps",
            "2",
            "--device",
            "cpu",
            "--sharding",
            sharding,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_str(text(&out.stdout).trim()).expect("one JSON line")
    };
    let none = run("none");
    let loss = none["final_loss"].as_f64().unwrap();
    assert!(loss > 0.0);
    // 4.2M fp32 parameters: weights, .grad bucket and two moments at least.
    let planned = none["planned_rank_bytes"].as_u64().unwrap();
    assert!(planned >= 16 * 4_196_608, "{planned}");
    for sharding in ["zero1", "zero2"] {
        let other = run(sharding);
        let got = other["final_loss"].as_f64().unwrap();
        assert!(
            (got - loss).abs() <= 1e-6 * loss,
            "{sharding}: {got} vs {loss}"
        );
    }
}

#[test]
fn generate_prints_one_completion_per_prompt_and_sample() {
    let out = premem(&[
        "generate",
        "--model",
        "model/fixtures/qwen2",
        "--prompt",
        "Natalia sold",
        "--prompt",
        "How many?",
        "--samples",
        "2",
        "--max-new-tokens",
        "5",
        "--temperature",
        "0.8",
        "--seed",
        "3",
        "--device",
        "cpu",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for (p, prompt) in [(0, "Natalia sold"), (1, "How many?")] {
        for s in 0..2 {
            assert!(
                stdout.contains(&format!("[prompt {p} sample {s}] {prompt}")),
                "{stdout}"
            );
        }
    }
    assert!(text(&out.stderr).contains("tokens/s"));
}

#[test]
fn bad_model_directory_is_a_clear_error_not_a_panic() {
    let missing = PathBuf::from("model/fixtures/no-such-model");
    let out = premem(&[
        "generate",
        "--model",
        missing.to_str().unwrap(),
        "--prompt",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("no-such-model/config.json"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = premem(&[
        "generate",
        "--model",
        "model/fixtures/llama",
        "--prompt",
        "x",
        "--device",
        "tpu",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--device 'tpu'"));
}

#[test]
fn model_convert_and_random_write_loadable_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let bf16 = tmp.path().join("bf16");
    let out = premem(&[
        "model",
        "convert",
        "--model",
        "model/fixtures/gemma2",
        "--out",
        bf16.to_str().unwrap(),
        "--dtype",
        "bf16",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bf16.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["dtype"], "bfloat16");
    assert!(bf16.join("tokenizer.json").is_file());
    // Half the bytes of the fp32 original (same tensors, 2 bytes each).
    let size = |p: PathBuf| std::fs::metadata(p).unwrap().len();
    let (orig, half) = (
        size("model/fixtures/gemma2/model.safetensors".into()),
        size(bf16.join("model.safetensors")),
    );
    assert!(half < orig * 6 / 10, "{half} vs {orig}");
    let out = premem(&[
        "generate",
        "--model",
        bf16.to_str().unwrap(),
        "--prompt",
        "7 + 5",
        "--device",
        "cpu",
        "--dtype",
        "bf16",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("BFloat16"));

    let random = tmp.path().join("random");
    let out = premem(&[
        "model",
        "random",
        "--config",
        "model/fixtures/mistral/config.json",
        "--out",
        random.to_str().unwrap(),
        "--seed",
        "5",
        "--max-shard-bytes",
        "200000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(random.join("model.safetensors.index.json").is_file());
    let out = premem(&[
        "model",
        "random",
        "--config",
        "model/fixtures/nope.json",
        "--out",
        random.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("nope.json"));
}

/// `data synth --group-weights`: one weight per number of groups, refused
/// before anything is written; a valid mix writes the task.
#[test]
fn data_synth_group_weights_are_checked_at_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("task");
    let synth = |weights: &str| {
        premem(&[
            "data",
            "synth",
            "--out",
            out.to_str().unwrap(),
            "--train",
            "20",
            "--test",
            "5",
            "--groups",
            "1-3",
            "--group-weights",
            weights,
        ])
    };
    let bad = synth("6,3");
    assert!(!bad.status.success());
    let err = text(&bad.stderr);
    assert!(
        err.contains("--group-weights: 2 group weight(s) for 3"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written on bad input");
    let err = text(&synth("1,-1,1").stderr);
    assert!(err.contains(">= 0"), "{err}");
    let ok = synth("0,0,1");
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let train = std::fs::read_to_string(out.join("train.jsonl")).unwrap();
    // Weight only on 3 groups: every trace has three multiplications.
    assert!(
        train.lines().all(|l| l.matches('*').count() == 3),
        "{train}"
    );
}
