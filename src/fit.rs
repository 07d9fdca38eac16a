//! Whether a job fits its GPUs, asked where the CLI starts one (`premem
//! train`, `run`, `sweep`) before any weights are loaded; the plan itself
//! is `premem_core::spec::plan`.

use anyhow::Result;
use premem_core::JobSpec;
use premem_core::spec::ByteSize;
use premem_core::spec::plan;
use premem_model::runtime;

/// The smallest total memory of this host's CUDA devices (the one a rank
/// on any of them must fit), or `None` without a device.
pub fn local_gpu_memory() -> Option<ByteSize> {
    let devices = runtime::cuda_devices().ok()?;
    devices
        .iter()
        .map(|d| d.total_memory_bytes)
        .min()
        .map(ByteSize)
}

/// The GPU memory a job started on this host plans against: the devices'
/// own, else the spec's `train.gpu_memory`; and whether the ranks run on
/// CUDA.
pub fn local_target(spec: &JobSpec) -> (bool, Option<ByteSize>) {
    let device_memory = local_gpu_memory();
    let cuda = plan::spec_wants_cuda(spec, device_memory.is_some());
    (cuda, device_memory.or(spec.train.gpu_memory))
}

/// Refuses a job whose ranks, started on this host, do not fit its GPUs
/// (or the spec's `train.gpu_memory`), with the plan and the settings that
/// would fit. On the CPU nothing is checked.
pub fn check_local(spec: &JobSpec) -> Result<()> {
    let (cuda, memory) = local_target(spec);
    plan::check_job(spec, cuda, memory)?;
    Ok(())
}

/// [`check_local`] for `premem train`: one process, so one rank whatever
/// `cluster.trainers` says.
pub fn check_single_process(spec: &JobSpec) -> Result<()> {
    let mut single = spec.clone();
    single.cluster.trainers = 1;
    check_local(&single)
}
