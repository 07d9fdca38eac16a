//! A trainer rank under a coordinator.
//!
//! [`run_node`] loops: register with the coordinator (which assigns a
//! generation), wait until every rank of the generation has registered,
//! form the collective, and train from the newest checkpoint while a
//! heartbeat reports progress. When the coordinator says the group changed
//! (a rank left or rejoined), or a peer fails mid-collective, the rank drops
//! the collective and goes round again: every rank resumes from the newest
//! checkpoint, so the run continues with the ranks that are there.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use premem_core::spec::JobSpec;
use premem_proto::v1::{
    Backend as WireBackend, RegisterTrainerReply, RegisterTrainerRequest, RendezvousReply,
    RendezvousRequest, ReportCheckpointRequest, TrainerAction, TrainerFinishedRequest,
    TrainerHeartbeatRequest,
};
use premem_proto::{Client, ClientConfig};
use tonic::{Code, Status};

use crate::collective::Collective;
use crate::error::{Result, TrainError};
use crate::ring::RingListener;
use crate::run::{TrainObserver, TrainOptions, TrainSummary, train_observed};

/// How often a rank asks whether its generation is complete.
const RENDEZVOUS_POLL: Duration = Duration::from_millis(100);
/// Makes a collective blocked on a lost peer fail at once (REGROUP).
type Abort = Arc<dyn Fn() + Send + Sync>;

/// Rank 0's ncclUniqueId for a new generation.
#[cfg(feature = "nccl")]
fn nccl_unique_id() -> Result<Vec<u8>> {
    crate::nccl::unique_id().map_err(|e| TrainError::Config(e.to_string()))
}

#[cfg(not(feature = "nccl"))]
fn nccl_unique_id() -> Result<Vec<u8>> {
    Err(TrainError::Config(
        "cluster.backend nccl: this premem was built without the `nccl` feature".into(),
    ))
}

/// The NCCL communicator of this generation on the spec's CUDA device.
#[cfg(feature = "nccl")]
fn form_nccl(
    rank: u32,
    world_size: u32,
    reply: &RendezvousReply,
    spec: &JobSpec,
) -> Result<(Box<dyn Collective>, Abort)> {
    let device = premem_model::runtime::parse_device(&spec.train.device)
        .map_err(|e| TrainError::Config(format!("train.device {e}")))?;
    if !device.is_cuda() {
        return Err(TrainError::Config(format!(
            "cluster.backend nccl needs a CUDA train.device, not '{}' (use backend \"ring\" on the CPU)",
            spec.train.device
        )));
    }
    let nccl = crate::nccl::NcclCollective::new(
        rank as usize,
        world_size as usize,
        &reply.nccl_unique_id,
        device,
    )?;
    let aborter = nccl.aborter();
    Ok((
        Box::new(nccl),
        Arc::new(move || {
            if let Err(e) = aborter.abort() {
                tracing::warn!(error = %e, "aborting the NCCL communicator");
            }
        }),
    ))
}

#[cfg(not(feature = "nccl"))]
fn form_nccl(
    _rank: u32,
    _world_size: u32,
    _reply: &RendezvousReply,
    _spec: &JobSpec,
) -> Result<(Box<dyn Collective>, Abort)> {
    nccl_unique_id().map(|_| unreachable!("refused above"))
}

/// Attempts at telling the coordinator that training finished.
const FINISH_ATTEMPTS: u32 = 5;
/// Generations in a row that may fail before any step is trained.
const MAX_FAILED_GENERATIONS: u32 = 5;

/// The collective a node forms with its peers: `cluster.backend` of the job
/// spec (`auto`: NCCL on a CUDA device, the ring on the CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    /// TCP ring between CPU ranks ([`crate::ring`]).
    Ring,
    /// NCCL between CUDA ranks ([`crate::nccl`]): one GPU per rank, the
    /// spec's `train.device` on each host.
    Nccl,
}

fn backend_of(spec: &JobSpec) -> Result<Backend> {
    use premem_core::spec::Backend as Chosen;
    Ok(match spec.cluster.backend {
        Chosen::Ring => Backend::Ring,
        Chosen::Nccl => Backend::Nccl,
        Chosen::Auto => {
            let device = premem_model::runtime::parse_device(&spec.train.device)
                .map_err(|e| TrainError::Config(format!("train.device {e}")))?;
            if device.is_cuda() {
                Backend::Nccl
            } else {
                Backend::Ring
            }
        }
    })
}

#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub coordinator: ClientConfig,
    /// The job (its run name).
    pub job: String,
    pub rank: u32,
    /// A pool trainer's name (the coordinator assigned it this job and
    /// rank); empty for a trainer started for one job and rank.
    pub trainer: String,
    /// Where this rank accepts its ring neighbour: `host` (any free port) or
    /// `host:port`. Other ranks connect to it, so it must be an address they
    /// can reach (the pod IP, say), not `0.0.0.0`.
    pub bind_host: String,
    /// Draw a progress bar on rank 0.
    pub progress: bool,
    /// Set when the process should checkpoint and stop (SIGTERM/SIGINT).
    pub stop: Option<Arc<AtomicBool>>,
    /// Interval of the heartbeat to the coordinator.
    pub heartbeat: Duration,
    /// How long to keep trying an unreachable coordinator (when registering)
    /// and to wait for the ring's neighbours to connect.
    pub connect_timeout: Duration,
}

fn coordinator_error(address: &str, call: &str, status: &Status) -> TrainError {
    TrainError::Node(format!(
        "coordinator {address}: {call} failed: {:?}: {}",
        status.code(),
        status.message()
    ))
}

/// What the heartbeat task and the training thread share.
struct Shared {
    /// Steps completed, reported by the heartbeat.
    step: AtomicU64,
    /// Steps completed in this generation (any at all resets the failure count).
    progressed: AtomicBool,
    /// The coordinator asked this generation to regroup.
    regroup: AtomicBool,
}

/// Reports training progress: the step to the heartbeat, and rank 0's
/// published checkpoints to the coordinator (best effort, off the training
/// thread).
struct Reporter {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    client: Client,
    address: String,
    job: String,
    rank: u32,
    generation: u64,
    /// Reports still in flight, awaited (briefly) before the node returns.
    reports: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Reporter {
    /// Waits a little for the checkpoint reports still in flight.
    fn flush(&self) {
        let reports = std::mem::take(&mut *self.reports.lock().expect("not poisoned"));
        self.runtime.block_on(async {
            for report in reports {
                let _ = tokio::time::timeout(Duration::from_secs(5), report).await;
            }
        });
    }
}

impl TrainObserver for Reporter {
    fn step(&self, done: u64) {
        self.shared.step.store(done, Ordering::SeqCst);
        self.shared.progressed.store(true, Ordering::SeqCst);
    }

    fn checkpoint(&self, step: u64) {
        let mut client = self.client.clone();
        let request = ReportCheckpointRequest {
            job: self.job.clone(),
            rank: self.rank,
            generation: self.generation,
            step,
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

/// Runs one rank of `options.job` until the job's training is done (or the
/// rank is stopped), regrouping whenever the group changes.
pub fn run_node(options: &NodeOptions) -> Result<TrainSummary> {
    let address = options.coordinator.address.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("premem-node")
        .enable_all()
        .build()
        .map_err(|e| TrainError::Node(format!("starting the node's runtime: {e}")))?;
    let client = {
        // The channel's worker task needs the runtime's context.
        let _context = runtime.enter();
        premem_proto::client(&options.coordinator)
            .map_err(|e| TrainError::Node(format!("coordinator {address}: {e}")))?
    };
    let stop = options
        .stop
        .clone()
        .unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
    let bind = bind_address(&options.bind_host);
    let listener = RingListener::bind(&bind).map_err(|e| TrainError::Io {
        path: bind.clone().into(),
        source: e,
    })?;
    let ring_address = listener
        .local_addr()
        .map_err(|e| TrainError::Io {
            path: bind.clone().into(),
            source: e,
        })?
        .to_string();
    if listener.local_addr().is_ok_and(|a| a.ip().is_unspecified()) {
        return Err(TrainError::Config(format!(
            "ring address {ring_address}: other ranks cannot connect to an unspecified address; \
             bind this host's reachable address (the pod IP, say)"
        )));
    }
    tracing::info!(
        rank = options.rank,
        %ring_address,
        coordinator = %address,
        "node started"
    );

    let mut failed_generations = 0u32;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(TrainError::Node("stopped before the group formed".into()));
        }
        let registered = runtime.block_on(register(&client, options, &ring_address, &stop))?;
        let generation = registered.generation;
        let spec: JobSpec = serde_json::from_str(&registered.spec_json).map_err(|e| {
            TrainError::Node(format!(
                "coordinator {address}: the job spec of '{}' does not parse: {e}",
                options.job
            ))
        })?;
        tracing::info!(
            rank = options.rank,
            generation,
            world_size = registered.world_size,
            "registered"
        );
        let backend = backend_of(&spec)?;
        let nccl_id = match backend {
            Backend::Ring => None,
            Backend::Nccl if options.rank == 0 => Some(nccl_unique_id()?),
            Backend::Nccl => Some(vec![]),
        };
        let Some(reply) = runtime.block_on(rendezvous(
            &client,
            options,
            generation,
            nccl_id.as_deref(),
            &stop,
        ))?
        else {
            tracing::info!(
                generation,
                "generation superseded before it formed; registering again"
            );
            continue;
        };
        let (mut collective, abort): (Box<dyn Collective>, Abort) = match backend {
            Backend::Nccl => form_nccl(options.rank, registered.world_size, &reply, &spec)?,
            Backend::Ring => {
                let addresses = reply.ring_addresses;
                if addresses.len() != registered.world_size as usize {
                    return Err(TrainError::Node(format!(
                        "coordinator {address}: generation {generation} has {} ring addresses for {} ranks",
                        addresses.len(),
                        registered.world_size
                    )));
                }
                match listener.connect(
                    options.rank as usize,
                    &addresses,
                    generation,
                    options.connect_timeout,
                ) {
                    Ok(ring) => {
                        let aborter = ring.aborter();
                        (Box::new(ring), Arc::new(move || aborter.abort()))
                    }
                    Err(e) => {
                        failed_generations += 1;
                        if failed_generations > MAX_FAILED_GENERATIONS {
                            return Err(e.into());
                        }
                        tracing::warn!(generation, error = %e, "could not form the ring; registering again");
                        continue;
                    }
                }
            }
        };

        let shared = Arc::new(Shared {
            step: AtomicU64::new(0),
            progressed: AtomicBool::new(false),
            regroup: AtomicBool::new(false),
        });
        // The coordinator's STOP ends this job's training; SIGTERM ends the
        // process (a pool trainer asks for other work after the former).
        let job_stop = Arc::new(AtomicBool::new(stop.load(Ordering::SeqCst)));
        let mirror = runtime.spawn({
            let (stop, job_stop) = (stop.clone(), job_stop.clone());
            async move {
                loop {
                    if stop.load(Ordering::SeqCst) {
                        job_stop.store(true, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        let heartbeat = runtime.spawn(heartbeat(
            client.clone(),
            options.clone(),
            generation,
            shared.clone(),
            abort,
            job_stop.clone(),
        ));
        let reporter = Reporter {
            shared: shared.clone(),
            runtime: runtime.handle().clone(),
            client: client.clone(),
            address: address.clone(),
            job: options.job.clone(),
            rank: options.rank,
            generation,
            reports: Default::default(),
        };
        let train_options = TrainOptions {
            resume: true,
            progress: options.progress && options.rank == 0,
            stop: Some(job_stop.clone()),
        };
        let result = train_observed(&spec, &train_options, &mut *collective, Some(&reporter));
        heartbeat.abort();
        mirror.abort();
        reporter.flush();
        // Close the collective now: a peer still in one fails at once.
        drop(collective);
        let regroup = shared.regroup.load(Ordering::SeqCst);
        match result {
            // Every step trained (the final checkpoint is published: train
            // returns only after it), or stopped: a regroup asked for
            // meanwhile changes nothing.
            Ok(summary) => {
                if !summary.interrupted {
                    runtime.block_on(finished(&client, options, generation, summary.steps));
                }
                return Ok(summary);
            }
            Err(e @ TrainError::Collective(_)) if !job_stop.load(Ordering::SeqCst) => {
                if shared.progressed.load(Ordering::SeqCst) || regroup {
                    failed_generations = 0;
                } else {
                    failed_generations += 1;
                    if failed_generations > MAX_FAILED_GENERATIONS {
                        return Err(e);
                    }
                }
                tracing::warn!(
                    rank = options.rank,
                    generation,
                    cause = %e,
                    "group changed; regrouping from the newest checkpoint"
                );
            }
            Err(e) => return Err(e),
        }
    }
}

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

/// Asks the coordinator for a rank, runs it with [`run_node`], and asks
/// again, until stopped (or idle for `idle_exit`). An assignment that fails
/// is logged and the trainer asks for the next; it gives up after
/// [`MAX_POOL_FAILURES`] failures in a row.
pub fn run_pool(options: &PoolOptions) -> Result<PoolSummary> {
    let name = options.node.trainer.clone();
    if name.is_empty() {
        return Err(TrainError::Config(
            "a pool trainer needs a name (--name)".into(),
        ));
    }
    let address = options.node.coordinator.address.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TrainError::Node(format!("starting the pool's runtime: {e}")))?;
    let client = {
        let _context = runtime.enter();
        premem_proto::client(&options.node.coordinator)
            .map_err(|e| TrainError::Node(format!("coordinator {address}: {e}")))?
    };
    let stop = options
        .node
        .stop
        .clone()
        .unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
    let mut summary = PoolSummary::default();
    let mut failures_in_a_row = 0;
    let mut idle_since = Instant::now();
    let mut unreachable_since: Option<Instant> = None;
    tracing::info!(trainer = name, coordinator = %address, "pool trainer started");
    while !stop.load(Ordering::SeqCst) {
        let request = premem_proto::v1::AssignTrainerRequest {
            trainer: name.clone(),
        };
        let reply = match runtime.block_on(client.clone().assign_trainer(request)) {
            Ok(reply) => {
                unreachable_since = None;
                reply.into_inner()
            }
            // A coordinator that went away mid-call shows as Unknown
            // ("transport error"): retry that too.
            Err(status) if matches!(status.code(), Code::Unavailable | Code::Unknown) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > options.node.connect_timeout {
                    return Err(coordinator_error(&address, "AssignTrainer", &status));
                }
                tracing::warn!(coordinator = %address, error = %status.message(), "coordinator unreachable; retrying");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            Err(status) => return Err(coordinator_error(&address, "AssignTrainer", &status)),
        };
        if !reply.assigned {
            if options
                .idle_exit
                .is_some_and(|limit| idle_since.elapsed() > limit)
            {
                tracing::info!(trainer = name, "idle: exiting");
                break;
            }
            let wait = Duration::from_millis(reply.retry_after_ms.clamp(50, 5_000));
            std::thread::sleep(wait);
            continue;
        }
        tracing::info!(
            trainer = name,
            job = reply.job,
            rank = reply.rank,
            "assigned"
        );
        let node = NodeOptions {
            job: reply.job.clone(),
            rank: reply.rank,
            stop: Some(stop.clone()),
            ..options.node.clone()
        };
        match run_node(&node) {
            Ok(done) => {
                failures_in_a_row = 0;
                tracing::info!(
                    trainer = name,
                    job = reply.job,
                    rank = reply.rank,
                    steps = done.steps,
                    interrupted = done.interrupted,
                    "assignment ended"
                );
                summary.runs.push((reply.job, reply.rank, done.steps));
            }
            Err(e) if stop.load(Ordering::SeqCst) => {
                tracing::info!(error = %e, "stopped");
                break;
            }
            Err(e) => {
                summary.failures += 1;
                failures_in_a_row += 1;
                tracing::error!(
                    trainer = name,
                    job = reply.job,
                    rank = reply.rank,
                    error = %e,
                    "assignment failed"
                );
                if failures_in_a_row >= MAX_POOL_FAILURES {
                    return Err(TrainError::Node(format!(
                        "pool trainer '{name}': {failures_in_a_row} assignments in a row failed; the last (job '{}', rank {}): {e}",
                        reply.job, reply.rank
                    )));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        idle_since = Instant::now();
    }
    Ok(summary)
}

/// `host` (any free port) or `host:port` as an address to bind.
fn bind_address(host: &str) -> String {
    if host.parse::<SocketAddr>().is_ok() {
        return host.to_string();
    }
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return SocketAddr::new(ip, 0).to_string();
    }
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:0")
    }
}

/// Registers (or re-registers) this rank, retrying while the coordinator is
/// unreachable, for up to `connect_timeout`.
async fn register(
    client: &Client,
    options: &NodeOptions,
    ring_address: &str,
    stop: &AtomicBool,
) -> Result<RegisterTrainerReply> {
    let address = &options.coordinator.address;
    let started = Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        let request = RegisterTrainerRequest {
            job: options.job.clone(),
            rank: options.rank,
            backend: WireBackend::Ring as i32,
            ring_address: ring_address.to_string(),
            nccl_unique_id: vec![],
            trainer: options.trainer.clone(),
        };
        match client.clone().register_trainer(request).await {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(status)
                if status.code() == Code::Unavailable
                    && started.elapsed() < options.connect_timeout
                    && !stop.load(Ordering::SeqCst) =>
            {
                tracing::warn!(
                    coordinator = %address,
                    error = %status.message(),
                    retry_in = ?backoff,
                    "coordinator unreachable; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(status) => return Err(coordinator_error(address, "RegisterTrainer", &status)),
        }
    }
}

/// Waits until every rank of `generation` has registered (and, with NCCL,
/// rank 0 sent its id): the coordinator's answer, or `None` when the
/// generation was superseded. `nccl`: this rank uses NCCL; rank 0 passes
/// its ncclUniqueId.
async fn rendezvous(
    client: &Client,
    options: &NodeOptions,
    generation: u64,
    nccl: Option<&[u8]>,
    stop: &AtomicBool,
) -> Result<Option<RendezvousReply>> {
    let address = &options.coordinator.address;
    let started = Instant::now();
    let mut unreachable_since: Option<Instant> = None;
    let mut last_note = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(TrainError::Node(
                "stopped while waiting for the other ranks".into(),
            ));
        }
        let request = RendezvousRequest {
            job: options.job.clone(),
            rank: options.rank,
            generation,
            backend: if nccl.is_some() {
                WireBackend::Nccl
            } else {
                WireBackend::Ring
            } as i32,
            nccl_unique_id: nccl.unwrap_or_default().to_vec(),
            trainer: options.trainer.clone(),
        };
        match client.clone().rendezvous(request).await {
            Ok(reply) => {
                unreachable_since = None;
                let reply = reply.into_inner();
                if reply.ready {
                    return Ok(Some(reply));
                }
            }
            Err(status) if status.code() == Code::FailedPrecondition => return Ok(None),
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
/// STOP sets the stop flag (train checkpoints and stops). An unreachable
/// coordinator is logged; training goes on.
async fn heartbeat(
    mut client: Client,
    options: NodeOptions,
    generation: u64,
    shared: Arc<Shared>,
    abort: Abort,
    stop: Arc<AtomicBool>,
) {
    let address = options.coordinator.address.clone();
    let mut ticker = tokio::time::interval(options.heartbeat.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unreachable = false;
    loop {
        ticker.tick().await;
        let request = TrainerHeartbeatRequest {
            job: options.job.clone(),
            rank: options.rank,
            generation,
            step: shared.step.load(Ordering::SeqCst),
            trainer: options.trainer.clone(),
        };
        match client.trainer_heartbeat(request).await {
            Ok(reply) => {
                if unreachable {
                    tracing::info!(coordinator = %address, "coordinator reachable again");
                    unreachable = false;
                }
                match reply.into_inner().action() {
                    TrainerAction::Regroup => {
                        tracing::info!(generation, "coordinator: the group changed");
                        shared.regroup.store(true, Ordering::SeqCst);
                        abort();
                        return;
                    }
                    TrainerAction::Stop => {
                        if !stop.swap(true, Ordering::SeqCst) {
                            tracing::info!("coordinator: stop (checkpointing and stopping)");
                        }
                    }
                    TrainerAction::Continue | TrainerAction::Unspecified => {}
                }
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

/// Tells the coordinator this rank trained every step (a few attempts).
async fn finished(client: &Client, options: &NodeOptions, generation: u64, step: u64) {
    let mut backoff = Duration::from_millis(500);
    for attempt in 1..=FINISH_ATTEMPTS {
        let request = TrainerFinishedRequest {
            job: options.job.clone(),
            rank: options.rank,
            generation,
            step,
        };
        match client.clone().trainer_finished(request).await {
            Ok(_) => return,
            Err(status) => {
                tracing::warn!(
                    coordinator = %options.coordinator.address,
                    attempt,
                    error = %status.message(),
                    "could not report the end of training"
                );
                if attempt < FINISH_ATTEMPTS {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses_get_a_port() {
        assert_eq!(bind_address("127.0.0.1"), "127.0.0.1:0");
        assert_eq!(bind_address("127.0.0.1:4567"), "127.0.0.1:4567");
        assert_eq!(bind_address("::1"), "[::1]:0");
        assert_eq!(bind_address("[::1]"), "[::1]:0");
        assert_eq!(bind_address("[::1]:80"), "[::1]:80");
        assert_eq!(bind_address("trainer-0.premem"), "trainer-0.premem:0");
        assert_eq!(
            bind_address("trainer-0.premem:9000"),
            "trainer-0.premem:9000"
        );
    }
}
