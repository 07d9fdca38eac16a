//! The gRPC service: validates each request, applies it to the [`State`]
//! under its lock (never across an await), and does the object-store work
//! (persisting jobs, checking result files, finding checkpoints) outside it.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use premem_core::spec::JobSpec;
use premem_proto::v1::{self, coordinator_server::Coordinator};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::metrics::Metrics;
use crate::persist::Persist;
use crate::runs::{self, RunStores, RunTask, build_job};
use crate::state::{
    Action, Assignment, Completed, Job, Phase, Refusal, Rendezvous, Row, State, TaskKey,
};

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Status {
        match refusal {
            Refusal::NotFound(m) => Status::not_found(m),
            Refusal::Invalid(m) => Status::invalid_argument(m),
            Refusal::Precondition(m) => Status::failed_precondition(m),
            Refusal::AlreadyExists(m) => Status::already_exists(m),
        }
    }
}

pub struct Service {
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) runs: RunStores,
    pub(crate) persist: Persist,
    pub(crate) metrics: Arc<Metrics>,
    /// Wakes the scanner (a job was submitted, a rank finished, or a
    /// reported checkpoint is not in the store yet).
    pub(crate) scan: Arc<Notify>,
    pub(crate) retry_after: Duration,
}

impl Service {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adopts the result files of new tasks without holding up the reply.
    fn adopt_in_background(&self, tasks: Vec<RunTask>) {
        if tasks.is_empty() {
            return;
        }
        let (state, runs) = (self.state.clone(), self.runs.clone());
        tokio::spawn(async move { runs::adopt_new_results(&state, &runs, tasks).await });
    }

    fn internal(&self, what: &str, e: impl std::fmt::Display) -> Status {
        tracing::error!(error = %e, "{what}");
        Status::internal(format!("{what}: {e}"))
    }
}

/// The status of a job as the API reports it.
pub fn job_status(job: &Job) -> v1::JobStatus {
    use v1::JobState;
    let (state, message) = match &job.phase {
        Phase::Cancelled => (JobState::Cancelled, "cancelled".to_string()),
        Phase::Failed(m) => (JobState::Failed, m.clone()),
        Phase::Active if job.complete() => (JobState::Done, String::new()),
        Phase::Active if job.trained => (
            JobState::Evaluating,
            format!(
                "{} evaluation tasks left",
                job.tasks.len() - job.done_tasks()
            ),
        ),
        Phase::Active if job.group.running => (JobState::Training, String::new()),
        Phase::Active => (
            JobState::Waiting,
            format!(
                "{} of {} trainer ranks registered (generation {})",
                job.group.members.len(),
                job.world_size(),
                job.group.generation
            ),
        ),
    };
    let checkpoints = job
        .checkpoint_steps()
        .into_iter()
        .map(|step| {
            let tasks: Vec<_> = job.tasks.iter().filter(|(k, _)| k.step == step).collect();
            let pm = job.pm_by_step.get(&step);
            v1::CheckpointStatus {
                step,
                tasks_total: tasks.len() as u32,
                tasks_done: tasks
                    .iter()
                    .filter(|(_, t)| t.state == crate::state::TaskState::Done)
                    .count() as u32,
                pm_accuracy: pm.and_then(|p| p.pm),
                train_accuracy: pm.map(|p| p.train_accuracy),
                memorized_fraction: pm.map(|p| p.memorized_fraction),
                test_accuracy: job.test_accuracy.get(&step).copied(),
            }
        })
        .collect();
    v1::JobStatus {
        job: job.name.clone(),
        state: state as i32,
        message,
        output: job.spec.run.output.clone(),
        step: job.step(),
        total_steps: job.total_steps,
        world_size: job.world_size(),
        ranks_alive: if job.group.running {
            job.group.members.len() as u32
        } else {
            0
        },
        generation: job.group.generation,
        tasks_pending: job.pending_tasks() as u32,
        tasks_leased: job.leased_tasks() as u32,
        tasks_done: job.done_tasks() as u32,
        checkpoints,
    }
}

fn rows_of(request: &v1::CompleteTaskRequest) -> Vec<Row> {
    request
        .rows
        .iter()
        .map(|r| Row {
            id: r.example_id.clone(),
            accuracy: r.accuracy,
            perplexity: r.perplexity,
        })
        .collect()
}

#[tonic::async_trait]
impl Coordinator for Service {
    async fn submit_job(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::SubmitJobReply>, Status> {
        let spec_json = request.into_inner().spec_json;
        // Parsed and validated once, here: the rest of the coordinator
        // trusts the spec, and keeps the JSON as submitted.
        let spec = JobSpec::from_json(&spec_json, Path::new("spec_json"))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let name = spec.run.name.clone();
        let job = tokio::task::spawn_blocking(move || build_job(spec, spec_json))
            .await
            .map_err(|e| self.internal("building the job", e))?
            .map_err(|m| Status::invalid_argument(format!("job '{name}': {m}")))?;
        // The run's store must be writable with this coordinator's
        // credentials: a wrong key fails the submission, not the run later.
        let store = self
            .runs
            .get(&job.spec.run.output)
            .map_err(|e| Status::invalid_argument(format!("job '{name}': {e}")))?;
        store
            .check_writable()
            .await
            .map_err(|e| Status::failed_precondition(format!("job '{name}': {e}")))?;
        let spec_json = job.spec_json.clone();
        let created = self.lock().insert_job(job)?;
        if created {
            self.persist
                .save_spec(&name, &spec_json)
                .await
                .map_err(|e| self.internal("persisting the job", e))?;
            tracing::info!(job = name, "job submitted");
            self.scan.notify_one();
        }
        Ok(Response::new(v1::SubmitJobReply { job: name, created }))
    }

    async fn get_status(
        &self,
        request: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::JobStatus>, Status> {
        let state = self.lock();
        Ok(Response::new(job_status(
            state.job(&request.get_ref().job)?,
        )))
    }

    async fn cancel_job(
        &self,
        request: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::CancelJobReply>, Status> {
        let name = &request.get_ref().job;
        self.lock().cancel(name)?;
        self.persist
            .save_cancelled(name)
            .await
            .map_err(|e| self.internal("persisting the cancellation", e))?;
        tracing::info!(job = name, "job cancelled");
        Ok(Response::new(v1::CancelJobReply {}))
    }

    async fn register_trainer(
        &self,
        request: Request<v1::RegisterTrainerRequest>,
    ) -> Result<Response<v1::RegisterTrainerReply>, Status> {
        let r = request.into_inner();
        if r.nccl_unique_id.len() > 1024 || r.ring_address.len() > 256 {
            return Err(Status::invalid_argument(
                "ring_address or nccl_unique_id too long",
            ));
        }
        let backend = v1::Backend::try_from(r.backend).unwrap_or(v1::Backend::Unspecified);
        match backend {
            v1::Backend::Ring if r.ring_address.parse::<std::net::SocketAddr>().is_err() => {
                return Err(Status::invalid_argument(format!(
                    "ring_address '{}' is not host:port",
                    r.ring_address
                )));
            }
            v1::Backend::Nccl if r.rank == 0 && r.nccl_unique_id.is_empty() => {
                return Err(Status::invalid_argument(
                    "rank 0 of an NCCL group must send its nccl_unique_id",
                ));
            }
            v1::Backend::Unspecified => {
                return Err(Status::invalid_argument("backend must be RING or NCCL"));
            }
            _ => {}
        }
        let registered = self.lock().register(
            &r.job,
            r.rank,
            &r.trainer,
            r.ring_address,
            r.nccl_unique_id,
            Instant::now(),
        )?;
        tracing::info!(
            job = r.job,
            rank = r.rank,
            generation = registered.generation,
            "trainer registered"
        );
        self.persist
            .save_generation(&r.job, registered.generation)
            .await
            .map_err(|e| self.internal("persisting the generation", e))?;
        Ok(Response::new(v1::RegisterTrainerReply {
            world_size: registered.world_size,
            generation: registered.generation,
            spec_json: registered.spec_json,
        }))
    }

    async fn rendezvous(
        &self,
        request: Request<v1::RendezvousRequest>,
    ) -> Result<Response<v1::RendezvousReply>, Status> {
        let r = request.get_ref();
        if r.nccl_unique_id.len() > 1024 {
            return Err(Status::invalid_argument("nccl_unique_id too long"));
        }
        let nccl = (r.backend() == v1::Backend::Nccl).then_some(r.nccl_unique_id.as_slice());
        let reply = match self.lock().rendezvous(
            &r.job,
            r.rank,
            &r.trainer,
            r.generation,
            nccl,
            Instant::now(),
        )? {
            Rendezvous::Waiting => v1::RendezvousReply::default(),
            Rendezvous::Ready {
                ring_addresses,
                nccl_id,
            } => v1::RendezvousReply {
                ready: true,
                ring_addresses,
                nccl_unique_id: nccl_id,
            },
        };
        Ok(Response::new(reply))
    }

    async fn trainer_heartbeat(
        &self,
        request: Request<v1::TrainerHeartbeatRequest>,
    ) -> Result<Response<v1::TrainerHeartbeatReply>, Status> {
        let r = request.get_ref();
        let (action, generation) = self.lock().heartbeat(
            &r.job,
            r.rank,
            &r.trainer,
            r.generation,
            r.step,
            Instant::now(),
        )?;
        let action = match action {
            Action::Continue => v1::TrainerAction::Continue,
            Action::Regroup => v1::TrainerAction::Regroup,
            Action::Stop => v1::TrainerAction::Stop,
        };
        Ok(Response::new(v1::TrainerHeartbeatReply {
            action: action as i32,
            generation,
        }))
    }

    /// The reported step is taken at once: once its manifest is in the run's
    /// store its tasks are added (see [`runs::checkpoint_reported`]); a
    /// manifest that is not there, or a store that cannot say, is left to
    /// the scanner's listing, which stays the truth.
    async fn report_checkpoint(
        &self,
        request: Request<v1::ReportCheckpointRequest>,
    ) -> Result<Response<v1::ReportCheckpointReply>, Status> {
        let r = request.get_ref();
        let run = {
            let state = self.lock();
            let job = state.job(&r.job)?;
            State::rank_in_range(job, r.rank)?;
            job.spec.run.output.clone()
        };
        tracing::debug!(job = r.job, step = r.step, "checkpoint reported");
        match runs::checkpoint_reported(&self.state, &self.runs, &r.job, &run, r.step).await {
            Ok(Some(tasks)) => self.adopt_in_background(tasks),
            Ok(None) => self.scan.notify_one(),
            Err(e) => {
                tracing::warn!(job = r.job, step = r.step, error = %e, "cannot check the reported checkpoint: left to the scan");
                self.scan.notify_one();
            }
        }
        Ok(Response::new(v1::ReportCheckpointReply {}))
    }

    async fn trainer_finished(
        &self,
        request: Request<v1::TrainerFinishedRequest>,
    ) -> Result<Response<v1::TrainerFinishedReply>, Status> {
        let r = request.get_ref();
        self.lock()
            .trainer_finished(&r.job, r.rank, r.generation, r.step)?;
        tracing::info!(job = r.job, rank = r.rank, "trainer finished");
        self.scan.notify_one();
        Ok(Response::new(v1::TrainerFinishedReply {}))
    }

    async fn assign_trainer(
        &self,
        request: Request<v1::AssignTrainerRequest>,
    ) -> Result<Response<v1::AssignTrainerReply>, Status> {
        let trainer = &request.get_ref().trainer;
        let assignment = self.lock().assign(trainer, Instant::now())?;
        Ok(Response::new(match assignment {
            Assignment::Run { job, rank } => v1::AssignTrainerReply {
                assigned: true,
                job,
                rank,
                retry_after_ms: 0,
            },
            Assignment::Wait => v1::AssignTrainerReply {
                assigned: false,
                retry_after_ms: self.retry_after.as_millis() as u64,
                ..Default::default()
            },
        }))
    }

    async fn lease_task(
        &self,
        request: Request<v1::LeaseTaskRequest>,
    ) -> Result<Response<v1::LeaseTaskReply>, Status> {
        let started = Instant::now();
        let evaluator = &request.get_ref().evaluator;
        if evaluator.len() > 256 {
            return Err(Status::invalid_argument("evaluator name too long"));
        }
        let mut state = self.lock();
        let ttl = state.timing.lease_ttl;
        let leased = state.lease(evaluator, Instant::now());
        let reply = match leased {
            None => v1::LeaseTaskReply {
                task: None,
                lease_ttl_ms: ttl.as_millis() as u64,
                retry_after_ms: self.retry_after.as_millis() as u64,
            },
            Some(leased) => {
                let job = &state.jobs[&leased.job];
                let key: TaskKey = leased.key;
                v1::LeaseTaskReply {
                    task: Some(v1::Task {
                        task_id: key.id(&leased.job),
                        lease_id: leased.lease,
                        job: leased.job.clone(),
                        run: job.spec.run.output.clone(),
                        step: key.step,
                        split: key.split.name().to_string(),
                        example_ids: leased.examples,
                        result_file: key.result_file(),
                    }),
                    lease_ttl_ms: ttl.as_millis() as u64,
                    retry_after_ms: 0,
                }
            }
        };
        drop(state);
        self.metrics
            .lease_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(Response::new(reply))
    }

    async fn renew_lease(
        &self,
        request: Request<v1::RenewLeaseRequest>,
    ) -> Result<Response<v1::RenewLeaseReply>, Status> {
        let r = request.get_ref();
        let mut state = self.lock();
        let valid = state.renew(&r.lease_id, &r.task_id, Instant::now())?;
        Ok(Response::new(v1::RenewLeaseReply {
            valid,
            lease_ttl_ms: state.timing.lease_ttl.as_millis() as u64,
        }))
    }

    async fn complete_task(
        &self,
        request: Request<v1::CompleteTaskRequest>,
    ) -> Result<Response<v1::CompleteTaskReply>, Status> {
        let r = request.get_ref();
        let rows = rows_of(r);
        let (run, file) = self.lock().check_rows(&r.task_id, &rows)?;
        // The rows count only once their file is in the store.
        let exists = match self.runs.get(&run) {
            Ok(store) => store.exists(&file).await,
            Err(e) => Err(e),
        }
        .map_err(|e| self.internal("checking the result file", e))?;
        if !exists {
            return Err(Status::failed_precondition(format!(
                "task '{}': its result file {file} is not in the run's store; write it before completing",
                r.task_id
            )));
        }
        let count = rows.len() as u64;
        let completed = self
            .lock()
            .complete(&r.lease_id, &r.task_id, rows, Instant::now())?;
        let completion = match completed {
            Completed::Accepted => {
                self.metrics.rows_total.inc_by(count);
                v1::Completion::Accepted
            }
            Completed::Duplicate => v1::Completion::Duplicate,
            Completed::Expired => v1::Completion::Expired,
        };
        self.metrics.count_completion(completed);
        tracing::debug!(task = r.task_id, ?completed, "completion");
        Ok(Response::new(v1::CompleteTaskReply {
            completion: completion as i32,
        }))
    }

    async fn fail_task(
        &self,
        request: Request<v1::FailTaskRequest>,
    ) -> Result<Response<v1::FailTaskReply>, Status> {
        let r = request.get_ref();
        let message: String = r.message.chars().take(4000).collect();
        self.lock()
            .fail(&r.lease_id, &r.task_id, &message, Instant::now())?;
        Ok(Response::new(v1::FailTaskReply {}))
    }
}
