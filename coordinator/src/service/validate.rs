//! The request fields the service checks before anything reaches the
//! state, in one place; what the state checks against a job (ranks,
//! generations, rows of a task) it refuses itself.

use std::path::Path;

use premem_core::spec::JobSpec;
use premem_proto::v1;

use crate::state::{Refusal, Refused, Row};

/// The spec of a submission, parsed and validated once: the rest of the
/// coordinator trusts it.
pub fn spec(spec_json: &str) -> Refused<JobSpec> {
    JobSpec::from_json(spec_json, Path::new("spec_json"))
        .map_err(|e| Refusal::Invalid(e.to_string()))
}

/// A registration offers what its backend needs.
pub fn registration(r: &v1::RegisterTrainerRequest) -> Refused<()> {
    if r.nccl_unique_id.len() > 1024 || r.ring_address.len() > 256 {
        return Err(Refusal::Invalid(
            "ring_address or nccl_unique_id too long".into(),
        ));
    }
    let backend = v1::Backend::try_from(r.backend).unwrap_or(v1::Backend::Unspecified);
    match backend {
        v1::Backend::Ring if r.ring_address.parse::<std::net::SocketAddr>().is_err() => {
            Err(Refusal::Invalid(format!(
                "ring_address '{}' is not host:port",
                r.ring_address
            )))
        }
        v1::Backend::Nccl if r.rank == 0 && r.nccl_unique_id.is_empty() => Err(Refusal::Invalid(
            "rank 0 of an NCCL group must send its nccl_unique_id".into(),
        )),
        v1::Backend::Unspecified => Err(Refusal::Invalid("backend must be RING or NCCL".into())),
        _ => Ok(()),
    }
}

/// The NCCL id a rendezvous passes (`None`: the rank uses the ring).
pub fn rendezvous_nccl(r: &v1::RendezvousRequest) -> Refused<Option<&[u8]>> {
    if r.nccl_unique_id.len() > 1024 {
        return Err(Refusal::Invalid("nccl_unique_id too long".into()));
    }
    Ok((r.backend() == v1::Backend::Nccl).then_some(r.nccl_unique_id.as_slice()))
}

/// The longest name a trainer or evaluator may give itself.
pub const MAX_PEER_NAME: usize = 256;

/// A trainer's or evaluator's name for itself (`role`): it is logged and
/// echoed in replies, so it is bounded and has no control characters.
pub fn peer_name(role: &str, name: &str) -> Refused<()> {
    if name.len() > MAX_PEER_NAME {
        return Err(Refusal::Invalid(format!(
            "{role} name too long: {} bytes, at most {MAX_PEER_NAME}",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Refusal::Invalid(format!(
            "{role} name has control characters"
        )));
    }
    Ok(())
}

/// The rows of a completion, checked against their task by the state.
pub fn rows(request: &v1::CompleteTaskRequest) -> Vec<Row> {
    request
        .rows
        .iter()
        .map(|r| Row {
            id: r.example_id.clone(),
            accuracy: r.accuracy,
            perplexity: r.perplexity,
            // Not on the wire: the result file says.
            distinct: None,
        })
        .collect()
}

/// A failure's message as the log and the job's status keep it: without
/// libtorch's C++ stack, at most 4000 characters.
pub fn failure_message(message: &str) -> String {
    premem_core::error_text::concise(message)
        .chars()
        .take(4000)
        .collect()
}
