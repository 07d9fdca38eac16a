//! premem-coordinator: the one stateful service. It holds jobs, forms the
//! trainer groups (ranks, generations, ring addresses or the NCCL id), turns
//! every published checkpoint into evaluation tasks, leases them to
//! evaluators, aggregates P-M accuracy as results arrive, and keeps what a
//! restart needs in its state store. It does not link libtorch.
//!
//! - [`state`]: the rules (groups, tasks, leases, completion) as plain data;
//! - [`service`]: the gRPC service over the state;
//! - [`persist`]: the state store and the rebuild after a restart;
//! - [`metrics`]: Prometheus metrics;
//! - [`server`]: serving it all.
//!
//! The load benchmark of the lease path is `tests/bench.rs`.

pub mod metrics;
pub mod persist;
pub mod server;
pub mod service;
pub mod state;

pub use server::{Running, ServeError, ServeOptions, start};
pub use state::Timing;
