//! Spec: the job spec (one TOML file, checked at the edge), its memory
//! plan, sweeps of specs, and the provenance and record of a run. Imports
//! from every other folder; no other folder imports from it.

mod bytes;
mod check;
mod error;
mod job;
mod parse;
pub mod plan;
pub mod provenance;
pub mod record;
pub mod sweep;

pub use bytes::ByteSize;
pub use check::{MAX_EPOCHS, MAX_NAME_LEN, MAX_PROCESSES, check_name};
pub use error::{
    CheckpointSpecError, ClusterSpecError, EvalSpecError, JobSpecError, ModelSpecError, NameError,
    RunSpecError, SpecError, TrackingSpecError, TrainSpecError,
};
pub use job::{
    ActivationCheckpointing, Backend, CheckpointSpec, ClusterSpec, DEFAULT_EVAL_BATCH_SIZE,
    DataSpec, EvalSpec, JobSpec, ModelSpec, OptimizerKind, Precision, RunSpec, ScheduleSpec,
    Sharding, TrackingSpec, TrainSpec,
};
pub use parse::{parse_toml, read_spec_file};
