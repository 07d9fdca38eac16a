//! The dashboard over real HTTP: every route needs a token with the read
//! role (header or the cookie `?token=` sets); its JSON holds the job's
//! checkpoints, trainers and evaluators as the state has them.

mod common;

use std::net::SocketAddr;

use common::*;
use premem_coordinator::start;
use premem_proto::Role;

const READ: &str = "dashboard-read-token-0123";
const TRAINER: &str = "dashboard-trainer-token-01";
const ROUTES: [&str; 6] = [
    "/dashboard",
    "/dashboard/app.js",
    "/dashboard/style.css",
    "/dashboard/vendor/echarts.min.js",
    "/api/overview",
    "/api/jobs/grpc-job/heatmap",
];

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or_default()
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// A coordinator with one job whose first checkpoint's train tasks are done
/// (two completions by one evaluator): its P-M is folded.
async fn coordinator_with_a_folded_checkpoint(fixture: &Fixture) -> premem_coordinator::Running {
    let mut options = fixture.options();
    options.metrics_listen = Some("127.0.0.1:0".into());
    options.role_tokens = vec![(READ.into(), Role::Read), (TRAINER.into(), Role::Trainer)];
    let running = start(options).await.unwrap();
    let mut client = connect(&running);
    submit(&mut client, fixture.spec_json()).await;
    for (rank, ring) in [(0, "127.0.0.1:7000"), (1, "127.0.0.1:7001")] {
        register(&mut client, JOB, rank, ring).await.unwrap();
    }
    fixture.publish(4);
    wait_for_tasks(&mut client, 3).await;
    evaluate(fixture, &mut client, 2).await;
    running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_route_needs_a_read_token() {
    let fixture = Fixture::new();
    let running = coordinator_with_a_folded_checkpoint(&fixture).await;
    let http = running.metrics_address.unwrap();
    for route in ROUTES {
        for token in [None, Some("nobody-knows-this-token")] {
            let response = http_get_as(http, route, token).await;
            assert!(
                status_line(&response).contains(" 401"),
                "{route} {token:?}: {response}"
            );
            assert!(body(&response).contains("dashboard?token="), "{response}");
        }
        let trainer = http_get_as(http, route, Some(TRAINER)).await;
        assert!(status_line(&trainer).contains(" 403"), "{route}: {trainer}");
        for token in [TOKEN, READ] {
            let response = http_get_as(http, route, Some(token)).await;
            assert!(
                status_line(&response).contains(" 200"),
                "{route}: {response}"
            );
        }
    }
    let wrong = http_get_with(http, "/api/overview", &["Cookie: premem_token=00ff"]).await;
    assert!(status_line(&wrong).contains(" 401"), "{wrong}");
    running.stop().await.unwrap();
}

/// `?token=` sets the cookie and sends the browser to the bare URL; the
/// cookie then opens the page and its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_in_the_url_becomes_a_cookie() {
    let fixture = Fixture::new();
    let running = coordinator_with_a_folded_checkpoint(&fixture).await;
    let http = running.metrics_address.unwrap();
    let refused = http_get(http, "/dashboard?token=wrong-token-value").await;
    assert!(status_line(&refused).contains(" 401"), "{refused}");
    let signed_in = http_get(http, &format!("/dashboard?token={READ}")).await;
    assert!(status_line(&signed_in).contains(" 303"), "{signed_in}");
    let head = signed_in.to_ascii_lowercase();
    assert!(head.contains("location: /dashboard\r\n"), "{signed_in}");
    let cookie = signed_in
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or(l.strip_prefix("Set-Cookie: "))
        })
        .expect("a cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = format!("Cookie: {}", cookie.split(';').next().unwrap());
    for route in ["/dashboard", "/api/overview"] {
        let response = http_get_with(http, route, &[&pair]).await;
        assert!(
            status_line(&response).contains(" 200"),
            "{route}: {response}"
        );
    }
    let page = http_get_with(http, "/dashboard", &[&pair]).await;
    assert!(body(&page).contains("/dashboard/app.js"), "{page}");
    running.stop().await.unwrap();
}

async fn json(http: SocketAddr, path: &str) -> serde_json::Value {
    let response = http_get_as(http, path, Some(READ)).await;
    serde_json::from_str(body(&response)).unwrap_or_else(|e| panic!("{path}: {e}: {response}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_and_heatmap_show_the_state() {
    let fixture = Fixture::new();
    let running = coordinator_with_a_folded_checkpoint(&fixture).await;
    let http = running.metrics_address.unwrap();
    let overview = json(http, "/api/overview").await;
    let job = &overview["jobs"][0];
    assert_eq!(job["name"], JOB);
    assert_eq!(job["state"], "training");
    assert_eq!(
        (job["step"].as_u64(), job["total_steps"].as_u64()),
        (Some(4), Some(8))
    );
    assert_eq!(
        job["tasks"],
        serde_json::json!({"pending": 1, "leased": 0, "done": 2})
    );
    let checkpoint = &job["checkpoints"][0];
    assert_eq!(checkpoint["step"], 4);
    assert_eq!(
        (
            checkpoint["tasks_done"].as_u64(),
            checkpoint["tasks_total"].as_u64()
        ),
        (Some(2), Some(3))
    );
    let status = status(&mut connect(&running)).await;
    let pm = status.checkpoints[0].pm_accuracy.expect("P-M folded");
    assert_eq!(checkpoint["pm"].as_f64(), Some(pm));
    assert!(checkpoint["test_accuracy"].is_null(), "{checkpoint}");
    assert_eq!(job["trainers"]["world_size"], 2);
    assert_eq!(job["trainers"]["ranks"].as_array().unwrap().len(), 2);
    let evaluator = &overview["evaluators"][0];
    assert_eq!(evaluator["name"], "test-evaluator");
    assert_eq!(
        (evaluator["tasks_done"].as_u64(), evaluator["rows"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(evaluator["tasks_per_min"].as_f64(), Some(2.0));

    let heatmap = json(http, "/api/jobs/grpc-job/heatmap").await;
    assert_eq!(heatmap["steps"], serde_json::json!([4]));
    let examples: Vec<&str> = heatmap["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let mut sorted = examples.clone();
    sorted.sort();
    assert_eq!(sorted, TRAIN);
    for (id, cells) in examples.iter().zip(heatmap["accuracy"].as_array().unwrap()) {
        let (accuracy, _) = observation(4, id);
        assert_eq!(cells[0].as_f64(), Some(accuracy), "{id}");
    }
    let missing = http_get_as(http, "/api/jobs/no-such-job/heatmap", Some(READ)).await;
    assert!(status_line(&missing).contains(" 404"), "{missing}");
    running.stop().await.unwrap();
}

/// Runs of one sweep (`run.group`) form a group: its runs, the P-M vs
/// test point of each run with both, and the sweep's advice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_a_sweep_are_grouped_with_their_points() {
    let fixture = Fixture::new();
    let mut options = fixture.options();
    options.metrics_listen = Some("127.0.0.1:0".into());
    options.role_tokens = vec![(READ.into(), Role::Read)];
    let running = start(options).await.unwrap();
    let mut client = connect(&running);
    for (name, output) in [(JOB, "run"), ("grpc-job-b", "run-b")] {
        let mut spec = fixture.spec(2);
        spec["run"] = serde_json::json!({
            "name": name, "output": fixture.path(output), "group": "sweep/s",
        });
        submit(&mut client, spec.to_string()).await;
    }
    fixture.publish(4);
    wait_for_tasks(&mut client, 3).await;
    evaluate(&fixture, &mut client, 3).await;
    let overview = json(running.metrics_address.unwrap(), "/api/overview").await;
    let group = &overview["groups"][0];
    assert_eq!(
        (group["name"].as_str(), group["kind"].as_str()),
        (Some("sweep/s"), Some("sweep"))
    );
    assert_eq!(group["runs"], serde_json::json!([JOB, "grpc-job-b"]));
    let points = group["points"].as_array().unwrap();
    assert_eq!(
        points.len(),
        1,
        "only the first run has a folded checkpoint: {group}"
    );
    let status = status(&mut client).await;
    assert_eq!(points[0]["pm"].as_f64(), status.checkpoints[0].pm_accuracy);
    assert_eq!(
        points[0]["test_accuracy"].as_f64(),
        status.checkpoints[0].test_accuracy
    );
    assert_eq!(points[0]["lr"].as_f64(), Some(1e-4));
    assert!(!group["advice"].as_array().unwrap().is_empty(), "{group}");
    assert!(
        overview["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["group"] == "sweep/s")
    );
    running.stop().await.unwrap();
}
