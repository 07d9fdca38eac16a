//! premem-coordinator: the one stateful service. It holds jobs, forms the
//! trainer groups (ranks, generations, ring addresses or the NCCL id), turns
//! every published checkpoint into evaluation tasks, leases them to
//! evaluators, aggregates P-M accuracy as results arrive, and keeps what a
//! restart needs in its state store. It does not link libtorch.
//!
//! - [`state`]: the rules as plain data, one module each: the trainer
//!   [`group`](state::group), the [`pool`](state::pool) of trainers started
//!   without a job, the checkpoints' [`tasks`](state::tasks), their
//!   [`leases`](state::leases), the P-M [`fold`](state::fold), and the
//!   [`task_id`](state::task_id) codec;
//! - [`runs`]: the jobs' run stores: building a job from its spec, finding
//!   published checkpoints, adopting result files already there;
//! - [`service`]: the gRPC service over the state: request checks, the
//!   errors' statuses, the replies' wire form;
//! - [`persist`]: the state store and the rebuild after a restart;
//! - [`metrics`]: Prometheus metrics;
//! - [`dashboard`]: the live web dashboard and its JSON;
//! - [`publish`]: what goes out besides the gRPC replies: TensorBoard event
//!   files, MLflow, the early-stop record;
//! - [`server`]: serving it all; [`http_serve`]: the HTTP listener (a
//!   bound on a request header's time, a graceful stop);

pub mod dashboard;
pub mod http_serve;
pub mod membership;
pub mod metrics;
pub mod persist;
pub mod publish;
pub mod runs;
pub mod server;
pub mod service;
pub mod state;
pub mod state_lock;

pub use server::{Running, ServeError, ServeOptions, start};
pub use service::prefixes::AllowedPrefixes;
pub use service::urls::AllowedUrls;
pub use state::Timing;
