//! What the coordinator keeps in its state store, and its rebuild after a
//! restart. The run stores stay the truth for checkpoints and results
//! ([`crate::runs`]).
//!
//! ```text
//! <state>/jobs/<name>/spec.json        the job as submitted
//! <state>/jobs/<name>/generation.json  the newest trainer generation
//! <state>/jobs/<name>/cancelled        present once cancelled
//! <state>/leases/<task id>             an evaluation lease: its id and evaluator
//! ```

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use premem_core::spec::{JobSpec, SpecError};
use premem_core::{Store, StoreError};

use crate::runs::{RunStores, adopt_all_results, build_job, scan_checkpoints};
use crate::state::{Group, Job, Phase, State};

#[derive(Clone)]
pub struct Persist {
    store: Store,
}

/// The records of the evaluation leases, by task id.
const LEASES: &str = "leases";

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

    /// Records the lease of a task (`leases/<task id>`), so that a
    /// restarted coordinator still knows who evaluates it (issue 39, item
    /// 13).
    pub async fn save_lease(
        &self,
        task_id: &str,
        lease: &str,
        evaluator: &str,
    ) -> Result<(), StoreError> {
        let json = serde_json::json!({ "lease": lease, "evaluator": evaluator }).to_string();
        self.store
            .put(&format!("{LEASES}/{task_id}"), json.into_bytes())
            .await
    }

    /// Drops the record of a task's lease (the task is done, or given back).
    pub async fn drop_lease(&self, task_id: &str) {
        if let Err(e) = self.store.delete(&format!("{LEASES}/{task_id}")).await {
            tracing::warn!(task = task_id, error = %e, "cannot drop the lease record");
        }
    }

    /// Takes back the recorded leases of restored tasks not done, each for
    /// a full lease TTL from now; drops the records of the others.
    async fn restore_leases(&self, state: &Mutex<State>) -> Result<(), StoreError> {
        for task_id in self.store.list_files(LEASES).await? {
            let file = format!("{LEASES}/{task_id}");
            let record: serde_json::Value =
                serde_json::from_slice(&self.store.get(&file).await?).unwrap_or_default();
            let (Some(lease), Some(evaluator)) = (
                record.get("lease").and_then(|v| v.as_str()),
                record.get("evaluator").and_then(|v| v.as_str()),
            ) else {
                self.drop_lease(&task_id).await;
                continue;
            };
            let taken = state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .restore_lease(&task_id, lease, evaluator, Instant::now());
            if !taken {
                self.drop_lease(&task_id).await;
            }
        }
        Ok(())
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
            let Some(mut job) = self.restore_job(&name).await? else {
                continue;
            };
            let Ok(()) = restore_early_stop(&mut job, runs).await else {
                continue;
            };
            let output = job.spec.run.output.clone();
            let inserted = state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert_job(job);
            // A job the state refuses now (its run directory another job's,
            // from before that was checked) stays on disk, unserved.
            if let Err(refusal) = inserted {
                tracing::error!(job = name, ?refusal, "job not restored");
                continue;
            }
            restored += 1;
            tracing::info!(job = name, output, "job restored");
        }
        scan_checkpoints(state, runs).await;
        adopt_all_results(state, runs).await;
        self.restore_leases(state).await?;
        Ok(restored)
    }

    /// The job `name` as the state store has it; `None` when it has no
    /// spec or cannot be rebuilt.
    async fn restore_job(&self, name: &str) -> Result<Option<Job>, StoreError> {
        let Some((spec, spec_json)) = self.read_spec(name).await? else {
            return Ok(None);
        };
        let built = tokio::task::spawn_blocking(move || build_job(spec, spec_json))
            .await
            .expect("build_job does not panic");
        let mut job = match built {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(job = name, error = %e, "job cannot be rebuilt: skipped");
                return Ok(None);
            }
        };
        if self.store.exists(&job_file(name, "cancelled")).await? {
            job.phase = Phase::Cancelled;
        }
        if let Some(generation) = self.read_generation(name).await? {
            job.group = Group::resumed(generation, job.world_size(), Instant::now());
        }
        Ok(Some(job))
    }

    /// The stored spec, parsed and validated, and its text.
    async fn read_spec(&self, name: &str) -> Result<Option<(JobSpec, String)>, StoreError> {
        let file = job_file(name, "spec.json");
        if !self.store.exists(&file).await? {
            return Ok(None);
        }
        let url = self.store.url_of(&file);
        let text = match String::from_utf8(self.store.get(&file).await?.to_vec()) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(file = url, error = %e, "unreadable job spec: job skipped");
                return Ok(None);
            }
        };
        let unreadable = match JobSpec::from_json(&text, Path::new(&url)) {
            Ok(spec) => return Ok(Some((spec, text))),
            Err(SpecError::Job { error, .. }) => {
                tracing::error!(job = name, %error, "job cannot be rebuilt: skipped");
                return Ok(None);
            }
            Err(SpecError::Parse { message, .. }) => message,
            Err(other) => other.to_string(),
        };
        tracing::error!(file = url, error = %unreadable, "unreadable job spec: job skipped");
        Ok(None)
    }

    async fn read_generation(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let file = job_file(name, "generation.json");
        if !self.store.exists(&file).await? {
            return Ok(None);
        }
        let value: serde_json::Value =
            serde_json::from_slice(&self.store.get(&file).await?).unwrap_or_default();
        Ok(value.get("generation").and_then(|g| g.as_u64()))
    }
}

/// An early stop of `[advice] stop_when` recorded in the job's run store
/// (`early-stop.json`): the job stops there again instead of training on.
/// `Err`: the store cannot say (logged; the job is skipped, as one that
/// cannot be rebuilt).
async fn restore_early_stop(job: &mut Job, runs: &RunStores) -> Result<(), ()> {
    let read = match runs.get(&job.spec.run.output) {
        Ok(store) => premem_core::storage::checkpoint::read_early_stop(&store).await,
        Err(e) => Err(e),
    };
    match read {
        Ok(Some(record)) => {
            if let Some(step) = record.stopped_at_step.filter(|s| *s <= job.total_steps) {
                job.total_steps = step;
            }
            job.early_stop = Some(record.reason);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => {
            tracing::error!(job = job.name, error = %e, "cannot read the job's early-stop record: job skipped");
            Err(())
        }
    }
}
