//! The trainer's errors: each says what to fix and where.

use premem_core::StoreError;
use premem_core::data::dataset::DatasetError;
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
    /// A non-finite loss or gradient norm: the run stops before the update.
    #[error(
        "step {step}: the loss is {loss} and the gradient norm {grad_norm}: training stopped \
         before this step's update, and nothing of it is saved or published (a train.lr too \
         large, or a base model with non-finite weights?)"
    )]
    Diverged {
        step: u64,
        loss: f64,
        grad_norm: f64,
    },
    /// Weights that are not finite where a checkpoint would publish them.
    #[error(
        "step {step}: weight {name} holds non-finite values: the checkpoint is not published \
         (a train.lr too large?)"
    )]
    NonFiniteWeights { step: u64, name: String },
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
