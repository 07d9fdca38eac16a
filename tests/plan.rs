//! `premem plan` and the refusal of jobs that do not fit, as a user runs
//! them: the paper's GSM8K job on Llama-3-8B (examples/), sized from the
//! model's config.json (examples/configs/), on 8 GPUs of 80 GiB.

use std::path::Path;
use std::process::{Command, Output};

const GIB: f64 = (1u64 << 30) as f64;
/// Llama-3-8B's parameter count as Meta publishes it (8.03 B).
const LLAMA3_8B_PARAMETERS: f64 = 8.03e9;

/// Runs premem in `dir`, where `models/llama-3-8b/config.json` is the real
/// model's config (the example's `model.base`; no weights needed).
fn premem_in(dir: &Path, args: &[&str]) -> Output {
    let model = dir.join("models/llama-3-8b");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::copy(
        repo("examples/configs/llama-3-8b.json"),
        model.join("config.json"),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_premem"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run premem")
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The three GiB figures of the row labelled `label` (none, zero1, zero2).
fn row(out: &str, label: &str) -> Vec<f64> {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no row '{label}' in:\n{out}"));
    line.trim_start()[label.len()..]
        .split_whitespace()
        .map(|v| v.trim_end_matches('%').parse().unwrap())
        .collect()
}

#[test]
fn plan_of_llama3_8b_on_eight_80_gib_gpus_lands_on_the_zero_formulas_and_picks_zero2() {
    let dir = tempfile::tempdir().unwrap();
    let job = repo("examples/gsm8k-llama3-8b.toml");
    let out = premem_in(
        dir.path(),
        &["plan", &job, "--world-size", "8", "--gpu-memory", "80GiB"],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, text(&out.stderr));
    assert!(stdout.contains("8.030 B parameters"), "{stdout}");
    // The ZeRO paper (Rajbhandari et al. 2020, figure 1): 16Ψ, 4Ψ + 12Ψ/N,
    // 2Ψ + 14Ψ/N bytes per GPU, here for Ψ = 8.03 B and N = 8.
    let psi = LLAMA3_8B_PARAMETERS;
    let paper = [
        16.0 * psi,
        4.0 * psi + 12.0 * psi / 8.0,
        2.0 * psi + 14.0 * psi / 8.0,
    ]
    .map(|b| b / GIB);
    let within = |got: f64, want: f64, tolerance: f64| (got / want - 1.0).abs() <= tolerance;
    let formula = row(&stdout, "ZeRO formula");
    let ours = row(&stdout, "premem, the paper's terms");
    for i in 0..3 {
        assert!(within(formula[i], paper[i], 0.05), "{stdout}");
    }
    assert!((0..3).all(|i| within(ours[i], paper[i], 0.05)), "{stdout}");
    // premem's own layout: 20 bytes a parameter unsharded (bf16 weights and
    // .grad, fp32 gradient, master, two moments).
    let states = row(&stdout, "model states");
    assert!(within(states[0], 20.0 * psi / GIB, 0.05), "{stdout}");
    assert!(
        stdout.contains("fits in 72.00 GiB                         no        no       yes"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fits: train.sharding = \"zero2\""),
        "{stdout}"
    );
}

#[test]
fn plan_refuses_one_gpu_and_no_sharding_naming_the_memory_and_what_would_fit() {
    let dir = tempfile::tempdir().unwrap();
    let job = repo("examples/gsm8k-llama3-8b.toml");
    let one = premem_in(
        dir.path(),
        &["plan", &job, "--world-size", "1", "--gpu-memory", "80GiB"],
    );
    let err = text(&one.stderr);
    assert!(!one.status.success(), "{err}");
    for part in [
        "job 'gsm8k-llama3-8b-lr2e-5' does not fit in 80.00 GiB per GPU (72.00 GiB usable",
        "does not fit",
        "settings that would fit:",
        "cluster.trainers = 4 (sharding \"zero2\")",
    ] {
        assert!(err.contains(part), "'{part}' missing from:\n{err}");
    }
    let none = premem_in(
        dir.path(),
        &[
            "plan",
            &job,
            "--world-size",
            "8",
            "--gpu-memory",
            "80GiB",
            "--sharding",
            "none",
        ],
    );
    let err = text(&none.stderr);
    assert!(!none.status.success(), "{err}");
    assert!(
        err.contains("sharding: none (as set) needs 152.33 GiB per rank"),
        "{err}"
    );
    assert!(
        err.contains("train.sharding = \"zero2\" (or \"auto\")"),
        "{err}"
    );
    // A world size that does not divide the batch is the spec's own error.
    let odd = premem_in(dir.path(), &["plan", &job, "--world-size", "3"]);
    assert!(text(&odd.stderr).contains("must be a multiple of cluster.trainers 3"));
}

#[test]
fn train_refuses_a_job_that_does_not_fit_before_loading_anything() {
    let dir = tempfile::tempdir().unwrap();
    // The example as `premem train` runs it: one process, one rank. Its
    // weights and data are absent: the refusal comes before they are read.
    let job = repo("examples/gsm8k-llama3-8b.toml");
    let out = premem_in(dir.path(), &["train", "--config", &job]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for part in [
        "job 'gsm8k-llama3-8b-lr2e-5' does not fit in 80.00 GiB per GPU",
        "1 trainer rank(s)",
        "cluster.trainers = 4",
    ] {
        assert!(err.contains(part), "'{part}' missing from:\n{err}");
    }
    assert!(
        !err.contains("safetensors") && !err.contains("train.jsonl"),
        "{err}"
    );
}

/// Every paper example, jobs and appendix-A sweeps, fits 8 GPUs of 80 GiB
/// by the plan (`premem plan`, `premem sweep --dry-run`), sized from the
/// real models' config.json files; a sweep whose evaluators would not fit
/// is refused by the same check.
#[test]
fn the_paper_examples_fit_eight_80_gib_gpus() {
    let dir = tempfile::tempdir().unwrap();
    for (model, config) in [
        ("llama-3-8b", "llama-3-8b.json"),
        ("gemma-2-9b", "gemma-2-9b.json"),
    ] {
        let home = dir.path().join("models").join(model);
        std::fs::create_dir_all(&home).unwrap();
        std::fs::copy(
            repo(&format!("examples/configs/{config}")),
            home.join("config.json"),
        )
        .unwrap();
    }
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_premem"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run premem");
        (
            out.status.success(),
            format!("{}{}", text(&out.stdout), text(&out.stderr)),
        )
    };
    for job in [
        "examples/gsm8k-llama3-8b.toml",
        "examples/math-gemma2-9b.toml",
    ] {
        let (ok, out) = run(&[
            "plan",
            &repo(job),
            "--world-size",
            "8",
            "--gpu-memory",
            "80GiB",
        ]);
        assert!(
            ok && out.contains("fits: train.sharding = \"zero2\""),
            "{job}:\n{out}"
        );
    }
    for sweep in [
        "gsm8k-llama3-8b",
        "math-llama3-8b",
        "gsm8k-gemma2-9b",
        "math-gemma2-9b",
    ] {
        let (ok, out) = run(&[
            "sweep",
            "--dry-run",
            &repo(&format!("examples/sweeps/{sweep}.toml")),
        ]);
        assert!(ok, "{sweep}:\n{out}");
    }
    let text = std::fs::read_to_string(repo("examples/sweeps/math-gemma2-9b.toml")).unwrap();
    let greedy = text.replace("batch_size = 12 ", "batch_size = 40 ");
    assert_ne!(greedy, text);
    let file = dir.path().join("greedy.toml");
    std::fs::write(&file, greedy).unwrap();
    let (ok, out) = run(&["sweep", "--dry-run", file.to_str().unwrap()]);
    assert!(!ok && out.contains("does not fit"), "{out}");
}
