//! The gRPC service: validates each request ([`validate`]), applies it to
//! the [`State`] under its lock (never across an await), and does the
//! object-store work (persisting jobs, checking result files, finding
//! checkpoints) outside it. Errors become statuses in one place
//! ([`error`]); answers take their wire form in [`reply`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use premem_core::spec::JobSpec;
use premem_proto::v1::{self, coordinator_server::Coordinator};
use premem_proto::{Role, require};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::membership::MembershipKey;
use crate::metrics::Metrics;
use crate::persist::Persist;
use crate::runs::{self, RunStores, RunTask, build_job};
use crate::state::{Completed, Job, Refusal, State, check_task_rows};

pub mod error;
pub mod prefixes;
pub mod reply;
pub mod urls;
pub mod validate;

pub use error::ServiceError;

/// How long a submission may spend reading its datasets (a slow network
/// file system; a regular file of at most 1 GiB reads in seconds).
const DATASET_TIMEOUT: Duration = Duration::from_secs(120);
pub use reply::job_status;

pub struct Service {
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) runs: RunStores,
    pub(crate) persist: Persist,
    pub(crate) metrics: Arc<Metrics>,
    /// Wakes the scanner (a job was submitted, a rank finished, or a
    /// reported checkpoint is not in the store yet).
    pub(crate) scan: Arc<Notify>,
    pub(crate) retry_after: Duration,
    /// Signs and checks the trainer ranks' member secrets.
    pub(crate) membership: MembershipKey,
    /// Where submitted jobs may read and write.
    pub(crate) prefixes: prefixes::AllowedPrefixes,
    /// Where a submitted job's tracker URL may point.
    pub(crate) urls: urls::AllowedUrls,
}

impl Service {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Builds the job on a blocking thread (it reads the datasets).
    async fn build(&self, spec: JobSpec, spec_json: String) -> Result<Job, ServiceError> {
        let name = spec.run.name.clone();
        let reading = tokio::task::spawn_blocking(move || build_job(spec, spec_json));
        tokio::time::timeout(DATASET_TIMEOUT, reading)
            .await
            .map_err(|_| {
                Refusal::Invalid(format!(
                    "job '{name}': its datasets were not read within {} s",
                    DATASET_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| ServiceError::internal("building the job", e))?
            .map_err(|e| Refusal::Invalid(format!("job '{name}': {e}")).into())
    }

    /// The run's store must be writable with this coordinator's
    /// credentials: a wrong key fails the submission, not the run later.
    async fn check_run_writable(&self, name: &str, run: &str) -> Result<(), Refusal> {
        let store = self
            .runs
            .get(run)
            .map_err(|e| Refusal::Invalid(format!("job '{name}': {e}")))?;
        store
            .check_writable()
            .await
            .map_err(|e| Refusal::Precondition(format!("job '{name}': {e}")))
    }

    /// The rows of a completion are its result file's, read from the run's
    /// store and checked against the task ([`runs::result_rows`]); the rows
    /// the request carries must be the same, or it is refused: an RPC
    /// cannot claim values the file does not hold.
    async fn rows_of_result_file(
        &self,
        task_id: &str,
        run: &str,
        key: crate::state::TaskKey,
        claimed: &[crate::state::Row],
    ) -> Result<Vec<crate::state::Row>, ServiceError> {
        let store = self
            .runs
            .get(run)
            .map_err(|e| ServiceError::internal("opening the run's store", e))?;
        let rows = match runs::result_rows(&store, key).await {
            Ok(Some(rows)) => rows,
            Ok(None) => {
                return Err(Refusal::Precondition(format!(
                    "task '{task_id}': its result file {} is not in the run's store; write it before completing",
                    key.result_file()
                ))
                .into());
            }
            Err(e) => return Err(Refusal::Invalid(format!("task '{task_id}': {e}")).into()),
        };
        let same = rows.len() == claimed.len()
            && rows.iter().zip(claimed).all(|(a, b)| {
                a.id == b.id
                    && a.accuracy.to_bits() == b.accuracy.to_bits()
                    && a.perplexity.to_bits() == b.perplexity.to_bits()
            });
        if !same {
            return Err(Refusal::Invalid(format!(
                "task '{task_id}': the rows sent are not those of its result file {}",
                key.result_file()
            ))
            .into());
        }
        Ok(rows)
    }

    /// A trainer rank's request must come from the member of `rank` in
    /// `generation`: it presents that member's secret
    /// ([`crate::membership`]).
    fn check_member(
        &self,
        state: &State,
        job: &str,
        rank: u32,
        generation: u64,
        secret: &str,
    ) -> Result<(), Refusal> {
        State::rank_in_range(state.job(job)?, rank)?;
        self.membership.check(job, rank, generation, secret)
    }

    /// Adopts the result files of new tasks without holding up the reply.
    fn adopt_in_background(&self, tasks: Vec<RunTask>) {
        if tasks.is_empty() {
            return;
        }
        let (state, runs) = (self.state.clone(), self.runs.clone());
        tokio::spawn(async move { runs::adopt_new_results(&state, &runs, tasks).await });
    }
}

/// Refuses a job that does not fit the GPUs its spec declares
/// (`train.gpu_memory`) before any trainer loads a weight; reads the model's
/// config.json, so off the runtime threads.
async fn check_fits(spec: JobSpec) -> Result<JobSpec, ServiceError> {
    tokio::task::spawn_blocking(move || {
        premem_core::spec::plan::check_declared(&spec)
            .map(|_| spec)
            .map_err(|e| Refusal::Precondition(e.to_string()).into())
    })
    .await
    .map_err(|e| ServiceError::internal("planning the job's memory", e))?
}

#[tonic::async_trait]
impl Coordinator for Service {
    async fn submit_job(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::SubmitJobReply>, Status> {
        require(&request, Role::Submit, "SubmitJob")?;
        let spec_json = request.into_inner().spec_json;
        let spec = validate::spec(&spec_json)?;
        self.prefixes.check(&spec)?;
        self.urls.check(&spec)?;
        let name = spec.run.name.clone();
        let spec = check_fits(spec).await?;
        let job = self.build(spec, spec_json).await?;
        self.check_run_writable(&name, &job.spec.run.output).await?;
        let spec_json = job.spec_json.clone();
        let created = self.lock().insert_job(job)?;
        if created {
            self.persist
                .save_spec(&name, &spec_json)
                .await
                .map_err(|e| ServiceError::internal("persisting the job", e))?;
            tracing::info!(job = name, "job submitted");
            self.scan.notify_one();
        }
        Ok(Response::new(v1::SubmitJobReply { job: name, created }))
    }

    async fn get_status(
        &self,
        request: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::JobStatus>, Status> {
        require(&request, Role::Read, "GetStatus")?;
        let state = self.lock();
        Ok(Response::new(job_status(
            state.job(&request.get_ref().job)?,
        )))
    }

    async fn cancel_job(
        &self,
        request: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::CancelJobReply>, Status> {
        require(&request, Role::Submit, "CancelJob")?;
        let name = &request.get_ref().job;
        self.lock().cancel(name)?;
        self.persist
            .save_cancelled(name)
            .await
            .map_err(|e| ServiceError::internal("persisting the cancellation", e))?;
        tracing::info!(job = name, "job cancelled");
        Ok(Response::new(v1::CancelJobReply {}))
    }

    async fn register_trainer(
        &self,
        request: Request<v1::RegisterTrainerRequest>,
    ) -> Result<Response<v1::RegisterTrainerReply>, Status> {
        require(&request, Role::Trainer, "RegisterTrainer")?;
        let r = request.into_inner();
        validate::registration(&r)?;
        validate::peer_name("trainer", &r.trainer)?;
        let registered = {
            let mut state = self.lock();
            let now = Instant::now();
            let current = state.job(&r.job)?.group.generation;
            let proven = (r.generation == current
                && self
                    .membership
                    .holds(&r.job, r.rank, current, &r.member_secret))
            .then_some(current);
            state.check_replacement(&r.job, r.rank, proven, now)?;
            state.register(
                &r.job,
                r.rank,
                &r.trainer,
                r.ring_address,
                r.nccl_unique_id,
                now,
            )?
        };
        tracing::info!(
            job = r.job,
            rank = r.rank,
            generation = registered.generation,
            "trainer registered"
        );
        self.persist
            .save_generation(&r.job, registered.generation)
            .await
            .map_err(|e| ServiceError::internal("persisting the generation", e))?;
        Ok(Response::new(v1::RegisterTrainerReply {
            world_size: registered.world_size,
            generation: registered.generation,
            spec_json: registered.spec_json,
            member_secret: self
                .membership
                .secret(&r.job, r.rank, registered.generation),
        }))
    }

    async fn rendezvous(
        &self,
        request: Request<v1::RendezvousRequest>,
    ) -> Result<Response<v1::RendezvousReply>, Status> {
        require(&request, Role::Trainer, "Rendezvous")?;
        let r = request.get_ref();
        let nccl = validate::rendezvous_nccl(r)?;
        validate::peer_name("trainer", &r.trainer)?;
        let mut state = self.lock();
        self.check_member(&state, &r.job, r.rank, r.generation, &r.member_secret)?;
        let rendezvous = state.rendezvous(
            &r.job,
            r.rank,
            &r.trainer,
            r.generation,
            nccl,
            Instant::now(),
        )?;
        Ok(Response::new(reply::rendezvous(rendezvous)))
    }

    async fn trainer_heartbeat(
        &self,
        request: Request<v1::TrainerHeartbeatRequest>,
    ) -> Result<Response<v1::TrainerHeartbeatReply>, Status> {
        require(&request, Role::Trainer, "TrainerHeartbeat")?;
        let r = request.get_ref();
        validate::peer_name("trainer", &r.trainer)?;
        let mut state = self.lock();
        self.check_member(&state, &r.job, r.rank, r.generation, &r.member_secret)?;
        let (action, generation) = state.heartbeat(
            &r.job,
            r.rank,
            &r.trainer,
            r.generation,
            r.step,
            Instant::now(),
        )?;
        let rate = r.tokens_per_s.filter(|t| t.is_finite() && *t >= 0.0);
        state.note_throughput(&r.job, r.rank, rate);
        Ok(Response::new(reply::heartbeat(action, generation)))
    }

    /// The reported step is taken at once: once its manifest is in the run's
    /// store its tasks are added (see [`runs::checkpoint_reported`]); a
    /// manifest that is not there, or a store that cannot say, is left to
    /// the scanner's listing, which stays the truth.
    async fn report_checkpoint(
        &self,
        request: Request<v1::ReportCheckpointRequest>,
    ) -> Result<Response<v1::ReportCheckpointReply>, Status> {
        require(&request, Role::Trainer, "ReportCheckpoint")?;
        let r = request.get_ref();
        let run = {
            let state = self.lock();
            let job = state.job(&r.job)?;
            self.check_member(&state, &r.job, r.rank, r.generation, &r.member_secret)?;
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
        require(&request, Role::Trainer, "TrainerFinished")?;
        let r = request.get_ref();
        {
            let mut state = self.lock();
            self.check_member(&state, &r.job, r.rank, r.generation, &r.member_secret)?;
            state.trainer_finished(&r.job, r.rank, r.generation, r.step)?;
        }
        tracing::info!(job = r.job, rank = r.rank, "trainer finished");
        self.scan.notify_one();
        Ok(Response::new(v1::TrainerFinishedReply {}))
    }

    async fn assign_trainer(
        &self,
        request: Request<v1::AssignTrainerRequest>,
    ) -> Result<Response<v1::AssignTrainerReply>, Status> {
        require(&request, Role::Trainer, "AssignTrainer")?;
        let trainer = &request.get_ref().trainer;
        validate::peer_name("trainer", trainer)?;
        let assignment = self.lock().assign(trainer, Instant::now())?;
        Ok(Response::new(reply::assignment(
            assignment,
            self.retry_after,
        )))
    }

    async fn lease_task(
        &self,
        request: Request<v1::LeaseTaskRequest>,
    ) -> Result<Response<v1::LeaseTaskReply>, Status> {
        require(&request, Role::Evaluator, "LeaseTask")?;
        let started = Instant::now();
        let evaluator = &request.get_ref().evaluator;
        validate::peer_name("evaluator", evaluator)?;
        let (reply, record) = {
            let mut state = self.lock();
            let lease_ttl = state.timing.lease_ttl;
            let leased = state.lease(evaluator, Instant::now());
            let record = leased.as_ref().map(|l| (l.key.id(&l.job), l.lease.clone()));
            let leased = leased.map(|l| {
                let job = &state.jobs[&l.job];
                (l, job)
            });
            (reply::lease(leased, lease_ttl, self.retry_after), record)
        };
        if let Some((task_id, lease)) = record {
            // Before the reply: a restart after it still knows the lease.
            if let Err(e) = self.persist.save_lease(&task_id, &lease, evaluator).await {
                tracing::warn!(task = task_id, error = %e, "cannot record the lease");
            }
        }
        self.metrics
            .lease_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(Response::new(reply))
    }

    async fn renew_lease(
        &self,
        request: Request<v1::RenewLeaseRequest>,
    ) -> Result<Response<v1::RenewLeaseReply>, Status> {
        require(&request, Role::Evaluator, "RenewLease")?;
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
        require(&request, Role::Evaluator, "CompleteTask")?;
        let r = request.get_ref();
        let claimed = validate::rows(r);
        let (run, key, examples) = self.lock().completion_target(&r.task_id)?;
        check_task_rows(&examples, &r.task_id, &claimed)?;
        let rows = self
            .rows_of_result_file(&r.task_id, &run, key, &claimed)
            .await?;
        let count = rows.len() as u64;
        let completed = self
            .lock()
            .complete(&r.lease_id, &r.task_id, rows, Instant::now())?;
        if completed == Completed::Accepted {
            self.metrics.rows_total.inc_by(count);
            self.persist.drop_lease(&r.task_id).await;
        }
        self.metrics.count_completion(completed);
        tracing::debug!(task = r.task_id, ?completed, "completion");
        Ok(Response::new(reply::completion(completed)))
    }

    async fn fail_task(
        &self,
        request: Request<v1::FailTaskRequest>,
    ) -> Result<Response<v1::FailTaskReply>, Status> {
        require(&request, Role::Evaluator, "FailTask")?;
        let r = request.get_ref();
        let message = validate::failure_message(&r.message);
        let given_back = self
            .lock()
            .fail(&r.lease_id, &r.task_id, &message, Instant::now())?;
        if given_back {
            self.persist.drop_lease(&r.task_id).await;
        }
        Ok(Response::new(v1::FailTaskReply {}))
    }
}
