//! Exact resume: a run killed (SIGKILL, or stopped by SIGTERM) after a
//! checkpoint and resumed ends bit-identical to the same run never
//! interrupted (CPU, fp32).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{job_spec, run, synth_task, text};

const STEPS: u64 = 320; // 64 examples / batch 8 = 8 steps per epoch, 40 epochs
const EPOCHS: &str = "epochs = 40";
const CHECKPOINTS: &str = "every_epoch = false\nevery_steps = 20\nkeep_resume_states = 2";

fn published(output: &Path, area: &str) -> Vec<u64> {
    let mut steps: Vec<u64> = std::fs::read_dir(output.join(area))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("MANIFEST.json").exists())
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("step-")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    steps.sort();
    steps
}

fn final_weights(output: &Path) -> Vec<u8> {
    std::fs::read(output.join(format!("checkpoints/step-{STEPS:08}/model.safetensors"))).unwrap()
}

/// (step, loss, grad_norm) of every metrics record, in step order.
fn losses(output: &Path) -> Vec<(u64, String, String)> {
    let mut rows = vec![];
    let mut files: Vec<_> = std::fs::read_dir(output.join("metrics"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v.get("loss").is_some() {
                rows.push((
                    v["step"].as_u64().unwrap(),
                    v["loss"].to_string(),
                    v["grad_norm"].to_string(),
                ));
            }
        }
    }
    rows
}

/// Starts a training run and waits until a resume state at `min_step` or
/// later is published.
fn start_and_wait(spec: &Path, output: &Path, min_step: u64) -> std::process::Child {
    let mut child = common::premem()
        .args(["train", "--config", spec.to_str().unwrap(), "--no-progress"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while published(output, "resume")
        .last()
        .is_none_or(|s| *s < min_step)
    {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before a checkpoint at step {min_step}");
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint at step {min_step} within 120 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

#[test]
fn killed_or_stopped_runs_resume_to_bit_identical_weights() {
    let tmp = tempfile::tempdir().unwrap();
    synth_task(tmp.path());

    let a = tmp.path().join("a");
    let spec_a = job_spec(tmp.path(), &a, EPOCHS, CHECKPOINTS);
    let out = run(&[
        "train",
        "--config",
        spec_a.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(published(&a, "checkpoints").len(), (STEPS / 20) as usize);
    assert_eq!(
        published(&a, "resume"),
        vec![STEPS - 20, STEPS],
        "only the last 2 resume states are kept"
    );

    // SIGKILL after the checkpoint at step 40 (or later) appeared.
    let b = tmp.path().join("b");
    let spec_b = job_spec(tmp.path(), &b, EPOCHS, CHECKPOINTS);
    let mut child = start_and_wait(&spec_b, &b, 40);
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = *published(&b, "resume").last().unwrap();
    assert!(killed_at < STEPS, "the run was not interrupted");
    let out = run(&[
        "train",
        "--config",
        spec_b.to_str().unwrap(),
        "--no-progress",
        "--resume",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("resumed from step {killed_at}")),
        "{}",
        text(&out.stdout)
    );
    assert!(
        final_weights(&a) == final_weights(&b),
        "weights differ after SIGKILL + resume"
    );
    // The resumed run rebuilt its step-0 weights (checked against their
    // digest): the same baseline measurements, distance from init included.
    let baselines = |output: &Path| -> serde_json::Value {
        let path = output.join(format!("checkpoints/step-{STEPS:08}/premem-baselines.json"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let (ba, bb) = (baselines(&a), baselines(&b));
    assert!(ba["distance_from_init"].as_f64().unwrap() > 0.0, "{ba}");
    assert_eq!(ba, bb, "baseline measurements differ after resume");
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la.len(), STEPS as usize);
    assert_eq!(la, lb, "per-step loss and grad norm differ");
    let loss = |i: usize| la[i].1.parse::<f64>().unwrap();
    assert!(
        loss(la.len() - 1) < 0.5 * loss(0),
        "the model did not learn: loss {} -> {}",
        loss(0),
        loss(la.len() - 1)
    );

    // SIGTERM: the run finishes its step, checkpoints, and exits.
    let c = tmp.path().join("c");
    let spec_c = job_spec(tmp.path(), &c, EPOCHS, CHECKPOINTS);
    let child = start_and_wait(&spec_c, &c, 20);
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("interrupted at step") && stderr.contains("--resume"),
        "{stderr}"
    );
    let stopped_at = *published(&c, "resume").last().unwrap();
    assert!(stopped_at < STEPS);
    let out = run(&[
        "train",
        "--config",
        spec_c.to_str().unwrap(),
        "--no-progress",
        "--resume",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        final_weights(&a) == final_weights(&c),
        "weights differ after SIGTERM + resume"
    );
}

/// Issue 18, finding 11: while one `premem train` trains an output, another
/// on the same output is refused, naming the holder (before: both ran); the
/// lease is released at the end.
#[test]
fn a_second_trainer_of_one_output_is_refused_while_the_first_trains() {
    let tmp = tempfile::tempdir().unwrap();
    synth_task(tmp.path());
    let output = tmp.path().join("shared");
    let spec = job_spec(tmp.path(), &output, "epochs = 40", "every_epoch = false");
    let mut first = common::premem()
        .args(["train", "--config", spec.to_str().unwrap(), "--no-progress"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lease = output.join("train.lease");
    let started = std::time::Instant::now();
    while !lease.exists() {
        assert!(
            started.elapsed().as_secs() < 60,
            "the first never took the lease"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = common::run(&[
        "train",
        "--config",
        spec.to_str().unwrap(),
        "--resume",
        "--no-progress",
    ]);
    let stderr = text(&second.stderr);
    assert!(!second.status.success(), "{stderr}");
    assert!(
        stderr.contains("the run output is being trained") && stderr.contains("is held by"),
        "{stderr}"
    );
    // Stopped (a checkpoint, then exit 1 "interrupted"), the first gives
    // the lease up.
    // SAFETY: a signal to this test's own child.
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    first.wait().unwrap();
    assert!(!lease.exists(), "the lease outlived the run");
}

/// `checkpoint.steps`: the run publishes a checkpoint at each listed step
/// and at its last, nowhere else; a step past the end, or a list out of
/// order, is refused before anything is written.
#[test]
fn listed_checkpoint_steps_are_the_ones_published() {
    let tmp = tempfile::tempdir().unwrap();
    synth_task(tmp.path());
    let output = tmp.path().join("listed");
    // 64 examples / batch 8 = 8 steps per epoch: 3 epochs are 24 steps.
    let spec = job_spec(
        tmp.path(),
        &output,
        "epochs = 3",
        "every_epoch = false\nsteps = [2, 5, 13]",
    );
    let out = run(&["train", "--config", spec.to_str().unwrap(), "--no-progress"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(published(&output, "checkpoints"), [2, 5, 13, 24]);

    let past = tmp.path().join("past");
    let spec = job_spec(tmp.path(), &past, "epochs = 3", "steps = [2, 30]");
    let out = run(&["train", "--config", spec.to_str().unwrap(), "--no-progress"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("checkpoint.steps lists step 30, but the run has 24 steps"),
        "{stderr}"
    );
    assert!(published(&past, "checkpoints").is_empty());

    let unordered = tmp.path().join("unordered");
    let spec = job_spec(tmp.path(), &unordered, "epochs = 3", "steps = [5, 3]");
    let out = run(&["train", "--config", spec.to_str().unwrap(), "--no-progress"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("checkpoint.steps [5, 3]: steps must be positive and increasing"),
        "{stderr}"
    );
}
