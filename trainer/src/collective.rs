//! What a training step needs from the other ranks. The distributed runtime
//! implements it with NCCL (CUDA, [`crate::nccl`]) or a TCP ring (CPU,
//! [`crate::ring`]); one process alone uses [`SingleProcess`].

use tch::Tensor;

/// Why a collective (or forming one) failed. Each message is complete (it
/// names the backend and the peer or operation); the variant says what kind
/// of failure it was, so a caller can tell an abort from a lost peer or a
/// tensor it should never have passed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CollectiveError {
    /// The group could not be formed: a peer did not connect in time or
    /// refused the handshake, or the rank, world size or id is unusable.
    #[error("{0}")]
    Form(String),
    /// A peer's connection failed mid-collective (closed, reset).
    #[error("{0}")]
    Io(String),
    /// The ranks disagree on the sequence of collectives or on a tensor's
    /// size: they are not running the same program.
    #[error("{0}")]
    Mismatch(String),
    /// Aborted from another thread (the coordinator said the group changed).
    #[error("{0}")]
    Aborted(String),
    /// An earlier failure left this collective unusable; form a new one.
    #[error("{0}")]
    Broken(String),
    /// A tensor (or root rank) this backend cannot take; nothing was sent.
    #[error("{0}")]
    Tensor(String),
    /// NCCL or the CUDA driver failed, or cannot be loaded.
    #[error("{0}")]
    Nccl(String),
}

impl CollectiveError {
    /// The message, to add to it while keeping the kind of failure.
    #[cfg(feature = "nccl")]
    pub(crate) fn message_mut(&mut self) -> &mut String {
        match self {
            CollectiveError::Form(m)
            | CollectiveError::Io(m)
            | CollectiveError::Mismatch(m)
            | CollectiveError::Aborted(m)
            | CollectiveError::Broken(m)
            | CollectiveError::Tensor(m)
            | CollectiveError::Nccl(m) => m,
        }
    }
}

pub trait Collective {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Sums `tensor` over all ranks, in place, on every rank.
    fn all_reduce_sum(&mut self, tensor: &mut Tensor) -> Result<(), CollectiveError>;
    /// Overwrites `tensor` on every rank with rank `root`'s `tensor`.
    fn broadcast(&mut self, tensor: &mut Tensor, root: usize) -> Result<(), CollectiveError>;
    /// `input` is `world_size()` equal pieces; `output` (one piece) gets,
    /// on rank r, the sum over all ranks of their piece r. `output` may be
    /// piece `rank()` of `input` itself.
    fn reduce_scatter_sum(
        &mut self,
        input: &Tensor,
        output: &mut Tensor,
    ) -> Result<(), CollectiveError>;
    /// In place: `tensor` is `world_size()` equal pieces; afterwards piece r
    /// holds rank r's piece r on every rank.
    fn all_gather(&mut self, tensor: &mut Tensor) -> Result<(), CollectiveError>;
}

/// World size 1: every collective is the identity.
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&mut self, _tensor: &mut Tensor) -> Result<(), CollectiveError> {
        Ok(())
    }

    fn broadcast(&mut self, _tensor: &mut Tensor, _root: usize) -> Result<(), CollectiveError> {
        Ok(())
    }

    fn reduce_scatter_sum(
        &mut self,
        input: &Tensor,
        output: &mut Tensor,
    ) -> Result<(), CollectiveError> {
        if input.data_ptr() == output.data_ptr() {
            return Ok(());
        }
        tch::no_grad(|| output.f_copy_(&input.reshape(output.size())))
            .map_err(|e| CollectiveError::Tensor(e.to_string()))
    }

    fn all_gather(&mut self, _tensor: &mut Tensor) -> Result<(), CollectiveError> {
        Ok(())
    }
}
