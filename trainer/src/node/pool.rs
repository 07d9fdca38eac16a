//! A pool trainer: a process that asks the coordinator for a rank of some
//! job, runs it as a node, and asks again.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::BlockingRetryable;
use premem_core::retry::{Retry, RetryParams};
use premem_proto::Client;
use premem_proto::v1::{AssignTrainerReply, AssignTrainerRequest};
use tonic::Code;

use super::coordinator::coordinator_error;
use super::{NodeOptions, connect, run_node};
use crate::error::{Result, TrainError};

/// A pool trainer: a process that runs whatever rank the coordinator
/// assigns it ([`run_pool`]).
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// `trainer` is this process's name in the pool (stable across restarts:
    /// the pod name, say); `job` and `rank` are set per assignment.
    pub node: NodeOptions,
    /// Return after this long without an assignment (`None`: never).
    pub idle_exit: Option<Duration>,
}

/// What a pool trainer ran.
#[derive(Clone, Debug, Default)]
pub struct PoolSummary {
    /// (job, rank, steps trained) of every assignment that ended.
    pub runs: Vec<(String, u32, u64)>,
    /// Assignments that ended in an error.
    pub failures: u32,
}

/// Failed assignments in a row after which a pool trainer gives up.
const MAX_POOL_FAILURES: u32 = 5;
/// The pause after a failed assignment, before asking for the next.
const AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Asks the coordinator for a rank, runs it with [`run_node`], and asks
/// again, until stopped (or idle for `idle_exit`). An assignment that fails
/// is logged and the trainer asks for the next; it gives up after
/// `MAX_POOL_FAILURES` failures in a row.
pub fn run_pool(options: &PoolOptions) -> Result<PoolSummary> {
    Pool::start(options)?.run()
}

/// A pool trainer between assignments.
struct Pool<'a> {
    options: &'a PoolOptions,
    name: String,
    runtime: tokio::runtime::Runtime,
    client: Client,
    stop: Arc<AtomicBool>,
    summary: PoolSummary,
    failures_in_a_row: u32,
    idle_since: Instant,
}

impl<'a> Pool<'a> {
    fn start(options: &'a PoolOptions) -> Result<Pool<'a>> {
        let name = options.node.trainer.clone();
        if name.is_empty() {
            return Err(TrainError::Config(
                "a pool trainer needs a name (--name)".into(),
            ));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TrainError::Node(format!("starting the pool's runtime: {e}")))?;
        let client = connect(&runtime, &options.node)?;
        let stop = options
            .node
            .stop
            .clone()
            .unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
        Ok(Pool {
            options,
            name,
            runtime,
            client,
            stop,
            summary: PoolSummary::default(),
            failures_in_a_row: 0,
            idle_since: Instant::now(),
        })
    }

    fn run(mut self) -> Result<PoolSummary> {
        let address = &self.options.node.coordinator.address;
        tracing::info!(trainer = self.name, coordinator = %address, "pool trainer started");
        while !self.stop.load(Ordering::SeqCst) {
            let Some(reply) = self.ask_for_work()? else {
                continue;
            };
            if !reply.assigned {
                if self.idle_too_long() {
                    tracing::info!(trainer = self.name, "idle: exiting");
                    break;
                }
                std::thread::sleep(Duration::from_millis(reply.retry_after_ms.clamp(50, 5_000)));
                continue;
            }
            if self.run_assignment(reply)?.is_break() {
                break;
            }
            self.idle_since = Instant::now();
        }
        Ok(self.summary)
    }

    /// The coordinator's answer to AssignTrainer, retried while the
    /// coordinator is unreachable (for up to `connect_timeout`), or `None`
    /// when the pool was stopped meanwhile.
    fn ask_for_work(&mut self) -> Result<Option<AssignTrainerReply>> {
        let address = &self.options.node.coordinator.address;
        let retry = Retry::new(
            format!("asking coordinator {address} for work"),
            RetryParams::COORDINATOR,
        )
        .for_at_most(self.options.node.connect_timeout)
        .unless_stopped(&self.stop, Duration::ZERO);
        let request = AssignTrainerRequest {
            trainer: self.name.clone(),
        };
        let (runtime, client) = (&self.runtime, &self.client);
        let reply = (|| runtime.block_on(client.clone().assign_trainer(request.clone())))
            .retry(retry.backoff())
            .sleep(std::thread::sleep)
            // A coordinator that went away mid-call shows as Unknown
            // ("transport error"): retry that too.
            .when(|status| matches!(status.code(), Code::Unavailable | Code::Unknown))
            .notify(|status, wait| retry.note(&status.message(), wait))
            .call();
        match reply {
            Ok(reply) => Ok(Some(reply.into_inner())),
            Err(_) if self.stop.load(Ordering::SeqCst) => Ok(None),
            Err(status) => Err(coordinator_error(address, "AssignTrainer", &status)),
        }
    }

    fn idle_too_long(&self) -> bool {
        self.options
            .idle_exit
            .is_some_and(|limit| self.idle_since.elapsed() > limit)
    }

    /// Runs the assigned rank as a node; breaks when the pool was stopped.
    fn run_assignment(&mut self, reply: AssignTrainerReply) -> Result<ControlFlow<()>> {
        let (name, job, rank) = (&self.name, reply.job, reply.rank);
        tracing::info!(trainer = name, job, rank, "assigned");
        let node = NodeOptions {
            job: job.clone(),
            rank,
            stop: Some(self.stop.clone()),
            ..self.options.node.clone()
        };
        match run_node(&node) {
            Ok(done) => {
                self.failures_in_a_row = 0;
                tracing::info!(
                    trainer = name,
                    job,
                    rank,
                    steps = done.steps,
                    interrupted = done.interrupted,
                    "assignment ended"
                );
                self.summary.runs.push((job, rank, done.steps));
            }
            Err(e) if self.stop.load(Ordering::SeqCst) => {
                tracing::info!(error = %e, "stopped");
                return Ok(ControlFlow::Break(()));
            }
            Err(e) => {
                self.summary.failures += 1;
                self.failures_in_a_row += 1;
                tracing::error!(trainer = name, job, rank, error = %e, "assignment failed");
                if self.failures_in_a_row >= MAX_POOL_FAILURES {
                    return Err(TrainError::Node(format!(
                        "pool trainer '{name}': {} assignments in a row failed; the last (job '{job}', rank {rank}): {e}",
                        self.failures_in_a_row
                    )));
                }
                std::thread::sleep(AFTER_FAILURE);
            }
        }
        Ok(ControlFlow::Continue(()))
    }
}
