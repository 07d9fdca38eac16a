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
    /// A task the evaluator cannot carry out as given.
    #[error("task '{task}' of run {run}: {message}")]
    Task {
        task: String,
        run: String,
        message: String,
    },
    /// The checkpoint cache directory cannot be used.
    #[error("checkpoint cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
    /// The coordinator refused the bearer token: retrying cannot help.
    #[error(
        "coordinator {address}: the token was refused ({message}); give the cluster's token (--token-file or $PREMEM_TOKEN)"
    )]
    TokenRefused { address: String, message: String },
    /// The coordinator answered a call with an error retrying cannot fix.
    #[error("coordinator {address}: {message}")]
    Coordinator { address: String, message: String },
    #[error(transparent)]
    Connect(#[from] premem_proto::ConnectError),
    #[error(transparent)]
    Results(#[from] premem_core::data::results::ResultsError),
    #[error(transparent)]
    Store(#[from] premem_core::StoreError),
    #[error(transparent)]
    Dataset(#[from] premem_core::data::dataset::DatasetError),
    #[error(transparent)]
    Model(#[from] premem_model::ModelError),
    #[error(transparent)]
    Batch(#[from] premem_model::batch::BatchError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;
