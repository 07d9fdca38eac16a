//! The distributed runtime end to end, with real processes on loopback: a
//! coordinator, trainer ranks on the TCP ring, evaluators; each of them
//! killed with SIGKILL at a bad moment.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::Cluster;
use common::{all_rows, file_times, published, run, spec, synth_task, text};

/// Evaluation settings small enough for a debug build.
const EVAL: &str =
    "[eval]\nlimit = 6\nsamples = 2\nmax_new_tokens = 12\ntask_examples = 2\nbatch_size = 2\n";

/// The (step, split) → example ids of a finished evaluation: each checkpoint
/// has the first 6 train and the first 6 test examples, once each.
fn assert_complete(run: &Path, steps: &[u64]) {
    let rows = all_rows(run);
    for &step in steps {
        for split in ["train", "test"] {
            let ids: Vec<&String> = rows
                .keys()
                .filter(|(s, sp, _, _)| *s == step && sp == split)
                .map(|(_, _, id, _)| id)
                .collect();
            assert_eq!(ids.len(), 6, "step {step} {split}: {ids:?}");
        }
    }
    assert_eq!(rows.len(), steps.len() * 12);
}

#[test]
fn a_killed_trainer_rank_rejoins_and_the_run_ends_as_if_undisturbed() {
    killed_rank_ends_as_if_undisturbed("epochs = 6", "None");
}

/// As above with the optimizer state and gradients sharded: the state the
/// killed rank held only its range of is gathered into the checkpoint.
#[test]
fn a_killed_zero2_rank_rejoins_and_the_run_ends_as_if_undisturbed() {
    killed_rank_ends_as_if_undisturbed("epochs = 6\nsharding = \"zero2\"", "Zero2");
}

/// Two ranks train undisturbed, then again with rank 1 SIGKILLed after the
/// first checkpoint and restarted: the final weights are the same bytes.
/// The ranks log that they train with `sharding`.
fn killed_rank_ends_as_if_undisturbed(train_extra: &str, sharding: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_task(dir);
    let tail = "every_steps = 8\nbaselines = false\n\n[eval]\nenabled = false\n\n[cluster]\ntrainers = 2\n";
    let calm = spec(dir, "calm", train_extra, tail);
    let hit = spec(dir, "hit", train_extra, tail);
    let mut cluster = Cluster::start(dir);

    cluster.submit(&calm);
    cluster.start_trainer("calm", 0);
    cluster.start_trainer("calm", 1);
    cluster.wait_success("trainer-0", Duration::from_secs(300));
    cluster.wait_success("trainer-1", Duration::from_secs(60));
    assert!(published(&dir.join("calm"), 48));

    cluster.submit(&hit);
    cluster.start_trainer("hit", 0);
    cluster.start_trainer("hit", 1);
    let run = dir.join("hit");
    cluster.wait_for("the first checkpoint", || published(&run, 8));
    std::thread::sleep(Duration::from_millis(100));
    cluster.kill("trainer-1");
    assert!(
        !published(&run, 48),
        "training ended before the kill; the test needs a longer run"
    );
    std::thread::sleep(Duration::from_millis(500));
    cluster.start_trainer("hit", 1);
    cluster.wait_success("trainer-0", Duration::from_secs(300));
    cluster.wait_success("trainer-1", Duration::from_secs(60));
    assert!(
        cluster.log_text("trainer-0").contains("regroup"),
        "rank 0 never regrouped:\n{}",
        cluster.log_text("trainer-0")
    );
    let log = cluster.log_text("trainer-1");
    assert!(
        log.lines()
            .any(|l| l.contains("optimizer sharding") && l.contains(sharding)),
        "rank 1 did not train with {sharding}:\n{log}"
    );
    let status = cluster.status("hit");
    let generation: u64 = status
        .split("(generation ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("no generation in {status}"));
    assert!(generation >= 2, "the group never regrouped: {status}");

    let weights = |run: &str| {
        std::fs::read(
            dir.join(run)
                .join("checkpoints/step-00000048/model.safetensors"),
        )
        .unwrap()
    };
    assert!(
        weights("calm") == weights("hit"),
        "final weights differ from the undisturbed run"
    );
}

/// Starts evaluators and SIGKILLs each as soon as it holds a lease, until
/// one dies holding a task (its lease then has to expire).
/// Starts an evaluator that holds its first leased task (it waits before
/// evaluating), waits until the coordinator shows the lease, and SIGKILLs it.
fn kill_an_evaluator_mid_task(cluster: &mut Cluster, job: &str) {
    cluster.start_evaluator_with("doomed", &["--debug-hold-task", "600"]);
    cluster.wait_for("a lease", || cluster.status(job).contains(" 1 leased"));
    cluster.kill("doomed");
    assert!(
        cluster.status(job).contains(" 1 leased"),
        "{}",
        cluster.status(job)
    );
}

#[test]
fn a_killed_evaluator_loses_no_task_and_duplicates_none() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_task(dir);
    let job = spec(
        dir,
        "evals",
        "epochs = 2",
        &format!("every_steps = 8\nbaselines = false\n\n{EVAL}"),
    );
    let mut cluster = Cluster::start(dir);
    cluster.submit(&job);
    cluster.start_trainer("evals", 0);
    cluster.wait_success("trainer-0", Duration::from_secs(300));
    kill_an_evaluator_mid_task(&mut cluster, "evals");
    cluster.start_evaluator("survivor");
    let status = cluster.wait_done("evals");
    assert_complete(&dir.join("evals"), &[8, 16]);
    assert!(status.contains("12 done"), "{status}");
}

#[test]
fn a_restarted_coordinator_finishes_the_job_with_no_result_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_task(dir);
    let job = spec(
        dir,
        "restart",
        "epochs = 2",
        &format!("every_steps = 8\nbaselines = false\n\n{EVAL}"),
    );
    let mut cluster = Cluster::start(dir);
    cluster.submit(&job);
    cluster.start_trainer("restart", 0);
    cluster.start_evaluator("e");
    let run = dir.join("restart");
    let results = |run: &Path| {
        std::fs::read_dir(run.join("results"))
            .map(|d| {
                d.flat_map(|s| std::fs::read_dir(s.unwrap().path()).unwrap())
                    .count()
            })
            .unwrap_or(0)
    };
    cluster.wait_for("a first result", || results(&run) > 0);
    cluster.kill_coordinator();
    std::thread::sleep(Duration::from_millis(1500));
    cluster.start_coordinator();
    let status = cluster.wait_done("restart");
    assert!(
        cluster.log_text("coordinator").contains("job restored"),
        "{}",
        cluster.log_text("coordinator")
    );
    cluster.wait_success("trainer-0", Duration::from_secs(60));
    assert_complete(&run, &[8, 16]);
    // P-M accuracy was aggregated for both checkpoints, across the restart.
    let pm_lines = status
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|t| t.len() > 2 && ["8", "16"].contains(&t[0]) && t[2].ends_with('%'))
        .count();
    assert_eq!(pm_lines, 2, "{status}");
    drop(cluster);

    // A coordinator with no record of the job (a new state location) that
    // gets it submitted again adopts its checkpoints and results: the job
    // ends with no trainer and no evaluator, and no result file is rewritten.
    let before = file_times(&run.join("results"));
    let fresh = dir.join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    let cluster = Cluster::start(&fresh);
    cluster.submit(&dir.join("job-restart.toml"));
    let again = cluster.wait_done("restart");
    assert!(again.contains("12 done"), "{again}");
    assert_eq!(before, file_times(&run.join("results")));
}

#[test]
fn results_are_identical_with_one_and_three_evaluators() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_task(dir);
    let tail = format!("every_steps = 8\nbaselines = false\n\n{EVAL}");
    let one = spec(dir, "one", "epochs = 2", &tail);
    let out = run(&["train", "--config", one.to_str().unwrap(), "--no-progress"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The same checkpoints under a second run: its own results.
    let three = spec(dir, "three", "epochs = 2", &tail);
    copy_dir(&dir.join("one"), &dir.join("three"));

    let mut cluster = Cluster::start(dir);
    cluster.submit(&one);
    cluster.start_evaluator("solo");
    cluster.wait_done("one");
    cluster.kill("solo");
    cluster.submit(&three);
    for name in ["a", "b", "c"] {
        cluster.start_evaluator(name);
    }
    cluster.wait_done("three");
    let (one, three) = (all_rows(&dir.join("one")), all_rows(&dir.join("three")));
    assert_eq!(one.len(), 24);
    assert!(one == three, "rows differ between 1 and 3 evaluators");
    let served: Vec<bool> = ["a", "b", "c"]
        .iter()
        .map(|n| cluster.log_text(n).contains("task done"))
        .collect();
    assert!(served.iter().filter(|s| **s).count() >= 2, "{served:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The pids of `premem coordinator` processes whose command line names
/// `state` (the local cluster of one `premem run`).
fn coordinator_pids(state: &Path) -> Vec<i32> {
    let state = state.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.contains(&&b"coordinator"[..]) && args.contains(&state.as_bytes())
        })
        .collect()
}

/// Issue 18, finding 2: `premem run` restarts its coordinator after a
/// SIGKILL (on the same address and state) and the job completes (before:
/// it hung with the coordinator a zombie); with no evaluator it refuses.
#[test]
fn premem_run_restarts_its_killed_coordinator_and_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_task(dir);
    let tail = format!("every_steps = 8\nbaselines = false\n\n{EVAL}\n[cluster]\nevaluators = 1\n");
    let job = spec(dir, "supervised", "epochs = 2", &tail);
    let work = dir.join("work");
    let mut run = common::premem()
        .args([
            "run",
            job.to_str().unwrap(),
            "--workdir",
            work.to_str().unwrap(),
            "--no-report",
        ])
        .args(["--cache-dir", dir.join("cache").to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let state = work.join("state");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !published(&dir.join("supervised"), 8) {
        assert!(std::time::Instant::now() < deadline, "no first checkpoint");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pids = coordinator_pids(&state);
    assert_eq!(pids.len(), 1, "{pids:?}");
    // SAFETY: a signal to a process of this test's own tree.
    unsafe { libc::kill(pids[0], libc::SIGKILL) };
    // Before the fix `premem run` waited forever on the dead coordinator.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = run.kill();
            panic!("premem run did not finish within 180 s of the coordinator's kill");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("restarting the coordinator"), "{stderr}");
    assert_complete(&dir.join("supervised"), &[8, 16]);

    let idle = spec(dir, "idle", "", "[cluster]\nevaluators = 0\n");
    let out = common::run(&[
        "run",
        idle.to_str().unwrap(),
        "--workdir",
        dir.join("w2").to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cluster.evaluators is 0"), "{stderr}");
}

/// Ctrl-C, then the same command (issue 39, item 6): the job was
/// cancelled, and the command again exited at once with
/// JOB_STATE_CANCELLED. Now the second run resumes and finishes, and only
/// the scheduled checkpoints are evaluated, not the one the interrupted
/// trainer wrote to resume from.
#[test]
fn ctrl_c_then_the_same_premem_run_resumes_and_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_task(dir);
    let tail = format!("every_steps = 8\nbaselines = false\n\n{EVAL}\n[cluster]\nevaluators = 1\n");
    let job = spec(dir, "resumed", "epochs = 4", &tail);
    let work = dir.join("work");
    let args = [
        "run",
        job.to_str().unwrap(),
        "--workdir",
        work.to_str().unwrap(),
        "--no-report",
        "--cache-dir",
    ];
    let cache = dir.join("cache");
    let mut first = common::premem()
        .args(args)
        .arg(&cache)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !published(&dir.join("resumed"), 8) {
        assert!(std::time::Instant::now() < deadline, "no first checkpoint");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: a signal to this test's own child.
    unsafe { libc::kill(first.id() as i32, libc::SIGINT) };
    let status = first.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(first.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("interrupted; run the same command again to resume"),
        "{stderr}"
    );

    let again = common::premem().args(args).arg(&cache).output().unwrap();
    let stderr = text(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert_complete(&dir.join("resumed"), &[8, 16, 24, 32]);
}
