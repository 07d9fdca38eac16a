//! The node's side of the coordinator protocol: register, rendezvous,
//! heartbeat, checkpoint reports and the end of training. Each call retries
//! what is worth retrying and says, in its error, which call failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backon::Retryable;
use premem_core::retry::{Retry, RetryParams};
use premem_proto::Client;
use premem_proto::v1::{
    Backend as WireBackend, RegisterTrainerReply, RegisterTrainerRequest, RendezvousReply,
    RendezvousRequest, ReportCheckpointRequest, TrainerAction, TrainerFinishedRequest,
    TrainerHeartbeatRequest,
};
use tonic::{Code, Status};

use super::{Abort, NodeOptions};
use crate::error::{Result, TrainError};
use crate::run::TrainObserver;

/// How often a rank asks whether its generation is complete.
const RENDEZVOUS_POLL: Duration = Duration::from_millis(100);

/// Telling the coordinator that training finished: [`FINISH_ATTEMPTS`]
/// attempts, waits doubling from 500 ms.
const FINISH_RETRY: RetryParams = RetryParams {
    base_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(4),
};
const FINISH_ATTEMPTS: usize = 5;

pub(super) fn coordinator_error(address: &str, call: &str, status: &Status) -> TrainError {
    TrainError::Node(format!(
        "coordinator {address}: {call} failed: {:?}: {}",
        status.code(),
        status.message()
    ))
}

/// A generation this rank is a member of, and its member secret: the
/// credential of every call the rank makes for the generation.
#[derive(Clone, Debug)]
pub(super) struct Membership {
    pub generation: u64,
    pub secret: String,
}

/// Registers (or re-registers) this rank, retrying for up to
/// `connect_timeout` while the coordinator is unreachable or busy (another
/// live process still holds the rank). `previous`: the generation this rank
/// was a member of, which lets it displace its own membership at once.
pub(super) async fn register(
    client: &Client,
    options: &NodeOptions,
    ring_address: &str,
    previous: Option<&Membership>,
    stop: &AtomicBool,
) -> Result<RegisterTrainerReply> {
    let address = &options.coordinator.address;
    let retry = Retry::new(
        format!(
            "registering rank {} with coordinator {address}",
            options.rank
        ),
        RetryParams::COORDINATOR,
    )
    .for_at_most(options.connect_timeout)
    .unless_stopped(stop, Duration::ZERO);
    let request = RegisterTrainerRequest {
        job: options.job.clone(),
        rank: options.rank,
        backend: WireBackend::Ring as i32,
        ring_address: ring_address.to_string(),
        nccl_unique_id: vec![],
        trainer: options.trainer.clone(),
        generation: previous.map_or(0, |m| m.generation),
        member_secret: previous.map(|m| m.secret.clone()).unwrap_or_default(),
    };
    (|| {
        let (mut client, request) = (client.clone(), request.clone());
        async move { client.register_trainer(request).await }
    })
    .retry(retry.backoff())
    .when(|status| status.code() == Code::Unavailable)
    .notify(|status, wait| retry.note(&status.message(), wait))
    .await
    .map(tonic::Response::into_inner)
    .map_err(|status| coordinator_error(address, "RegisterTrainer", &status))
}

/// The rendezvous request of `member`; `nccl` as in [`rendezvous`].
fn rendezvous_request(
    options: &NodeOptions,
    member: &Membership,
    nccl: Option<&[u8]>,
) -> RendezvousRequest {
    RendezvousRequest {
        job: options.job.clone(),
        rank: options.rank,
        generation: member.generation,
        backend: if nccl.is_some() {
            WireBackend::Nccl
        } else {
            WireBackend::Ring
        } as i32,
        nccl_unique_id: nccl.unwrap_or_default().to_vec(),
        trainer: options.trainer.clone(),
        member_secret: member.secret.clone(),
    }
}

/// Waits until every rank of `generation` has registered (and, with NCCL,
/// rank 0 sent its id): the coordinator's answer, or `None` when the
/// generation was superseded. `nccl`: this rank uses NCCL; rank 0 passes
/// its ncclUniqueId.
pub(super) async fn rendezvous(
    client: &Client,
    options: &NodeOptions,
    member: &Membership,
    nccl: Option<&[u8]>,
    stop: &AtomicBool,
) -> Result<Option<RendezvousReply>> {
    let address = &options.coordinator.address;
    let generation = member.generation;
    let started = Instant::now();
    let mut unreachable_since: Option<Instant> = None;
    let mut last_note = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(TrainError::Node(
                "stopped while waiting for the other ranks".into(),
            ));
        }
        let request = rendezvous_request(options, member, nccl);
        match client.clone().rendezvous(request).await {
            Ok(reply) => {
                unreachable_since = None;
                let reply = reply.into_inner();
                if reply.ready {
                    return Ok(Some(reply));
                }
            }
            // Superseded, or a membership the coordinator no longer takes:
            // register again.
            Err(status)
                if matches!(
                    status.code(),
                    Code::FailedPrecondition | Code::PermissionDenied
                ) =>
            {
                return Ok(None);
            }
            Err(status) if status.code() == Code::Unavailable => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > options.connect_timeout {
                    return Err(coordinator_error(address, "Rendezvous", &status));
                }
            }
            Err(status) => return Err(coordinator_error(address, "Rendezvous", &status)),
        }
        if last_note.elapsed() > Duration::from_secs(30) {
            last_note = Instant::now();
            tracing::info!(
                generation,
                waited = ?started.elapsed(),
                "waiting for the other ranks to register"
            );
        }
        tokio::time::sleep(RENDEZVOUS_POLL).await;
    }
}

/// Reports progress every `options.heartbeat` and acts on the answer:
/// REGROUP aborts the ring (the training thread sees its collective fail),
/// STOP sets the stop flag (train checkpoints and stops), FINISH too, as
/// the end of the run. An unreachable
/// coordinator is logged; training goes on. A coordinator that no longer
/// takes this rank's membership (PERMISSION_DENIED) is a regroup too.
pub(super) async fn heartbeat(
    mut client: Client,
    options: NodeOptions,
    member: Membership,
    shared: Arc<Shared>,
    abort: Abort,
    stop: Arc<AtomicBool>,
) {
    let address = options.coordinator.address.clone();
    let mut ticker = tokio::time::interval(options.heartbeat.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unreachable = false;
    let generation = member.generation;
    loop {
        ticker.tick().await;
        let request = TrainerHeartbeatRequest {
            job: options.job.clone(),
            rank: options.rank,
            generation,
            step: shared.step.load(Ordering::SeqCst),
            trainer: options.trainer.clone(),
            member_secret: member.secret.clone(),
            tokens_per_s: Some(f64::from_bits(shared.tokens_per_s.load(Ordering::SeqCst)))
                .filter(|t| *t > 0.0),
        };
        match client.trainer_heartbeat(request).await {
            Ok(reply) => {
                if unreachable {
                    tracing::info!(coordinator = %address, "coordinator reachable again");
                    unreachable = false;
                }
                let action = reply.into_inner().action();
                if action == TrainerAction::Regroup {
                    tracing::info!(generation, "coordinator: the group changed");
                    return regroup(&shared, &abort);
                }
                stop_if_asked(action, &shared, &stop);
            }
            Err(status) if status.code() == Code::PermissionDenied => {
                tracing::warn!(generation, error = %status.message(), "coordinator: not a member any more; regrouping");
                return regroup(&shared, &abort);
            }
            Err(status) => {
                if !unreachable {
                    tracing::warn!(
                        coordinator = %address,
                        error = %status.message(),
                        "heartbeat failed; training goes on"
                    );
                    unreachable = true;
                }
            }
        }
    }
}

/// STOP and FINISH set the stop flag (train checkpoints and stops); FINISH
/// also marks the stop as the run's end.
fn stop_if_asked(action: TrainerAction, shared: &Shared, stop: &AtomicBool) {
    let note = match action {
        TrainerAction::Stop => "coordinator: stop (checkpointing and stopping)",
        TrainerAction::Finish => {
            shared.finish_early.store(true, Ordering::SeqCst);
            "coordinator: the advice's early stop (checkpointing and finishing)"
        }
        _ => return,
    };
    if !stop.swap(true, Ordering::SeqCst) {
        tracing::info!("{note}");
    }
}

/// Ends this generation's training: its collective fails, and the rank
/// registers again.
fn regroup(shared: &Shared, abort: &Abort) {
    shared.regroup.store(true, Ordering::SeqCst);
    abort();
}

/// Tells the coordinator this rank trained every step (a few attempts).
pub(super) async fn finished(
    client: &Client,
    options: &NodeOptions,
    member: &Membership,
    step: u64,
) {
    let retry = Retry::new(
        format!(
            "reporting the end of training to {}",
            options.coordinator.address
        ),
        FINISH_RETRY,
    )
    .attempts(FINISH_ATTEMPTS);
    let request = TrainerFinishedRequest {
        job: options.job.clone(),
        rank: options.rank,
        generation: member.generation,
        step,
        member_secret: member.secret.clone(),
    };
    let reported = (|| {
        let (mut client, request) = (client.clone(), request.clone());
        async move { client.trainer_finished(request).await }
    })
    .retry(retry.backoff())
    .notify(|status, wait| retry.note(&status.message(), wait))
    .await;
    if let Err(status) = reported {
        tracing::warn!(
            coordinator = %options.coordinator.address,
            error = %status.message(),
            "could not report the end of training"
        );
    }
}

/// What the heartbeat task and the training thread share.
#[derive(Default)]
pub(super) struct Shared {
    /// Steps completed, reported by the heartbeat.
    pub step: AtomicU64,
    /// The bits of the group's tokens/s at the last step (0: none yet).
    pub tokens_per_s: AtomicU64,
    /// The coordinator asked for the early stop of `[advice] stop_when`:
    /// the run ends as finished at the step it stops at.
    pub finish_early: AtomicBool,
    /// Steps completed in this generation (any at all resets the failure count).
    pub progressed: AtomicBool,
    /// The coordinator asked this generation to regroup.
    pub regroup: AtomicBool,
}

/// Reports training progress: the step to the heartbeat, and rank 0's
/// published checkpoints to the coordinator (best effort, off the training
/// thread).
pub(super) struct Reporter {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    client: Client,
    address: String,
    job: String,
    rank: u32,
    member: Membership,
    /// Reports still in flight, awaited (briefly) before the node returns.
    reports: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Reporter {
    pub fn new(
        shared: Arc<Shared>,
        runtime: tokio::runtime::Handle,
        client: Client,
        options: &NodeOptions,
        member: Membership,
    ) -> Reporter {
        Reporter {
            shared,
            runtime,
            client,
            address: options.coordinator.address.clone(),
            job: options.job.clone(),
            rank: options.rank,
            member,
            reports: Default::default(),
        }
    }

    /// Waits a little for the checkpoint reports still in flight.
    pub fn flush(&self) {
        let reports = std::mem::take(&mut *self.reports.lock().expect("not poisoned"));
        self.runtime.block_on(async {
            for report in reports {
                let _ = tokio::time::timeout(Duration::from_secs(5), report).await;
            }
        });
    }
}

impl TrainObserver for Reporter {
    fn step(&self, done: u64, tokens_per_s: f64) {
        self.shared.step.store(done, Ordering::SeqCst);
        self.shared
            .tokens_per_s
            .store(tokens_per_s.to_bits(), Ordering::SeqCst);
        self.shared.progressed.store(true, Ordering::SeqCst);
    }

    fn checkpoint(&self, step: u64) {
        let mut client = self.client.clone();
        let request = ReportCheckpointRequest {
            job: self.job.clone(),
            rank: self.rank,
            generation: self.member.generation,
            step,
            member_secret: self.member.secret.clone(),
        };
        let address = self.address.clone();
        let report = self.runtime.spawn(async move {
            if let Err(status) = client.report_checkpoint(request).await {
                tracing::warn!(
                    coordinator = %address,
                    step,
                    error = %status.message(),
                    "could not report the checkpoint (the coordinator also finds it in the store)"
                );
            }
        });
        let mut reports = self.reports.lock().expect("not poisoned");
        reports.retain(|r| !r.is_finished());
        reports.push(report);
    }
}
