//! The trainer's errors: each says what to fix and where.

use premem_core::StoreError;
use premem_core::dataset::DatasetError;
use premem_core::spec::SpecError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] premem_model::ModelError),
    #[error(transparent)]
    Batch(#[from] premem_model::batch::BatchError),
    #[error(transparent)]
    Optimizer(#[from] crate::optim::OptimizerError),
    /// The run in the store cannot be continued with this spec.
    #[error("{url}: {message}")]
    Resume { url: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A collective failed, or the group could not be formed: the node
    /// regroups on these (unless it was stopping).
    #[error("collective: {0}")]
    Collective(#[from] crate::collective::CollectiveError),
    /// A node could not start, or its coordinator failed or refused a call.
    /// Shown as `collective:` as when these shared the variant above.
    #[error("collective: {0}")]
    Node(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
