//! A run tracked where users look, and stopped by its advice: `premem run`
//! of a job with `[advice] stop_when = "memorized"` (thresholds that make
//! the P-M-stalled rule fire at the second checkpoint) and `[tracking]
//! mlflow` set to a real MLflow server. The run stops early as a finished
//! run and its report says why; TensorBoard's own reader reads its event
//! files; the MLflow server holds its parameters and metrics.

mod common;

use std::path::Path;
use std::time::Duration;

use common::live_run::LiveRun;
use common::{all_rows, published, spec, synth_task};
use premem_core::storage::checkpoint::EarlyStopRecord;
use premem_tracking::testing::{MlflowServer, read_events};
use serde_json::Value;

/// 60 epochs of 8 steps: far more than the two checkpoints the rule needs.
const EPOCHS: u64 = 60;
const STEPS_PER_EPOCH: u64 = 8;

fn tail(mlflow: &str) -> String {
    format!(
        "every_epoch = true\nbaselines = false\n\n\
         [eval]\nlimit = 8\nsamples = 2\nmax_new_tokens = 12\ntask_examples = 4\nbatch_size = 4\n\n\
         [cluster]\ntrainers = 1\nevaluators = 1\n\n\
         [advice]\nstall_checkpoints = 1\npm_gain = 1.0\ntrain_gain = 0.0\nstop_when = \"memorized\"\n\n\
         [tracking]\nmlflow = \"{mlflow}\"\nexperiment = \"e2e\"\n"
    )
}

/// `points` of a tag as TensorBoard read them: step → value.
fn points(events: &Value, tag: &str) -> Vec<(u64, f64)> {
    let points = events[tag]
        .as_array()
        .unwrap_or_else(|| panic!("no tag {tag}: {events}"));
    points
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
        .collect()
}

fn early_stop(run: &Path) -> EarlyStopRecord {
    let text = std::fs::read_to_string(run.join("early-stop.json")).expect("early-stop.json");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memorizing_run_stops_early_and_is_tracked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_task(dir);
    let server = MlflowServer::start();
    let job = spec(
        dir,
        "stop",
        &format!("epochs = {EPOCHS}"),
        &tail(&server.url),
    );
    let mut run = LiveRun::start(&job, &dir.join("work"));
    let status = run.wait(Duration::from_secs(900));
    assert!(status.success(), "premem run: {status}: {:?}", run.lines());
    let out = dir.join("stop");
    let stopped = early_stop(&out);
    let last = stopped.stopped_at_step.expect("the ranks stopped");
    assert!(last < EPOCHS * STEPS_PER_EPOCH, "{stopped:?}");
    assert!(stopped.reason.contains("P-M stalled"), "{stopped:?}");
    assert!(published(&out, last) && !published(&out, last + 1));
    let lines = run.lines().join("\n");
    assert!(
        lines.contains("stopped early by [advice] stop_when = \"memorized\""),
        "{lines}"
    );
    let report = std::fs::read_to_string(dir.join("stop-report/report.md")).expect("the report");
    assert!(
        report.contains("**The run stopped early**: training stopped at step"),
        "{report}"
    );

    let evaluated = check_tensorboard(&out, last);
    check_mlflow(&server, &evaluated).await;
}

/// The event files as TensorBoard reads them: the trainer's loss at every
/// step, and each evaluated checkpoint's test accuracy as its result files
/// hold it. Returns the evaluated steps.
fn check_tensorboard(out: &Path, last: u64) -> Vec<u64> {
    let events = read_events(&out.join("tensorboard"));
    let loss = points(&events, "train/loss");
    assert_eq!(
        loss.iter().map(|p| p.0).collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>()
    );
    let rows = all_rows(out);
    let test = points(&events, "eval/test_accuracy");
    assert!(test.len() >= 2, "{test:?}");
    for (step, value) in &test {
        let accuracies: Vec<f64> = rows
            .iter()
            .filter(|((s, split, _, preamble), _)| {
                s == step && split == "test" && preamble.is_empty()
            })
            .map(|(_, r)| r.accuracy)
            .collect();
        let mean = accuracies.iter().sum::<f64>() / accuracies.len() as f64;
        assert!(
            (mean - value).abs() < 1e-6,
            "step {step}: {value} vs {mean}"
        );
    }
    let pm = points(&events, "eval/pm_accuracy");
    assert_eq!(
        pm.iter().map(|p| p.0).collect::<Vec<_>>(),
        test.iter().map(|p| p.0).collect::<Vec<_>>()
    );
    let stalled = points(&events, "advice/pm_stalled");
    assert_eq!(
        stalled.first().map(|p| p.1),
        Some(0.0),
        "one checkpoint cannot stall"
    );
    assert!(stalled.iter().any(|p| p.1 == 1.0), "{stalled:?}");
    pm.iter().map(|p| p.0).collect()
}

/// The run in MLflow: the spec's parameters, the evaluated checkpoints'
/// P-M, and its end.
async fn check_mlflow(server: &MlflowServer, evaluated: &[u64]) {
    let url = &server.url;
    let experiment = server
        .get("experiments/get-by-name", &[("experiment_name", "e2e")])
        .await;
    let id = experiment["experiment"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let search = reqwest::Client::new()
        .post(format!("{url}/api/2.0/mlflow/runs/search"))
        .json(&serde_json::json!({"experiment_ids": [id]}))
        .send()
        .await
        .unwrap();
    let search: Value = search.json().await.unwrap();
    let runs = search["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{search}");
    let run_id = runs[0]["info"]["run_id"].as_str().unwrap();
    let run = server.get("runs/get", &[("run_id", run_id)]).await;
    assert_eq!(run["run"]["info"]["status"], "FINISHED", "{run}");
    let params = run["run"]["data"]["params"].as_array().unwrap();
    let param = |key: &str| {
        params
            .iter()
            .find(|p| p["key"] == key)
            .map(|p| p["value"].clone())
    };
    assert_eq!(param("train.lr"), Some(Value::from("0.003")), "{params:?}");
    assert_eq!(param("advice.stop_when"), Some(Value::from("memorized")));
    let history = server
        .get(
            "metrics/get-history",
            &[("run_id", run_id), ("metric_key", "eval/pm_accuracy")],
        )
        .await;
    let mut steps: Vec<u64> = history["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["step"]
                .as_str()
                .map_or_else(|| m["step"].as_u64().unwrap(), |s| s.parse().unwrap())
        })
        .collect();
    steps.sort();
    assert_eq!(steps, evaluated);
    let loss = server
        .get(
            "metrics/get-history",
            &[("run_id", run_id), ("metric_key", "train/loss")],
        )
        .await;
    assert!(!loss["metrics"].as_array().unwrap().is_empty());
}
