//! What the coordinator's wire tests share: a temporary directory with the
//! datasets, the run and the state store; clients and calls of each role.
//! The job evaluates four train examples (t0..t3) and two test examples
//! (e0, e1) in tasks of two; its plan has 8 steps (4 examples, batch 2,
//! 4 epochs), so the checkpoint of step 8 is the final one.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use premem_coordinator::{Running, ServeOptions, Timing};
use premem_core::data::results::{ExampleResult, to_parquet};
use premem_proto::v1::{self, Backend, Completion, TrainerAction};
use premem_proto::{Client, ClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

pub const TOKEN: &str = "grpc-test-token";
pub const JOB: &str = "grpc-job";
pub const TRAIN: [&str; 4] = ["t0", "t1", "t2", "t3"];
pub const TEST: [&str; 2] = ["e0", "e1"];

/// A temporary directory with the datasets, the run and the state store.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = |ids: &[&str]| {
            ids.iter()
                .enumerate()
                .map(|(i, id)| {
                    serde_json::json!({
                        "id": id,
                        "question": format!("What is {i} + {i}?"),
                        "answer": format!("{i} + {i} = {}\n#### {}", 2 * i, 2 * i),
                    })
                    .to_string()
                        + "\n"
                })
                .collect::<String>()
        };
        std::fs::write(dir.path().join("train.jsonl"), jsonl(&TRAIN)).unwrap();
        std::fs::write(dir.path().join("test.jsonl"), jsonl(&TEST)).unwrap();
        Fixture { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn spec(&self, task_examples: usize) -> serde_json::Value {
        serde_json::json!({
            "run": { "name": JOB, "output": self.path("run") },
            "model": { "config": "tiny.json", "tokenizer": "tokenizer.json" },
            "data": {
                "train": { "path": self.path("train.jsonl"), "format": "gsm8k" },
                "test": { "path": self.path("test.jsonl"), "format": "gsm8k" },
            },
            "train": {
                "lr": 1e-4,
                "schedule": { "type": "constant" },
                "batch_size": 2,
                "micro_batch_size": 1,
                "epochs": 4,
            },
            "eval": { "task_examples": task_examples, "threshold": { "perplexity": 1.5 } },
            "cluster": { "trainers": 2 },
        })
    }

    pub fn spec_json(&self) -> String {
        self.spec(2).to_string()
    }

    pub fn options(&self) -> ServeOptions {
        let mut options = ServeOptions::new("127.0.0.1:0", self.path("state"), TOKEN);
        options.timing = Timing {
            lease_ttl: Duration::from_secs(60),
            rank_ttl: Duration::from_secs(60),
        };
        options.scan_interval = Duration::from_millis(50);
        options
    }

    /// Publishes the checkpoint of `step` the way the coordinator finds it.
    pub fn publish(&self, step: u64) {
        let dir = self.run_dir().join(format!("checkpoints/step-{step:08}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("MANIFEST.json"), b"{}").unwrap();
    }

    /// Writes a task's result file, as an evaluator does (real Parquet: a
    /// restarted coordinator reads the rows back).
    pub fn write_result(&self, task: &v1::Task, rows: &[v1::ExampleRow]) {
        let rows: Vec<ExampleResult> = rows
            .iter()
            .map(|r| ExampleResult {
                id: r.example_id.clone(),
                split: task.split.clone(),
                checkpoint_step: task.step,
                preamble: String::new(),
                n_correct: (r.accuracy * 100.0).round() as u32,
                samples: 100,
                accuracy: r.accuracy,
                target_nll: r.perplexity.ln() * 10.0,
                target_tokens: 10,
                target_perplexity: r.perplexity,
                mean_sample_tokens: 12.0,
                frac_equal_target: 0.0,
                sample_confidences: vec![-0.5; 4],
                sample_texts: vec!["sample".into()],
                distinct_samples: Some(1),
            })
            .collect();
        self.write_result_bytes(task, &to_parquet(&rows).unwrap());
    }

    pub fn write_result_bytes(&self, task: &v1::Task, bytes: &[u8]) {
        let file = self.run_dir().join(&task.result_file);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
    }
}

pub fn connect(running: &Running) -> Client {
    connect_as(running, TOKEN)
}

/// A client that presents `token`.
pub fn connect_as(running: &Running, token: &str) -> Client {
    premem_proto::client(&ClientConfig::new(
        format!("http://{}", running.address),
        token,
    ))
    .unwrap()
}

pub async fn status(client: &mut Client) -> v1::JobStatus {
    client
        .get_status(v1::GetStatusRequest { job: JOB.into() })
        .await
        .unwrap()
        .into_inner()
}

/// Polls until the job has `tasks` tasks (the scanner found the checkpoints).
pub async fn wait_for_tasks(client: &mut Client, tasks: u32) -> v1::JobStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(client).await;
        let total: u32 = s.checkpoints.iter().map(|c| c.tasks_total).sum();
        if total == tasks {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{total} of {tasks} tasks after 20 s: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn submit(client: &mut Client, spec_json: String) -> v1::SubmitJobReply {
    client
        .submit_job(v1::SubmitJobRequest { spec_json })
        .await
        .unwrap()
        .into_inner()
}

pub async fn lease(client: &mut Client) -> v1::Task {
    client
        .lease_task(v1::LeaseTaskRequest {
            evaluator: "test-evaluator".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .expect("a task to lease")
}

pub async fn complete(
    client: &mut Client,
    task: &v1::Task,
    rows: Vec<v1::ExampleRow>,
) -> Result<Completion, tonic::Status> {
    client
        .complete_task(v1::CompleteTaskRequest {
            lease_id: task.lease_id.clone(),
            task_id: task.task_id.clone(),
            rows,
        })
        .await
        .map(|r| r.into_inner().completion())
}

/// Leases `tasks` tasks, writes their result files and completes them, as
/// an evaluator does; each completion is accepted.
pub async fn evaluate(fixture: &Fixture, client: &mut Client, tasks: usize) {
    for _ in 0..tasks {
        let task = lease(client).await;
        fixture.write_result(&task, &rows_for(&task));
        let done = complete(client, &task, rows_for(&task)).await.unwrap();
        assert_eq!(done, Completion::Accepted, "{}", task.task_id);
    }
}

#[track_caller]
pub fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    contains: &str,
) {
    match result {
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(
                status.message().contains(contains),
                "'{}' does not mention '{contains}'",
                status.message()
            );
        }
        Ok(reply) => panic!("expected {code:?}, got {reply:?}"),
    }
}

pub fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-12)
}

/// The rows the simulated evaluation produces, p = 1.5 (memorized iff
/// perplexity < 1.5; masked = acc · [ppl ≥ p];
/// PM_m(i) = min(max_{m' ≤ m} masked_{m'}(i), acc_m(i))):
///
/// | step | example | acc | ppl  | memorized | masked | max masked | PM_m(i) |
/// |------|---------|-----|------|-----------|--------|------------|---------|
/// | 4    | t0      | 0.8 | 2.0  | no        | 0.8    | 0.8        | 0.8     |
/// | 4    | t1      | 0.6 | 1.2  | yes       | 0      | 0          | 0       |
/// | 4    | t2      | 0.0 | 3.0  | no        | 0      | 0          | 0       |
/// | 4    | t3      | 1.0 | 1.5  | no (= p)  | 1.0    | 1.0        | 1.0     |
/// | 8    | t0      | 1.0 | 1.1  | yes       | 0      | 0.8        | 0.8     |
/// | 8    | t1      | 1.0 | 1.05 | yes       | 0      | 0          | 0       |
/// | 8    | t2      | 0.4 | 2.5  | no        | 0.4    | 0.4        | 0.4     |
/// | 8    | t3      | 0.2 | 1.8  | no        | 0.2    | 1.0        | 0.2     |
///
/// Step 4: P-M (0.8 + 0 + 0 + 1.0) / 4 = 0.45, train accuracy 2.4 / 4 = 0.6,
/// memorized 1/4. Step 8: P-M (0.8 + 0 + 0.4 + 0.2) / 4 = 0.35, train
/// accuracy 2.6 / 4 = 0.65, memorized 2/4. Test accuracy: step 4
/// (0.5 + 0.25) / 2 = 0.375, step 8 (1.0 + 0.5) / 2 = 0.75.
pub fn observation(step: u64, id: &str) -> (f64, f64) {
    match (step, id) {
        (4, "t0") => (0.8, 2.0),
        (4, "t1") => (0.6, 1.2),
        (4, "t2") => (0.0, 3.0),
        (4, "t3") => (1.0, 1.5),
        (4, "e0") => (0.5, 2.0),
        (4, "e1") => (0.25, 2.0),
        (8, "t0") => (1.0, 1.1),
        (8, "t1") => (1.0, 1.05),
        (8, "t2") => (0.4, 2.5),
        (8, "t3") => (0.2, 1.8),
        (8, "e0") => (1.0, 1.3),
        (8, "e1") => (0.5, 1.3),
        _ => panic!("no observation for {id} at step {step}"),
    }
}

pub fn rows_for(task: &v1::Task) -> Vec<v1::ExampleRow> {
    task.example_ids
        .iter()
        .map(|id| {
            let (accuracy, perplexity) = observation(task.step, id);
            v1::ExampleRow {
                example_id: id.clone(),
                accuracy,
                perplexity,
            }
        })
        .collect()
}

pub fn checkpoint(status: &v1::JobStatus, step: u64) -> &v1::CheckpointStatus {
    status
        .checkpoints
        .iter()
        .find(|c| c.step == step)
        .unwrap_or_else(|| panic!("no checkpoint {step} in {status:?}"))
}

/// Registers a new process for `rank` (it was a member of nothing).
pub async fn register(
    client: &mut Client,
    job: &str,
    rank: u32,
    ring_address: &str,
) -> Result<v1::RegisterTrainerReply, tonic::Status> {
    register_as(client, job, rank, ring_address, None).await
}

/// Registers ranks 0 and 1 of the job (ring addresses 127.0.0.1:7000 and
/// 7001): generation 1 forms.
pub async fn register_both(
    client: &mut Client,
) -> (v1::RegisterTrainerReply, v1::RegisterTrainerReply) {
    let r0 = register(client, JOB, 0, "127.0.0.1:7000").await.unwrap();
    let r1 = register(client, JOB, 1, "127.0.0.1:7001").await.unwrap();
    (r0, r1)
}

/// Registers `rank`; `member`: the registration of the generation it was
/// a member of (it regroups).
pub async fn register_as(
    client: &mut Client,
    job: &str,
    rank: u32,
    ring_address: &str,
    member: Option<&v1::RegisterTrainerReply>,
) -> Result<v1::RegisterTrainerReply, tonic::Status> {
    client
        .register_trainer(v1::RegisterTrainerRequest {
            job: job.into(),
            rank,
            backend: Backend::Ring as i32,
            ring_address: ring_address.into(),
            nccl_unique_id: vec![],
            trainer: String::new(),
            generation: member.map_or(0, |m| m.generation),
            member_secret: member.map(|m| m.member_secret.clone()).unwrap_or_default(),
        })
        .await
        .map(|r| r.into_inner())
}

/// A heartbeat of the member `member` of `rank`, at `step`.
pub async fn heartbeat(
    client: &mut Client,
    rank: u32,
    member: &v1::RegisterTrainerReply,
    step: u64,
) -> (TrainerAction, u64) {
    let reply = client
        .trainer_heartbeat(v1::TrainerHeartbeatRequest {
            job: JOB.into(),
            rank,
            generation: member.generation,
            step,
            trainer: String::new(),
            member_secret: member.member_secret.clone(),

            tokens_per_s: None,
        })
        .await
        .unwrap()
        .into_inner();
    (reply.action(), reply.generation)
}

/// A plain HTTP/1.0 GET; returns the whole response (head and body).
pub async fn http_get(address: SocketAddr, path: &str) -> String {
    http_get_as(address, path, None).await
}

/// A plain HTTP/1.0 GET with `Authorization: Bearer <token>` when given.
pub async fn http_get_as(address: SocketAddr, path: &str, token: Option<&str>) -> String {
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}"))
        .unwrap_or_default();
    http_get_with(address, path, &[authorization.as_str()]).await
}

/// A plain HTTP/1.0 GET with these header lines (empty ones left out).
pub async fn http_get_with(address: SocketAddr, path: &str, headers: &[&str]) -> String {
    let authorization: String = headers
        .iter()
        .filter(|h| !h.is_empty())
        .map(|h| format!("{h}\r\n"))
        .collect();
    let get = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n{authorization}\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    tokio::time::timeout(Duration::from_secs(10), get)
        .await
        .expect("the metrics server answers within 10 s")
}
