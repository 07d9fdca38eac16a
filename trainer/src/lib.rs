//! premem-trainer: supervised finetuning of a premem-model on a premem-core
//! dataset, with checkpoints in the object store and exact resume.
//!
//! - [`run::train`]: the run (load, step, checkpoint, log);
//! - [`optim`]: Adam/AdamW over flat fp32 buffers;
//! - [`step`]: one optimizer step (micro-batches, all-reduce, clip, update);
//! - [`schedule`]: learning-rate schedules;
//! - [`checkpoint`]: publishing and restoring checkpoints;
//! - [`baselines`]: gradient variance and distance from init at checkpoints;
//! - [`collective`]: what a step needs from other ranks, and its typed
//!   [`CollectiveError`]: [`ring`] (TCP, CPU ranks) and [`nccl`] (CUDA
//!   ranks) implement it;
//! - [`node`]: a rank under a coordinator (register, rendezvous, heartbeat,
//!   regroup and resume when a rank is lost).

pub mod baselines;
pub mod checkpoint;
pub mod collective;
pub mod error;
pub mod monitor;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod node;
pub mod optim;
pub mod ring;
pub mod run;
pub mod schedule;
pub mod step;

pub use collective::{Collective, CollectiveError, SingleProcess};
pub use error::{Result, TrainError};
pub use run::{TrainObserver, TrainOptions, TrainSummary, train, train_observed};
