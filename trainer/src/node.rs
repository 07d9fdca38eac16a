//! A trainer rank under a coordinator.
//!
//! [`run_node`] takes a `Node` through its phases, one generation after
//! another: register with the coordinator (which assigns a generation),
//! rendezvous (wait until every rank of the generation has registered),
//! form the collective, and train from the newest checkpoint while a
//! heartbeat reports progress. When the coordinator says the group changed
//! (a rank left or rejoined), or a peer fails mid-collective, the rank drops
//! the collective and regroups: every rank resumes from the newest
//! checkpoint, so the run continues with the ranks that are there.
//! [`run_pool`] runs whichever rank the coordinator assigns, one after
//! another.

mod coordinator;
mod pool;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use premem_core::spec::{Backend, JobSpec, SpecError};
use premem_proto::v1::RendezvousReply;
use premem_proto::{Client, ClientConfig};

use crate::collective::Collective;
use crate::error::{Result, TrainError};
use crate::ring::RingListener;
use crate::run::{TrainOptions, TrainSummary, train_device, train_observed};
use coordinator::{Membership, Reporter, Shared};
pub use pool::{PoolOptions, PoolSummary, run_pool};

/// Makes a collective blocked on a lost peer fail at once (REGROUP).
type Abort = Arc<dyn Fn() + Send + Sync>;

/// Generations in a row that may fail before any step is trained.
const MAX_FAILED_GENERATIONS: u32 = 5;

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
    /// How long to keep trying an unreachable coordinator (when registering).
    pub connect_timeout: Duration,
    /// How long to wait for the ring's neighbours to connect: they were
    /// told to at the same rendezvous, so seconds, not the coordinator's
    /// patience (a bogus peer address regroups soon).
    pub ring_timeout: Duration,
    /// This process's index among the ranks of its host: with
    /// `train.device` `auto` or `cuda` it trains on `cuda:{local_rank}`
    /// (`premem_model::runtime::local_device_name`).
    pub local_rank: Option<usize>,
}

/// Runs one rank of `options.job` until the job's training is done (or the
/// rank is stopped), regrouping whenever the group changes.
pub fn run_node(options: &NodeOptions) -> Result<TrainSummary> {
    Node::start(options)?.run()
}

/// One rank across generations.
struct Node<'a> {
    options: &'a NodeOptions,
    runtime: tokio::runtime::Runtime,
    client: Client,
    listener: RingListener,
    /// The listener's address, announced to the other ranks.
    ring_address: String,
    stop: Arc<AtomicBool>,
    /// Generations in a row that failed before training a step.
    failed_generations: u32,
    /// The generation this rank was last a member of (it re-registers with it).
    membership: Option<Membership>,
}

/// A generation this rank registered for.
struct Generation {
    number: u64,
    /// This rank's membership of it: its credential.
    member: Membership,
    world_size: u32,
    /// Parsed and validated here, once: the run trusts it.
    spec: JobSpec,
    /// `cluster.backend`, resolved: [`Backend::Ring`] or [`Backend::Nccl`].
    backend: Backend,
}

/// A generation's collective and the handle that aborts it.
struct Group {
    collective: Box<dyn Collective>,
    abort: Abort,
}

impl<'a> Node<'a> {
    /// The node's runtime, its client of the coordinator and its ring
    /// listener; nothing is sent yet.
    fn start(options: &'a NodeOptions) -> Result<Node<'a>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("premem-node")
            .enable_all()
            .build()
            .map_err(|e| TrainError::Node(format!("starting the node's runtime: {e}")))?;
        let client = connect(&runtime, options)?;
        let stop = options
            .stop
            .clone()
            .unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
        let (listener, ring_address) = bind_ring(&options.bind_host)?;
        tracing::info!(
            rank = options.rank,
            %ring_address,
            coordinator = %options.coordinator.address,
            "node started"
        );
        Ok(Node {
            options,
            runtime,
            client,
            listener,
            ring_address,
            stop,
            failed_generations: 0,
            membership: None,
        })
    }

    /// Register, rendezvous, form the group and train, until a generation
    /// ends the training; any other generation is followed by the next.
    fn run(mut self) -> Result<TrainSummary> {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Err(TrainError::Node("stopped before the group formed".into()));
            }
            let generation = self.register()?;
            let Some(reply) = self.rendezvous(&generation)? else {
                tracing::info!(
                    generation = generation.number,
                    "generation superseded before it formed; registering again"
                );
                continue;
            };
            let Some(group) = self.form_group(&generation, reply)? else {
                continue;
            };
            if let Some(summary) = self.train_generation(&generation, group)? {
                return Ok(summary);
            }
        }
    }

    fn register(&mut self) -> Result<Generation> {
        let options = self.options;
        let registered = self.runtime.block_on(coordinator::register(
            &self.client,
            options,
            &self.ring_address,
            self.membership.as_ref(),
            &self.stop,
        ))?;
        let member = Membership {
            generation: registered.generation,
            secret: registered.member_secret.clone(),
        };
        self.membership = Some(member.clone());
        let mut spec = job_spec(
            &options.coordinator.address,
            &options.job,
            &registered.spec_json,
        )?;
        // Placed once, where the spec enters the rank: everything after
        // (backend, NCCL, the model) reads the one device.
        spec.train.device = premem_model::runtime::local_device_name(
            &spec.train.device,
            options.local_rank,
            premem_model::runtime::cuda_device_count(),
        );
        tracing::info!(
            rank = options.rank,
            generation = registered.generation,
            world_size = registered.world_size,
            "registered"
        );
        let backend = resolve_backend(&spec)?;
        Ok(Generation {
            number: registered.generation,
            member,
            world_size: registered.world_size,
            spec,
            backend,
        })
    }

    /// The coordinator's answer once every rank registered (`None`: the
    /// generation was superseded). With NCCL, rank 0 brings the unique id.
    fn rendezvous(&self, generation: &Generation) -> Result<Option<RendezvousReply>> {
        let nccl_id = match (generation.backend, self.options.rank) {
            (Backend::Nccl, 0) => Some(nccl_unique_id()?),
            (Backend::Nccl, _) => Some(vec![]),
            _ => None,
        };
        self.runtime.block_on(coordinator::rendezvous(
            &self.client,
            self.options,
            &generation.member,
            nccl_id.as_deref(),
            &self.stop,
        ))
    }

    /// The generation's collective; `None` when the ring could not be
    /// formed and the rank should register again.
    fn form_group(
        &mut self,
        generation: &Generation,
        reply: RendezvousReply,
    ) -> Result<Option<Group>> {
        let options = self.options;
        if generation.backend == Backend::Nccl {
            return form_nccl(options.rank, generation, &reply).map(Some);
        }
        let addresses = reply.ring_addresses;
        if addresses.len() != generation.world_size as usize {
            return Err(TrainError::Node(format!(
                "coordinator {}: generation {} has {} ring addresses for {} ranks",
                options.coordinator.address,
                generation.number,
                addresses.len(),
                generation.world_size
            )));
        }
        let rank = options.rank as usize;
        match self
            .listener
            .connect(rank, &addresses, generation.number, options.ring_timeout)
        {
            Ok(ring) => {
                let aborter = ring.aborter();
                Ok(Some(Group {
                    collective: Box::new(ring),
                    abort: Arc::new(move || aborter.abort()),
                }))
            }
            Err(e) => {
                self.failed_generations += 1;
                if self.failed_generations > MAX_FAILED_GENERATIONS {
                    return Err(e.into());
                }
                let generation = generation.number;
                tracing::warn!(generation, error = %e, "could not form the ring; registering again");
                Ok(None)
            }
        }
    }

    /// Trains one generation while it is watched ([`Watch`]). `Some`: the
    /// training ended (every step trained, or stopped); `None`: regroup.
    fn train_generation(
        &mut self,
        generation: &Generation,
        group: Group,
    ) -> Result<Option<TrainSummary>> {
        let Group {
            mut collective,
            abort,
        } = group;
        let watch = Watch::start(self, &generation.member, abort);
        let train_options = TrainOptions {
            resume: true,
            progress: self.options.progress && self.options.rank == 0,
            stop: Some(watch.job_stop.clone()),
            // Whichever process is the job's rank 0 now holds the output: a
            // restarted rank 0 takes the lease back at once.
            lock_owner: Some(format!("job '{}' rank 0", generation.spec.run.name)),
        };
        let result = train_observed(
            &generation.spec,
            &train_options,
            &mut *collective,
            Some(&watch.reporter),
        );
        watch.end();
        // Close the collective now: a peer still in one fails at once.
        drop(collective);
        self.after_training(generation, result, &watch)
    }

    /// Reports the end of training, or decides to regroup after a
    /// collective failed.
    fn after_training(
        &mut self,
        generation: &Generation,
        result: Result<TrainSummary>,
        watch: &Watch,
    ) -> Result<Option<TrainSummary>> {
        let regroup = watch.shared.regroup.load(Ordering::SeqCst);
        match result {
            // Every step trained (the final checkpoint is published: train
            // returns only after it), or stopped: a regroup asked for
            // meanwhile changes nothing.
            Ok(summary) => {
                let finished_early = watch.shared.finish_early.load(Ordering::SeqCst);
                if !summary.interrupted || finished_early {
                    self.runtime.block_on(coordinator::finished(
                        &self.client,
                        self.options,
                        &generation.member,
                        summary.steps,
                    ));
                }
                Ok(Some(summary))
            }
            Err(e @ TrainError::Collective(_)) if !watch.job_stop.load(Ordering::SeqCst) => {
                if watch.shared.progressed.load(Ordering::SeqCst) || regroup {
                    self.failed_generations = 0;
                } else {
                    self.failed_generations += 1;
                    if self.failed_generations > MAX_FAILED_GENERATIONS {
                        return Err(e);
                    }
                }
                tracing::warn!(
                    rank = self.options.rank,
                    generation = generation.number,
                    cause = %e,
                    "group changed; regrouping from the newest checkpoint"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// What runs beside a generation's training: the heartbeat (which aborts
/// the collective on REGROUP and sets the job's stop on STOP), the mirror
/// of the process's stop into the job's, and the checkpoint reports.
struct Watch {
    shared: Arc<Shared>,
    /// The coordinator's STOP ends this job's training; SIGTERM ends the
    /// process (a pool trainer asks for other work after the former).
    job_stop: Arc<AtomicBool>,
    reporter: Reporter,
    heartbeat: tokio::task::JoinHandle<()>,
    mirror: tokio::task::JoinHandle<()>,
}

impl Watch {
    fn start(node: &Node<'_>, member: &Membership, abort: Abort) -> Watch {
        let (options, runtime) = (node.options, &node.runtime);
        let shared = Arc::new(Shared::default());
        let job_stop = Arc::new(AtomicBool::new(node.stop.load(Ordering::SeqCst)));
        let mirror = runtime.spawn({
            let (stop, job_stop) = (node.stop.clone(), job_stop.clone());
            async move {
                loop {
                    if stop.load(Ordering::SeqCst) {
                        job_stop.store(true, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        let heartbeat = runtime.spawn(coordinator::heartbeat(
            node.client.clone(),
            options.clone(),
            member.clone(),
            shared.clone(),
            abort,
            job_stop.clone(),
        ));
        let handle = runtime.handle().clone();
        let reporter = Reporter::new(
            shared.clone(),
            handle,
            node.client.clone(),
            options,
            member.clone(),
        );
        Watch {
            shared,
            job_stop,
            reporter,
            heartbeat,
            mirror,
        }
    }

    /// Stops the heartbeat and the mirror; waits a little for the reports.
    fn end(&self) {
        self.heartbeat.abort();
        self.mirror.abort();
        self.reporter.flush();
    }
}

/// A client of the coordinator; its channel's worker task runs on `runtime`.
fn connect(runtime: &tokio::runtime::Runtime, options: &NodeOptions) -> Result<Client> {
    let _context = runtime.enter();
    premem_proto::client(&options.coordinator)
        .map_err(|e| TrainError::Node(format!("coordinator {}: {e}", options.coordinator.address)))
}

/// The ring listener on `bind_host` and the address other ranks reach it at.
fn bind_ring(bind_host: &str) -> Result<(RingListener, String)> {
    let bind = bind_address(bind_host);
    let io = |source| TrainError::Io {
        path: bind.clone().into(),
        source,
    };
    let listener = RingListener::bind(&bind).map_err(io)?;
    let local = listener.local_addr().map_err(io)?;
    let ring_address = local.to_string();
    if local.ip().is_unspecified() {
        return Err(TrainError::Config(format!(
            "ring address {ring_address}: other ranks cannot connect to an unspecified address; \
             bind this host's reachable address (the pod IP, say)"
        )));
    }
    Ok((listener, ring_address))
}

/// The job spec the coordinator sent, parsed and validated.
fn job_spec(address: &str, job: &str, json: &str) -> Result<JobSpec> {
    JobSpec::from_json(json, Path::new("spec_json")).map_err(|e| match e {
        SpecError::Job { error, .. } => TrainError::Config(error.to_string()),
        SpecError::Parse { message, .. } => TrainError::Node(format!(
            "coordinator {address}: the job spec of '{job}' does not parse: {message}"
        )),
        other => TrainError::Node(other.to_string()),
    })
}

/// `cluster.backend` with `auto` resolved by `train.device`: NCCL on a
/// CUDA device, the ring on the CPU.
fn resolve_backend(spec: &JobSpec) -> Result<Backend> {
    Ok(match spec.cluster.backend {
        Backend::Auto if train_device(spec)?.is_cuda() => Backend::Nccl,
        Backend::Auto => Backend::Ring,
        chosen => chosen,
    })
}

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
fn form_nccl(rank: u32, generation: &Generation, reply: &RendezvousReply) -> Result<Group> {
    let spec = &generation.spec;
    let device = train_device(spec)?;
    if !device.is_cuda() {
        return Err(TrainError::Config(format!(
            "cluster.backend nccl needs a CUDA train.device, not '{}' (use backend \"ring\" on the CPU)",
            spec.train.device
        )));
    }
    let nccl = crate::nccl::NcclCollective::new(
        rank as usize,
        generation.world_size as usize,
        &reply.nccl_unique_id,
        device,
    )?;
    let aborter = nccl.aborter();
    Ok(Group {
        collective: Box::new(nccl),
        abort: Arc::new(move || {
            if let Err(e) = aborter.abort() {
                tracing::warn!(error = %e, "aborting the NCCL communicator");
            }
        }),
    })
}

#[cfg(not(feature = "nccl"))]
fn form_nccl(_rank: u32, _generation: &Generation, _reply: &RendezvousReply) -> Result<Group> {
    nccl_unique_id().map(|_| unreachable!("refused above"))
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
