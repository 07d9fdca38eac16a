//! What a training step needs from the other ranks. The distributed runtime
//! implements it with NCCL (CUDA, [`crate::nccl`]) or a TCP ring (CPU,
//! [`crate::ring`]); one process alone uses [`SingleProcess`].

use tch::Tensor;

pub trait Collective {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Sums `tensor` over all ranks, in place, on every rank.
    fn all_reduce_sum(&mut self, tensor: &mut Tensor) -> Result<(), String>;
    /// Overwrites `tensor` on every rank with rank `root`'s `tensor`.
    fn broadcast(&mut self, tensor: &mut Tensor, root: usize) -> Result<(), String>;
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

    fn all_reduce_sum(&mut self, _tensor: &mut Tensor) -> Result<(), String> {
        Ok(())
    }

    fn broadcast(&mut self, _tensor: &mut Tensor, _root: usize) -> Result<(), String> {
        Ok(())
    }
}
