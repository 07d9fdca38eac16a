//! The evaluator worker: one task on a tiny published checkpoint
//! (`evaluate_task`), and the lease loop (`run_worker`) against a mock
//! coordinator.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use premem_core::spec::record::RunRecord;
use premem_core::storage::checkpoint::{Area, RUN_FILE, publish};
use premem_core::testing::{self, JobToml};
use premem_core::{BlockingStore, JobSpec, Store};
use premem_evaluator::results::read_parquet;
use premem_evaluator::{
    CheckpointCache, ExampleResult, ModelSlot, WorkerOptions, WorkerSummary, evaluate_task,
    run_worker,
};
use premem_model::{CausalLm, ModelConfig, SaveOptions, Tokenizer};
use premem_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use premem_proto::v1::*;
use premem_proto::{ClientConfig, RequireToken};
use tch::{Device, Kind};
use tonic::{Request, Response, Status};

/// A tiny Llama for the synthetic tokenizer (vocab <= 320).
fn tiny_config() -> serde_json::Value {
    let extra = serde_json::json!({
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
        "initializer_range": 0.2
    });
    testing::tiny_config("llama", 320, extra)
}

const STEP: u64 = 8;

/// A run with 12 train and 4 test examples and one published checkpoint
/// (a random tiny model) at step 8.
struct TinyRun {
    tmp: tempfile::TempDir,
    location: String,
}

impl TinyRun {
    fn new() -> TinyRun {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        testing::write_synth_inputs(dir, 12, 4, 3, 320);
        let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
        std::fs::write(dir.join("tiny.json"), tiny_config().to_string()).unwrap();
        let (train, test) = (dir.join("train.jsonl"), dir.join("test.jsonl"));

        let output = dir.join("run");
        let spec = JobToml::default().with(&format!(
            r#"
[run]
name = "tiny"
output = "{output}"
seed = 5
[model]
config = "{config}"
tokenizer = "{tokenizer}"
[data.train]
path = "{train}"
format = "gsm8k"
[data.test]
path = "{test}"
format = "gsm8k"
[train]
lr = 1e-3
schedule = {{ type = "linear", warmup_steps = 0 }}
batch_size = 4
max_length = 256
device = "cpu"
[eval]
samples = 3
temperature = 0.8
top_p = 0.95
max_new_tokens = 10
preambles = ["First"]
batch_size = 4
keep_samples = 3
"#,
            output = output.display(),
            config = dir.join("tiny.json").display(),
            tokenizer = dir.join("tokenizer.json").display(),
            train = train.display(),
            test = test.display(),
        ));
        let spec = JobSpec::from_toml(&spec.text(), &dir.join("job.toml")).unwrap();
        let record = RunRecord {
            name: spec.run.name.clone(),
            training_hash: spec.training_hash(),
            inputs_digest: "0".repeat(32),
            git_revision: None,
            checksums: Default::default(),
            premem_version: "test".into(),
            spec,
        };
        let store = BlockingStore::new(Store::open(output.to_str().unwrap()).unwrap()).unwrap();
        store
            .run(
                store
                    .store()
                    .put(RUN_FILE, serde_json::to_vec_pretty(&record).unwrap()),
            )
            .unwrap();

        let config = ModelConfig::from_json(&tiny_config()).unwrap();
        let model = CausalLm::random(config, Device::Cpu, Kind::Float, 2);
        let local = dir.join("checkpoint");
        std::fs::create_dir_all(&local).unwrap();
        model.save(&local, &SaveOptions::default()).unwrap();
        tokenizer.save(&local.join("tokenizer.json")).unwrap();
        store
            .run(publish(store.store(), Area::Weights, STEP, &local))
            .unwrap();
        TinyRun {
            location: output.to_str().unwrap().to_string(),
            tmp,
        }
    }

    /// Rewrites the run's `run.json` with its spec (as JSON) changed by
    /// `edit`, checked or not.
    fn edit_spec(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = Path::new(&self.location).join(RUN_FILE);
        let mut record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut record["spec"]);
        std::fs::write(&path, serde_json::to_vec_pretty(&record).unwrap()).unwrap();
    }

    fn cache(&self, name: &str) -> CheckpointCache {
        CheckpointCache::new(self.tmp.path().join(name), 1 << 30).unwrap()
    }

    fn task(&self, name: &str, split: &str, ids: &[&str]) -> Task {
        Task {
            task_id: format!("tiny/step-{STEP:08}/{name}"),
            lease_id: format!("lease-{name}"),
            job: "tiny".into(),
            run: self.location.clone(),
            step: STEP,
            split: split.into(),
            example_ids: ids.iter().map(|s| s.to_string()).collect(),
            result_file: format!("results/step-{STEP:08}/{name}.parquet"),
        }
    }

    fn result_path(&self, task: &Task) -> PathBuf {
        Path::new(&self.location).join(&task.result_file)
    }
}

fn evaluate(run: &TinyRun, task: &Task) -> Vec<ExampleResult> {
    evaluate_task(
        task,
        &run.cache("cache"),
        &mut ModelSlot::new(),
        Device::Cpu,
        None,
    )
    .unwrap()
}

#[test]
fn a_task_gives_rows_for_its_examples_in_order_and_writes_them() {
    let run = TinyRun::new();
    let ids = ["train-00005", "train-00001", "train-00009"];
    let task = run.task("train-0000", "train", &ids);
    let cache = run.cache("cache");
    let mut slot = ModelSlot::new();
    let rows = evaluate_task(&task, &cache, &mut slot, Device::Cpu, None).unwrap();
    // Example by example, no preamble first.
    let order: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.id.as_str(), r.preamble.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            ("train-00005", ""),
            ("train-00005", "First"),
            ("train-00001", ""),
            ("train-00001", "First"),
            ("train-00009", ""),
            ("train-00009", "First"),
        ]
    );
    assert!(rows.iter().all(|r| r.split == "train"
        && r.checkpoint_step == STEP
        && r.samples == 3
        && r.sample_texts.len() == 3
        && r.target_perplexity > 1.0));
    assert_eq!(read_parquet(&run.result_path(&task)).unwrap(), rows);
    let loaded = slot.loaded().unwrap().to_path_buf();
    assert!(loaded.starts_with(cache.dir()));

    // The test split: no preambles; the loaded model is reused.
    let test = run.task("test-0000", "test", &["test-00002", "test-00000"]);
    let test_rows = evaluate_task(&test, &cache, &mut slot, Device::Cpu, None).unwrap();
    let ids: Vec<&str> = test_rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["test-00002", "test-00000"]);
    assert!(
        test_rows
            .iter()
            .all(|r| r.preamble.is_empty() && r.split == "test")
    );
    assert_eq!(slot.loaded(), Some(loaded.as_path()));
    assert_eq!(read_parquet(&run.result_path(&test)).unwrap(), test_rows);

    // The same task again, by a fresh worker (new slot, new cache): the same rows.
    assert_eq!(evaluate(&run, &task), rows);
    // ... and with the warm slot.
    assert_eq!(
        evaluate_task(&task, &cache, &mut slot, Device::Cpu, None).unwrap(),
        rows
    );
    a_finished_result_is_not_rewritten(&run, &task, &rows);
}

/// An evaluator that finishes a task whose result another already wrote
/// (it stalled past its lease) leaves that file as it is and reports its
/// rows (issue 39, item 12); a file that is not readable is replaced.
fn a_finished_result_is_not_rewritten(run: &TinyRun, task: &Task, rows: &[ExampleResult]) {
    let path = run.result_path(task);
    let past = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let file = std::fs::File::options().append(true).open(&path).unwrap();
    file.set_modified(past).unwrap();
    drop(file);
    assert_eq!(evaluate(run, task), rows);
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert_eq!(modified, past, "the finished result was rewritten");

    std::fs::write(&path, b"not parquet").unwrap();
    assert_eq!(evaluate(run, task), rows);
    assert_eq!(read_parquet(&path).unwrap(), rows);
}

/// The evaluator core promises (evaluate.rs, `results_do_not_depend_on_batch_size`)
/// that samples and answers do not depend on how examples are batched, and
/// perplexities only up to float rounding (padding changes the shapes of the
/// batched matmuls; the samples' confidences differ in the 7th digit here): so
/// tasks split differently give the same samples and accuracies, and
/// perplexities equal to 1e-4, but not bitwise identical rows.
#[test]
fn splitting_a_task_changes_no_sample() {
    let run = TinyRun::new();
    let ids = [
        "train-00000",
        "train-00003",
        "train-00007",
        "train-00010",
        "train-00011",
    ];
    let whole = evaluate(&run, &run.task("whole", "train", &ids));
    let mut parts = evaluate(&run, &run.task("part-0", "train", &ids[..2]));
    parts.extend(evaluate(&run, &run.task("part-1", "train", &ids[2..])));
    assert_eq!(whole.len(), 10);
    assert_eq!(parts.len(), whole.len());
    for (a, b) in whole.iter().zip(&parts) {
        assert_eq!((&a.id, &a.preamble), (&b.id, &b.preamble));
        assert_eq!(a.sample_texts, b.sample_texts, "{} {:?}", a.id, a.preamble);
        assert_eq!((a.n_correct, a.accuracy), (b.n_correct, b.accuracy));
        assert_eq!(a.target_tokens, b.target_tokens);
        assert!(
            (a.target_perplexity - b.target_perplexity).abs() <= 1e-4 * a.target_perplexity,
            "{}: {} vs {}",
            a.id,
            a.target_perplexity,
            b.target_perplexity
        );
    }
}

#[test]
fn bad_tasks_are_clear_errors() {
    let run = TinyRun::new();
    let cache = run.cache("cache");
    let mut slot = ModelSlot::new();
    let mut check = |task: &Task, wanted: &[&str]| {
        let err = evaluate_task(task, &cache, &mut slot, Device::Cpu, None)
            .unwrap_err()
            .to_string();
        for w in wanted {
            assert!(err.contains(w), "'{w}' not in: {err}");
        }
    };
    let task = run.task("t", "train", &["train-00001", "nope"]);
    check(
        &task,
        &[
            "no example with id 'nope'",
            "train split",
            &task.task_id,
            &run.location,
        ],
    );
    // Test ids are not train examples.
    check(
        &run.task("t", "train", &["test-00001"]),
        &["'test-00001'", "train split"],
    );
    let mut task = run.task("t", "train", &["train-00001"]);
    task.step = 9;
    check(&task, &["no published checkpoint at step 9"]);
    let mut task = run.task("t", "valid", &["train-00001"]);
    check(&task, &["unknown split 'valid'"]);
    task.split = "train".into();
    // The sampling settings come from the run's spec, checked as its
    // record is read: the error names the record and the key.
    run.edit_spec(|spec| spec["eval"]["samples"] = 0.into());
    check(
        &task,
        &["run.json", "eval.samples must be 1 to 1024, got 0"],
    );
    run.edit_spec(|spec| spec["eval"]["samples"] = 1.into());
    task.result_file = "../elsewhere.parquet".into();
    check(&task, &["not a path inside the run"]);
    task.result_file = "r.parquet".into();
    task.run = run.tmp.path().join("nowhere").display().to_string();
    check(&task, &["no such directory", "nowhere"]);
}

// ---- the worker against a mock coordinator -------------------------------

#[derive(Default)]
struct MockState {
    queue: VecDeque<Task>,
    lease_ttl_ms: u64,
    leases: usize,
    renewals: usize,
    completions: Vec<CompleteTaskRequest>,
    failures: Vec<FailTaskRequest>,
    /// Set when the first task is leased (to test stopping).
    stop_on_lease: Option<Arc<AtomicBool>>,
}

#[derive(Clone, Default)]
struct Mock(Arc<Mutex<MockState>>);

fn unused(what: &str) -> Status {
    Status::unimplemented(format!("mock coordinator: no {what}"))
}

#[tonic::async_trait]
impl Coordinator for Mock {
    async fn submit_job(
        &self,
        _: Request<SubmitJobRequest>,
    ) -> Result<Response<SubmitJobReply>, Status> {
        Err(unused("SubmitJob"))
    }
    async fn get_status(
        &self,
        _: Request<GetStatusRequest>,
    ) -> Result<Response<JobStatus>, Status> {
        Err(unused("GetStatus"))
    }
    async fn cancel_job(
        &self,
        _: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobReply>, Status> {
        Err(unused("CancelJob"))
    }
    async fn register_trainer(
        &self,
        _: Request<RegisterTrainerRequest>,
    ) -> Result<Response<RegisterTrainerReply>, Status> {
        Err(unused("RegisterTrainer"))
    }
    async fn rendezvous(
        &self,
        _: Request<RendezvousRequest>,
    ) -> Result<Response<RendezvousReply>, Status> {
        Err(unused("Rendezvous"))
    }
    async fn trainer_heartbeat(
        &self,
        _: Request<TrainerHeartbeatRequest>,
    ) -> Result<Response<TrainerHeartbeatReply>, Status> {
        Err(unused("TrainerHeartbeat"))
    }
    async fn report_checkpoint(
        &self,
        _: Request<ReportCheckpointRequest>,
    ) -> Result<Response<ReportCheckpointReply>, Status> {
        Err(unused("ReportCheckpoint"))
    }
    async fn trainer_finished(
        &self,
        _: Request<TrainerFinishedRequest>,
    ) -> Result<Response<TrainerFinishedReply>, Status> {
        Err(unused("TrainerFinished"))
    }
    async fn assign_trainer(
        &self,
        _: Request<premem_proto::v1::AssignTrainerRequest>,
    ) -> Result<Response<premem_proto::v1::AssignTrainerReply>, Status> {
        Err(unused("AssignTrainer"))
    }
    async fn lease_task(
        &self,
        request: Request<LeaseTaskRequest>,
    ) -> Result<Response<LeaseTaskReply>, Status> {
        assert_eq!(request.get_ref().evaluator, "test-worker");
        let mut state = self.0.lock().unwrap();
        let task = state.queue.pop_front();
        if task.is_some() {
            state.leases += 1;
            if let Some(stop) = &state.stop_on_lease {
                stop.store(true, Ordering::Relaxed);
            }
        }
        Ok(Response::new(LeaseTaskReply {
            task,
            lease_ttl_ms: state.lease_ttl_ms,
            retry_after_ms: 20,
        }))
    }
    async fn renew_lease(
        &self,
        _: Request<RenewLeaseRequest>,
    ) -> Result<Response<RenewLeaseReply>, Status> {
        let mut state = self.0.lock().unwrap();
        state.renewals += 1;
        Ok(Response::new(RenewLeaseReply {
            valid: true,
            lease_ttl_ms: state.lease_ttl_ms,
        }))
    }
    async fn complete_task(
        &self,
        request: Request<CompleteTaskRequest>,
    ) -> Result<Response<CompleteTaskReply>, Status> {
        self.0
            .lock()
            .unwrap()
            .completions
            .push(request.into_inner());
        Ok(Response::new(CompleteTaskReply {
            completion: Completion::Accepted as i32,
        }))
    }
    async fn fail_task(
        &self,
        request: Request<FailTaskRequest>,
    ) -> Result<Response<FailTaskReply>, Status> {
        self.0.lock().unwrap().failures.push(request.into_inner());
        Ok(Response::new(FailTaskReply {}))
    }
}

/// Serves `mock` on `address` with `token` until the runtime is dropped.
fn serve(mock: &Mock, address: SocketAddr, token: &str) -> tokio::runtime::Runtime {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let incoming = {
        let _guard = runtime.enter();
        tonic::transport::server::TcpIncoming::bind(address).unwrap()
    };
    let service = CoordinatorServer::with_interceptor(mock.clone(), RequireToken::new(token));
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    runtime
}

/// A loopback address nothing listens on (yet).
fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn options(run: &TinyRun, address: SocketAddr, token: &str, idle: Duration) -> WorkerOptions {
    WorkerOptions {
        coordinator: ClientConfig::new(format!("http://{address}"), token),
        name: "test-worker".into(),
        cache_dir: run.tmp.path().join("worker-cache"),
        cache_bytes: 1 << 30,
        device: Device::Cpu,
        kind: None,
        stop: Arc::new(AtomicBool::new(false)),
        idle_exit: Some(idle),
        hold_task: None,
    }
}

#[test]
fn the_worker_leases_evaluates_renews_and_reports_once_the_coordinator_is_up() {
    let run = TinyRun::new();
    let train = run.task(
        "train-0000",
        "train",
        &["train-00004", "train-00002", "train-00008"],
    );
    let test = run.task("test-0000", "test", &["test-00001", "test-00003"]);
    let bad = run.task("train-0001", "train", &["train-00000", "nope"]);
    let mock = Mock::default();
    {
        let mut state = mock.0.lock().unwrap();
        state.queue = [train.clone(), test.clone(), bad.clone()].into();
        // Renewed every 10 ms: several times per task.
        state.lease_ttl_ms = 30;
    }
    let address = free_address();
    let options = options(&run, address, "secret", Duration::from_millis(2500));
    let started = Instant::now();
    let worker = std::thread::spawn(move || run_worker(&options));
    // The coordinator comes up after the worker: it is retried.
    std::thread::sleep(Duration::from_millis(300));
    let _server = serve(&mock, address, "secret");
    let summary = worker.join().unwrap().unwrap();
    eprintln!("worker ran {:?}", started.elapsed());
    assert_eq!(
        summary,
        WorkerSummary {
            tasks_completed: 2,
            rows: 5,
            tasks_failed: 1,
            reports_ignored: 0,
        }
    );
    let state = mock.0.lock().unwrap();
    assert_eq!(state.leases, 3);
    assert!(state.renewals >= 1, "the lease was never renewed");
    assert_eq!(state.failures.len(), 1);
    let failure = &state.failures[0];
    assert_eq!(
        (failure.task_id.as_str(), failure.lease_id.as_str()),
        (bad.task_id.as_str(), bad.lease_id.as_str())
    );
    assert!(
        failure.message.contains("no example with id 'nope'"),
        "{}",
        failure.message
    );

    // The reported rows are those of the task (no preamble), as evaluate_task gives them.
    assert_eq!(state.completions.len(), 2);
    for (task, completion) in [&train, &test].into_iter().zip(&state.completions) {
        assert_eq!(completion.task_id, task.task_id);
        assert_eq!(completion.lease_id, task.lease_id);
        let written = read_parquet(&run.result_path(task)).unwrap();
        let expected: Vec<(String, f64, f64)> = evaluate(&run, task)
            .iter()
            .filter(|r| r.preamble.is_empty())
            .map(|r| (r.id.clone(), r.accuracy, r.target_perplexity))
            .collect();
        let reported: Vec<(String, f64, f64)> = completion
            .rows
            .iter()
            .map(|r| (r.example_id.clone(), r.accuracy, r.perplexity))
            .collect();
        assert_eq!(reported, expected);
        assert_eq!(
            written.iter().filter(|r| r.preamble.is_empty()).count(),
            task.example_ids.len()
        );
    }
}

#[test]
fn a_stopped_worker_finishes_its_task_first() {
    let run = TinyRun::new();
    let first = run.task("train-0000", "train", &["train-00004"]);
    let second = run.task("train-0001", "train", &["train-00005"]);
    let mock = Mock::default();
    let address = free_address();
    let options = options(&run, address, "secret", Duration::from_secs(30));
    {
        let mut state = mock.0.lock().unwrap();
        state.queue = [first.clone(), second].into();
        state.lease_ttl_ms = 10_000;
        state.stop_on_lease = Some(options.stop.clone());
    }
    let _server = serve(&mock, address, "secret");
    let started = Instant::now();
    let summary = run_worker(&options).unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(summary.tasks_completed, 1);
    let state = mock.0.lock().unwrap();
    assert_eq!(state.leases, 1);
    assert_eq!(state.completions[0].task_id, first.task_id);
    assert_eq!(state.queue.len(), 1);
}

#[test]
fn a_refused_token_ends_the_worker() {
    let run = TinyRun::new();
    let mock = Mock::default();
    let address = free_address();
    let _server = serve(&mock, address, "secret");
    let err = run_worker(&options(&run, address, "guess", Duration::from_secs(30)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("the token was refused"), "{err}");
    assert!(err.contains(&address.to_string()), "{err}");
}

#[test]
fn an_unreachable_coordinator_is_retried_until_idle_exit() {
    let run = TinyRun::new();
    let started = Instant::now();
    let summary = run_worker(&options(
        &run,
        free_address(),
        "secret",
        Duration::from_millis(800),
    ))
    .unwrap();
    assert_eq!(summary, WorkerSummary::default());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
}
