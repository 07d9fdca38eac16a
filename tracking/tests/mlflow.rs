//! The MLflow client against a real `mlflow server` (the venv `make
//! test-tools` installs) on 127.0.0.1, read back through the REST API.

use premem_tracking::TrackingError;
use premem_tracking::mlflow::{Metric, Mlflow, RunStatus, flatten_params};
use premem_tracking::testing::MlflowServer;
use serde_json::{Value, json};

fn metrics() -> Vec<Metric> {
    let mut metrics = vec![];
    for step in 1..=5 {
        let at = 1_700_000_000_000 + step;
        metrics.push(Metric {
            key: "train/loss".into(),
            value: 1.0 / step as f64,
            timestamp_ms: at,
            step,
        });
        if step % 2 == 1 {
            metrics.push(Metric {
                key: "eval/pm_accuracy".into(),
                value: 0.1 * step as f64,
                timestamp_ms: at,
                step,
            });
        }
    }
    metrics
}

fn spec() -> Value {
    json!({ "name": "synth", "train": { "lr": 0.001, "epochs": 24 }, "seeds": [0, 1], "model": { "family": "llama" } })
}

/// Every metric of `key` the server holds, as (step, value, timestamp).
async fn history(server: &MlflowServer, run_id: &str, key: &str) -> Vec<(i64, f64, i64)> {
    let reply = server
        .get(
            "metrics/get-history",
            &[("run_id", run_id), ("metric_key", key)],
        )
        .await;
    let mut points: Vec<_> = reply["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["step"].as_i64().unwrap(),
                m["value"].as_f64().unwrap(),
                m["timestamp"].as_i64().unwrap(),
            )
        })
        .collect();
    points.sort_by_key(|p| p.0);
    points
}

async fn check_params(server: &MlflowServer, run_id: &str) {
    let run = server.get("runs/get", &[("run_id", run_id)]).await;
    let mut params: Vec<(String, String)> = run["run"]["data"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["key"].as_str().unwrap().into(),
                p["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    params.sort();
    assert_eq!(params, flatten_params(&spec()));
    let tags = run["run"]["data"]["tags"].as_array().unwrap();
    assert!(
        tags.contains(&json!({ "key": "premem.job", "value": "synth-1" })),
        "{tags:?}"
    );
    assert_eq!(run["run"]["info"]["run_name"], "synth-1");
}

async fn check_metrics(server: &MlflowServer, run_id: &str) {
    for key in ["train/loss", "eval/pm_accuracy"] {
        let expected: Vec<_> = metrics()
            .into_iter()
            .filter(|m| m.key == key)
            .map(|m| (m.step, m.value, m.timestamp_ms))
            .collect();
        assert_eq!(
            history(server, run_id, key).await,
            expected,
            "history of {key}"
        );
    }
}

#[tokio::test]
async fn a_job_logs_into_one_run_that_reads_back() {
    let server = MlflowServer::start();
    let mlflow = Mlflow::new(&server.url).unwrap();

    let experiment = mlflow.experiment("premem-test").await.unwrap();
    assert_eq!(
        mlflow.experiment("premem-test").await.unwrap(),
        experiment,
        "found, not created again"
    );
    let run_id = mlflow.run(&experiment, "synth-1").await.unwrap();
    mlflow
        .log(&run_id, &flatten_params(&spec()), &metrics())
        .await
        .unwrap();
    assert_eq!(
        mlflow.run(&experiment, "synth-1").await.unwrap(),
        run_id,
        "a restart finds the run"
    );
    assert_ne!(
        mlflow.run(&experiment, "synth-2").await.unwrap(),
        run_id,
        "another job, another run"
    );

    // The same params again (a restarted coordinator) are fine; a changed one is not.
    mlflow
        .log(&run_id, &flatten_params(&spec()), &[])
        .await
        .unwrap();
    let changed = vec![("train.lr".to_string(), "0.01".to_string())];
    let error = mlflow.log(&run_id, &changed, &[]).await.unwrap_err();
    assert!(
        matches!(error, TrackingError::ParamChanged { ref key, .. } if key == "train.lr"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("\"train.lr\"")
            && message.contains("\"0.001\"")
            && message.contains("\"0.01\""),
        "{message}"
    );

    mlflow.finish(&run_id, RunStatus::Finished).await.unwrap();

    check_params(&server, &run_id).await;
    check_metrics(&server, &run_id).await;
    let run = &server.get("runs/get", &[("run_id", &run_id)]).await;
    assert_eq!(run["run"]["info"]["status"], "FINISHED");
    assert!(run["run"]["info"]["end_time"].as_i64().is_some(), "{run}");
}

#[tokio::test]
async fn errors_name_the_endpoint_and_the_server_message() {
    let server = MlflowServer::start();
    let mlflow = Mlflow::new(&server.url).unwrap();
    let error = mlflow
        .finish("no-such-run", RunStatus::Failed)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("/api/2.0/mlflow/runs/update"), "{message}");
    assert!(
        message.contains("HTTP 404") && message.contains("RESOURCE_DOES_NOT_EXIST"),
        "{message}"
    );

    drop(server);
    let error = mlflow.experiment("gone").await.unwrap_err();
    assert!(
        matches!(error, TrackingError::Transport { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("experiments/get-by-name?experiment_name=gone"),
        "{error}"
    );
}

/// A tracker URL answering a redirect (issue 39, item 3): the client does
/// not follow it to the other address, and the error quotes nothing of
/// the body.
#[tokio::test]
async fn a_redirect_is_not_followed_and_its_body_not_quoted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (to, from) = (
        target.local_addr().unwrap(),
        redirector.local_addr().unwrap(),
    );
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = redirector.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let body = "internal secret";
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{to}/\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    let mlflow = Mlflow::new(&format!("http://{from}")).unwrap();
    let error = mlflow.experiment("x").await.unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, TrackingError::Status { status: 307, .. }),
        "{error:?}"
    );
    assert!(!message.contains("secret"), "{message}");
    assert!(message.contains("not shown"), "{message}");
    let reached =
        tokio::time::timeout(std::time::Duration::from_millis(300), target.accept()).await;
    assert!(reached.is_err(), "the redirect was followed");
}
