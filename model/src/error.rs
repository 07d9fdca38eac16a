//! The one error type of premem-model. Every variant names the file (and the
//! field or tensor) the user has to look at.

use std::path::PathBuf;

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// config.json is unreadable, names an unknown family or holds a value
    /// premem cannot use (`premem_core::arch`).
    #[error(transparent)]
    Config(#[from] premem_core::arch::ConfigError),

    /// A safetensors file (or its index) is corrupt or inconsistent.
    #[error("{path}: not a usable safetensors checkpoint: {message}")]
    Safetensors { path: PathBuf, message: String },

    /// The checkpoint's tensors do not match what the config describes.
    #[error("{path}: checkpoint does not match its config.json:\n{details}")]
    WeightsMismatch { path: PathBuf, details: String },

    #[error("{path}: {message}")]
    Tokenizer { path: PathBuf, message: String },

    /// A caller passed something the model cannot use (shapes, devices...).
    #[error("{0}")]
    Invalid(String),

    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}
