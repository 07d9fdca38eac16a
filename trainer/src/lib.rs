//! premem-trainer: data-parallel supervised finetuning (one process per rank),
//! collectives (NCCL on CUDA, a TCP ring on CPU), checkpoints and exact resume.
//! Filled by the trainer and distributed-runtime issues.
