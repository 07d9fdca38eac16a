//! premem-trainer: supervised finetuning of a premem-model on a premem-core
//! dataset, with checkpoints in the object store and exact resume.
//!
//! - [`run`]: the run from a validated job spec, as a value with a method
//!   per phase (start or resume, step, agree on stop, checkpoint when due,
//!   finish); [`run::train`] and [`run::train_observed`] drive it;
//! - [`step`]: one optimizer step (micro-batches, all-reduce, clip, update);
//! - [`optim`]: Adam/AdamW over flat fp32 buffers, optionally sharded over
//!   the ranks (ZeRO-1/2, `train.sharding`);
//! - [`schedule`]: learning-rate schedules;
//! - [`checkpoint`]: publishing and restoring checkpoints;
//! - [`baselines`]: gradient variance and distance from init at checkpoints;
//! - [`monitor`]: greedy train accuracy on a few examples, for the metrics;
//! - [`collective`]: what a step needs from other ranks, and its typed
//!   [`CollectiveError`]: [`ring`] (TCP, CPU ranks) and [`nccl`] (CUDA
//!   ranks) implement it;
//! - [`node`]: a rank under a coordinator, as a value going through its
//!   phases (register, rendezvous, form the collective, train a generation,
//!   regroup or finish), and the pool trainer that runs assigned ranks.
//!
//! Every retry loop (registering, reporting the end of training, asking
//! for an assignment, connecting to a ring neighbour) takes its policy from
//! [`premem_core::retry::RetryParams`].

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
