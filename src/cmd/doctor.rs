//! `premem doctor`: what this binary finds — libtorch, CUDA devices, NCCL —
//! and why anything is missing.

use anyhow::Result;
use premem_model::runtime;

pub fn run() -> Result<()> {
    println!("premem {}", env!("CARGO_PKG_VERSION"));
    libtorch();
    cuda();
    nccl();
    Ok(())
}

fn libtorch() {
    match runtime::libtorch_dir() {
        Some(dir) => {
            let version = runtime::wheel_version(&dir)
                .unwrap_or_else(|| format!("{} (pinned at build)", runtime::LIBTORCH_VERSION));
            println!("libtorch: {version} from {}", dir.display());
        }
        None => println!("libtorch: {} (location unknown)", runtime::LIBTORCH_VERSION),
    }
    println!("cpu threads: {}", tch::get_num_threads());
}

fn cuda() {
    let cuda = runtime::init();
    if runtime::host_memory_kept() {
        println!(
            "host allocator: glibc keeps freed buffers under {} MiB for reuse",
            runtime::HOST_KEEP_BYTES >> 20
        );
    } else {
        println!("host allocator: its own defaults (not glibc, or it refused the settings)");
    }
    match &cuda.result {
        Ok(()) => println!("libtorch_cuda: loaded from {}", cuda.candidate.display()),
        Err(why) => println!("libtorch_cuda: not loaded, running on the CPU only\n  why: {why}"),
    }
    let count = tch::Cuda::device_count();
    println!(
        "cuda: available={} devices={count} cudnn={}",
        tch::Cuda::is_available(),
        tch::Cuda::cudnn_is_available()
    );
    match runtime::cuda_devices() {
        Ok(devices) => {
            for d in devices {
                println!(
                    "  cuda:{} {} ({:.1} GiB)",
                    d.index,
                    d.name,
                    d.total_memory_bytes as f64 / (1u64 << 30) as f64
                );
            }
        }
        Err(why) => println!("  no CUDA driver: {why}"),
    }
}

fn nccl() {
    let nccl = match runtime::nccl() {
        Ok(nccl) => nccl,
        Err(why) => {
            println!(
                "nccl: not found (needed for multi-GPU training only; CPU ranks use the TCP ring)\n  why: {why}"
            );
            return;
        }
    };
    let (major, minor, patch) = nccl.version;
    let path = nccl
        .path
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!("nccl: {major}.{minor}.{patch} from {path}");
    if nccl.version < runtime::MIN_NCCL_VERSION {
        let (a, b, c) = runtime::MIN_NCCL_VERSION;
        println!("  problem: premem needs NCCL >= {a}.{b}.{c}");
    }
    if nccl.mapped.len() > 1 {
        println!(
            "  problem: several NCCL libraries are loaded and will clash: {}",
            nccl.mapped
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
