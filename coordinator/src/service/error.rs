//! The service's errors and the one place they become gRPC statuses.

use std::fmt::Display;

use tonic::Status;

use crate::state::Refusal;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request cannot be taken; it changed nothing.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The coordinator could not do its part (its state store, a blocking
    /// task that died).
    #[error("{what}: {message}")]
    Internal { what: &'static str, message: String },
}

impl ServiceError {
    pub fn internal(what: &'static str, error: impl Display) -> ServiceError {
        ServiceError::Internal {
            what,
            message: error.to_string(),
        }
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        match error {
            ServiceError::Refused(Refusal::NotFound(m)) => Status::not_found(m),
            ServiceError::Refused(Refusal::Invalid(m)) => Status::invalid_argument(m),
            ServiceError::Refused(Refusal::Precondition(m)) => Status::failed_precondition(m),
            ServiceError::Refused(Refusal::AlreadyExists(m)) => Status::already_exists(m),
            ServiceError::Refused(Refusal::Denied(m)) => Status::permission_denied(m),
            ServiceError::Refused(Refusal::Busy(m)) => Status::unavailable(m),
            ServiceError::Internal { what, message } => {
                tracing::error!(error = %message, "{what}");
                Status::internal(format!("{what}: {message}"))
            }
        }
    }
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Status {
        ServiceError::from(refusal).into()
    }
}
