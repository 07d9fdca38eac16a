//! `premem curate` end to end: a curation of pm and iid on a local cluster,
//! and the same curation on a cluster whose coordinator and curate process
//! are both killed while iteration 2 trains, then restarted.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cluster::{Cluster, TOKEN};
use common::{file_times, premem, synth_data, text};
use premem_curation::{CurationState, Strategy};

/// 12 train problems of 1 to 3 steps (2 candidates each in the pool), 6
/// test problems and the tiny model config, in `dir`.
fn curation_task(dir: &Path) {
    synth_data(
        dir,
        &[
            "--train",
            "12",
            "--test",
            "6",
            "--pool-per-example",
            "2",
            "--groups",
            "1-3",
        ],
    );
}

/// Two iterations of pm and iid, 6 new examples after the first; tiny runs
/// of 2 epochs with a checkpoint every 3 steps.
fn curation_file(dir: &Path, output: &Path) -> PathBuf {
    let data = dir.join("data");
    let path = dir.join(format!(
        "curation-{}.toml",
        output.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(
        &path,
        format!(
            r#"[curation]
name = "c"
output = "{output}"
iterations = 2
threshold = 0.5
new_examples = 6
strategies = ["pm", "iid"]
seed = 1
trainers = 2
evaluators = 1

[source]
pool = {{ path = "{data}/pool.jsonl", format = "gsm8k" }}

[job.run]
name = "c"
output = "{output}/runs"
seed = 5

[job.model]
config = "{config}"
tokenizer = "{data}/tokenizer.json"
init_seed = 2

[job.data]
train = {{ path = "{data}/train.jsonl", format = "gsm8k" }}
test = {{ path = "{data}/test.jsonl", format = "gsm8k" }}

[job.train]
lr = 3e-3
schedule = {{ type = "linear", warmup_steps = 2 }}
batch_size = 4
micro_batch_size = 4
max_grad_norm = 1.0
epochs = 2
max_length = 256
precision = "fp32"
device = "cpu"

[job.checkpoint]
every_epoch = false
every_steps = 3
baselines = false

[job.eval]
samples = 2
max_new_tokens = 12
task_examples = 3
batch_size = 3

[job.cluster]
trainers = 1
evaluators = 1
"#,
            output = output.display(),
            data = data.display(),
            config = dir.join("tiny.json").display(),
        ),
    )
    .unwrap();
    path
}

/// `premem curation-summary` over `calm` and a copy of its state as
/// another seed's: one state file given twice is refused, the two give the
/// report, and on the copy, with iid at 10 % then 30 % and pm at 20 % after
/// 6 new examples each, iid needs 3 examples: 0.5×.
fn summary_of_two_seeds(dir: &Path, calm: &Path, state: &CurationState) {
    let mut other = state.clone();
    other.spec.curation.seed += 1;
    let mut set = |s: Strategy, i: usize, a: f64| {
        other.strategies.get_mut(&s).unwrap()[i].test_accuracy = Some(a);
    };
    set(Strategy::Iid, 0, 0.1);
    set(Strategy::Iid, 1, 0.3);
    set(Strategy::Pm, 1, 0.2);
    let copy = dir.join("other-seed");
    other.save(&copy.join("curation-state.json")).unwrap();
    let out_dir = dir.join("summary");
    let summary = |a: &Path, b: &Path| {
        premem()
            .args(["curation-summary", a.to_str().unwrap(), b.to_str().unwrap()])
            .args(["--out", out_dir.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = summary(calm, calm);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("have the same seeds"),
        "{}",
        text(&out.stderr)
    );
    let out = summary(calm, &copy);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("pm over iid after iteration 2:"),
        "{}",
        text(&out.stdout)
    );
    for file in ["summary.md", "summary.csv", "test-vs-examples.svg"] {
        assert!(out_dir.join(file).is_file(), "{file} missing");
    }
    let csv = read(&out_dir.join("summary.csv"));
    let pm = csv
        .lines()
        .find(|l| l.starts_with("efficiency_over_iid,pm,2,"))
        .unwrap();
    assert!(pm.contains(";0.500000,"), "the copy's pm is 0.5×: {pm}");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_curation_survives_killing_its_coordinator_and_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    curation_task(dir);

    // Undisturbed, on the local cluster of `premem curate`.
    let calm = dir.join("calm");
    let out = premem()
        .env("PREMEM_TOKEN", TOKEN)
        .env("OMP_NUM_THREADS", "1")
        .args([
            "curate",
            curation_file(dir, &calm).to_str().unwrap(),
            "--workdir",
            dir.join("calm-work").to_str().unwrap(),
            "--cache-dir",
            dir.join("calm-cache").to_str().unwrap(),
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    for line in ["pm iteration 2: 18 train", "iid iteration 2: 18 train"] {
        assert!(stdout.contains(line), "no '{line}' in:\n{stdout}");
    }
    for file in [
        "curation.md",
        "curation.csv",
        "chosen.csv",
        "test-vs-examples.png",
    ] {
        assert!(calm.join(file).is_file(), "{file} missing");
    }
    let state = CurationState::load(&calm.join("curation-state.json")).unwrap();
    for s in [Strategy::Pm, Strategy::Iid] {
        let records = state.records(s);
        assert_eq!(records.len(), 2, "{s:?}");
        assert_eq!(records[0].added.len(), 6, "{s:?}");
        assert_eq!(records[1].train_examples, 18, "{s:?}");
        // iid chooses every train example; pm those below the threshold.
        if s == Strategy::Iid {
            assert_eq!(records[0].chosen.len(), 12);
        }
        assert!(
            records[0]
                .chosen
                .iter()
                .all(|c| s == Strategy::Iid || c.score < 0.5)
        );
    }

    summary_of_two_seeds(dir, &calm, &state);

    // Disturbed: a cluster of 2 pool trainers and 1 evaluator. Once
    // iteration 1 is recorded and iteration 2 has a checkpoint, both the
    // coordinator and `premem curate` are SIGKILLed; then both start again.
    let rough = dir.join("rough");
    let file = curation_file(dir, &rough);
    let mut cluster = Cluster::start(dir);
    cluster.start_pool_trainer("pool-0");
    cluster.start_pool_trainer("pool-1");
    cluster.start_evaluator("e");
    let args = [
        "curate",
        file.to_str().unwrap(),
        "--remote",
        "--device",
        "cpu",
    ];
    cluster.start_cli("curate", &args);
    let state_file = rough.join("curation-state.json");
    cluster.wait_for("iteration 2 under way", || {
        CurationState::load(&state_file).is_ok_and(|s| s.records(Strategy::Pm).len() == 1)
            && rough.join("pm/iter-2/run/checkpoints").is_dir()
    });
    let base = rough.join("base/run");
    let before = file_times(&base);
    cluster.kill("curate");
    cluster.kill_coordinator();
    std::thread::sleep(Duration::from_millis(1500));
    cluster.start_coordinator();
    cluster.start_cli("curate-again", &args);
    cluster.wait_success("curate-again", Duration::from_secs(300));
    let resumed = cluster.log_text("curate-again");
    assert!(
        !resumed.contains("iteration 1:"),
        "iteration 1 measured again:\n{resumed}"
    );

    // The shared base run was not trained or evaluated again: no file of
    // it rewritten, and nothing new but an event file the publisher had
    // not written yet when its coordinator was killed (it writes what the
    // directory lacks, up to 0.5 s after the evaluation).
    let after = file_times(&base);
    for (file, time) in &before {
        assert_eq!(
            after.get(file),
            Some(time),
            "{} was touched",
            file.display()
        );
    }
    for file in after.keys().filter(|f| !before.contains_key(*f)) {
        assert!(
            file.parent().is_some_and(|d| d.ends_with("tensorboard")),
            "{} is new in the base run",
            file.display()
        );
    }
    // The same choices, data and accuracies as the undisturbed curation.
    for file in ["curation.csv", "chosen.csv"] {
        assert_eq!(read(&calm.join(file)), read(&rough.join(file)), "{file}");
    }
    for s in ["pm", "iid"] {
        let train = format!("{s}/iter-2/train.jsonl");
        assert_eq!(
            read(&calm.join(&train)),
            read(&rough.join(&train)),
            "{train}"
        );
    }

    // A finished curation run again submits nothing and rewrites its report.
    let out = cluster.cli(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("iteration"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("every iteration is done"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        read(&calm.join("curation.csv")),
        read(&rough.join("curation.csv"))
    );
}
