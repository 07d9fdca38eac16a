//! What the coordinator keeps in its state store, and its rebuild after a
//! restart. The run stores stay the truth for checkpoints and results: a
//! task is done exactly when its result file is there.
//!
//! ```text
//! <state>/jobs/<name>/spec.json        the job as submitted
//! <state>/jobs/<name>/generation.json  the newest trainer generation
//! <state>/jobs/<name>/cancelled        present once cancelled
//! ```

use std::sync::Mutex;

use premem_core::spec::JobSpec;
use premem_core::{Store, StoreError};

use crate::service::{RunStores, build_job, scan_checkpoints};
use crate::state::{Group, Phase, Row, State, TaskKey, TaskState};

#[derive(Clone)]
pub struct Persist {
    store: Store,
}

fn job_file(name: &str, file: &str) -> String {
    format!("jobs/{name}/{file}")
}

impl Persist {
    pub fn new(store: Store) -> Persist {
        Persist { store }
    }

    pub fn url(&self) -> &str {
        self.store.url()
    }

    pub async fn save_spec(&self, name: &str, spec_json: &str) -> Result<(), StoreError> {
        self.store
            .put(&job_file(name, "spec.json"), spec_json.as_bytes().to_vec())
            .await
    }

    pub async fn save_cancelled(&self, name: &str) -> Result<(), StoreError> {
        self.store
            .put(&job_file(name, "cancelled"), b"cancelled\n".to_vec())
            .await
    }

    pub async fn save_generation(&self, name: &str, generation: u64) -> Result<(), StoreError> {
        let json = serde_json::json!({ "generation": generation }).to_string();
        self.store
            .put(&job_file(name, "generation.json"), json.into_bytes())
            .await
    }

    /// Rebuilds the jobs of an earlier coordinator: their specs, cancelled
    /// marks and generations, their published checkpoints, and the tasks
    /// whose result files exist (done, with their rows). A job that cannot
    /// be rebuilt is skipped with an error in the log.
    pub async fn restore(
        &self,
        state: &Mutex<State>,
        runs: &RunStores,
    ) -> Result<usize, StoreError> {
        let mut restored = 0;
        for name in self.store.list_dirs("jobs").await? {
            let spec_file = job_file(&name, "spec.json");
            if !self.store.exists(&spec_file).await? {
                continue;
            }
            let bytes = self.store.get(&spec_file).await?;
            let spec: JobSpec = match serde_json::from_slice(&bytes) {
                Ok(spec) => spec,
                Err(e) => {
                    tracing::error!(file = self.store.url_of(&spec_file), error = %e, "unreadable job spec: job skipped");
                    continue;
                }
            };
            let mut job = match tokio::task::spawn_blocking(move || build_job(spec))
                .await
                .expect("build_job does not panic")
            {
                Ok(job) => job,
                Err(e) => {
                    tracing::error!(job = name, error = %e, "job cannot be rebuilt: skipped");
                    continue;
                }
            };
            if self.store.exists(&job_file(&name, "cancelled")).await? {
                job.phase = Phase::Cancelled;
            }
            let generation_file = job_file(&name, "generation.json");
            if self.store.exists(&generation_file).await? {
                let value: serde_json::Value =
                    serde_json::from_slice(&self.store.get(&generation_file).await?)
                        .unwrap_or_default();
                if let Some(g) = value.get("generation").and_then(|g| g.as_u64()) {
                    job.group = Group::resumed(g, job.world_size(), std::time::Instant::now());
                }
            }
            let output = job.spec.run.output.clone();
            state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert_job(job)
                .map_err(|r| StoreError::Corrupt {
                    url: self.store.url_of(&spec_file),
                    message: format!("{r:?}"),
                })?;
            restored += 1;
            tracing::info!(job = name, output, "job restored");
        }
        scan_checkpoints(state, runs).await;
        self.restore_results(state, runs).await;
        Ok(restored)
    }

    /// Marks done every task whose result file is in its run's store.
    async fn restore_results(&self, state: &Mutex<State>, runs: &RunStores) {
        let todo: Vec<(String, String, TaskKey)> = {
            let state = state.lock().unwrap_or_else(|p| p.into_inner());
            state
                .jobs
                .values()
                .flat_map(|job| {
                    job.tasks
                        .keys()
                        .map(|k| (job.name.clone(), job.spec.run.output.clone(), *k))
                })
                .collect()
        };
        let found = adopt_results(state, runs, todo).await;
        tracing::info!(tasks = found, "results found in the run stores");
    }
}

/// Marks done each of the `(job, run output, task)` whose result file is
/// already in its run's store (written before this coordinator knew the task:
/// an earlier life of it, or another coordinator) and matches the task's
/// examples; returns how many. Unreadable or mismatched files are left to be
/// evaluated again.
pub(crate) async fn adopt_results(
    state: &Mutex<State>,
    runs: &RunStores,
    todo: Vec<(String, String, TaskKey)>,
) -> usize {
    let mut found = 0;
    for (name, output, key) in todo {
        let open = {
            let state = state.lock().unwrap_or_else(|p| p.into_inner());
            state
                .jobs
                .get(&name)
                .and_then(|j| j.tasks.get(&key))
                .is_some_and(|t| !matches!(t.state, TaskState::Done))
        };
        if !open {
            continue;
        }
        let file = key.result_file();
        let Ok(run) = runs.get(&output) else {
            continue;
        };
        let rows = match run.exists(&file).await {
            Ok(true) => match run.get(&file).await {
                Ok(bytes) => premem_core::results::from_parquet(bytes, &run.url_of(&file)),
                Err(e) => {
                    tracing::warn!(file = run.url_of(&file), error = %e, "unreadable result file: task evaluated again");
                    continue;
                }
            },
            _ => continue,
        };
        let rows: Vec<Row> = match rows {
            Ok(rows) => rows
                .into_iter()
                .filter(|r| r.preamble.is_empty())
                .map(|r| Row {
                    id: r.id,
                    accuracy: r.accuracy,
                    perplexity: r.target_perplexity,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable result file: task evaluated again");
                continue;
            }
        };
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        let job = state.jobs.get_mut(&name).expect("listed above");
        match job.adopt_result(key, rows) {
            Ok(()) => found += 1,
            Err(e) => {
                tracing::warn!(task = key.id(&name), refusal = ?e, "result file does not match its task: evaluated again");
            }
        }
    }
    found
}
