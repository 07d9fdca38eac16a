//! premem-evaluator: what an evaluator does with one task — for each example
//! of a checkpoint's train or test split, K samples checked against the
//! answer and the perplexity of the target trace — and where results go.
//!
//! - [`evaluate`]: the per-task core ([`Evaluator::evaluate`]);
//! - [`checkpoint`]: a checkpoint location (model directory or published
//!   store URL) made local;
//! - [`verify`]: a local checkpoint directory against its manifest, once;
//! - [`run`]: every checkpoint of a run into the run's result files;
//! - [`split`]: a run's split as its checkpoints are evaluated on it (the
//!   examples, how their answers are marked);
//! - [`cache`]: published checkpoints on local disk, bounded by bytes;
//! - [`worker`]: a worker that leases tasks from the coordinator, evaluates
//!   them and reports their rows;
//! - [`results`]: result rows to and from Parquet (from `premem-core`).

pub mod cache;
pub mod checkpoint;
pub mod error;
pub mod evaluate;
pub mod ifd;
pub mod run;
pub mod split;
pub mod verify;
pub mod worker;

pub use cache::CheckpointCache;
pub use error::{EvalError, Result};
pub use evaluate::{EvalSettings, Evaluator, ExampleResult, SamplerKind, select};
/// Result rows to and from Parquet (they live in `premem-core`, which the
/// report reads without libtorch).
pub use premem_core::data::results;
pub use worker::{ModelSlot, WorkerOptions, WorkerSummary, evaluate_task, run_worker};
