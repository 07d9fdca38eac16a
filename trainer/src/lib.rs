//! premem-trainer: supervised finetuning of a premem-model on a premem-core
//! dataset, with checkpoints in the object store and exact resume.
//!
//! - [`run::train`]: the run (load, step, checkpoint, log);
//! - [`batch`]: tokenization, collation, the masked loss;
//! - [`optim`]: Adam/AdamW over flat fp32 buffers;
//! - [`step`]: one optimizer step (micro-batches, all-reduce, clip, update);
//! - [`schedule`]: learning-rate schedules;
//! - [`checkpoint`]: publishing and restoring checkpoints;
//! - [`baselines`]: gradient variance and distance from init at checkpoints;
//! - [`collective`]: what a step needs from other ranks (filled by the
//!   distributed runtime).

pub mod baselines;
pub mod batch;
pub mod bench;
pub mod checkpoint;
pub mod collective;
pub mod error;
pub mod monitor;
pub mod optim;
pub mod run;
pub mod schedule;
pub mod step;

pub use collective::{Collective, SingleProcess};
pub use error::{Result, TrainError};
pub use run::{TrainOptions, TrainSummary, train};
