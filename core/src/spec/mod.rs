//! Spec: the job spec (one TOML file, validated at the edge), its memory
//! plan, sweeps of specs, and the provenance and record of a run. Imports
//! from every other folder; no other folder imports from it.

mod bytes;
mod job;
pub mod plan;
pub mod provenance;
pub mod record;
pub mod sweep;

pub use bytes::ByteSize;
pub use job::{
    ActivationCheckpointing, Backend, CheckpointSpec, ClusterSpec, DEFAULT_EVAL_BATCH_SIZE,
    DataSpec, EvalSpec, JobSpec, MAX_EPOCHS, MAX_NAME_LEN, ModelSpec, OptimizerKind, Precision,
    RunSpec, ScheduleSpec, Sharding, SpecError, TrackingSpec, TrainSpec, check_name, parse_toml,
    read_spec_file,
};
