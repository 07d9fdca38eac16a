//! The evaluator's errors.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: no example with id '{id}'")]
    UnknownExample { id: String, path: PathBuf },
    /// A checkpoint location that is neither a model directory nor a
    /// published checkpoint.
    #[error("checkpoint '{location}': {message}")]
    Checkpoint { location: String, message: String },
    #[error(transparent)]
    Results(#[from] premem_core::results::ResultsError),
    #[error(transparent)]
    Store(#[from] premem_core::StoreError),
    #[error(transparent)]
    Dataset(#[from] premem_core::dataset::DatasetError),
    #[error(transparent)]
    Model(#[from] premem_model::ModelError),
    #[error(transparent)]
    Batch(#[from] premem_trainer::batch::BatchError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;
