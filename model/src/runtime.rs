//! Start-up of the torch runtime: one binary for CPU and GPU hosts.
//!
//! premem links the CPU parts of libtorch only (a `libtorch_cuda.so` given to
//! the linker is dropped by `--as-needed`). On a GPU host, loading
//! `libtorch_cuda.so` with `RTLD_GLOBAL` before the first tensor operation
//! registers the CUDA backend; on a CPU host the load fails and premem runs on
//! the CPU. [`init`] does that once; `premem doctor` reports what happened.

use std::ffi::{c_char, c_int};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
use premem_core::error_text::chain;

/// The libtorch version tch 0.24 binds (checked by torch-sys at build time).
pub const LIBTORCH_VERSION: &str = "2.11.0";

/// Oldest NCCL whose API cudarc 0.19 binds in full.
pub const MIN_NCCL_VERSION: (i32, i32, i32) = (2, 28, 3);

#[derive(Clone, Debug)]
pub struct CudaLoad {
    /// Where `libtorch_cuda.so` was looked for.
    pub candidate: PathBuf,
    /// `Ok` when loaded, else the loader's message (the missing library).
    pub result: Result<(), String>,
}

static CUDA_LOAD: OnceLock<CudaLoad> = OnceLock::new();
static HOST_MEMORY_KEPT: OnceLock<bool> = OnceLock::new();

/// Host allocations below this size are served from the heap rather than by
/// their own `mmap` (glibc's default threshold moves between 128 KiB and 32
/// MiB), and the heap keeps up to this much free memory at its top rather
/// than returning it to the kernel (default: twice the mmap threshold).
const KEEP_BYTES: c_int = 1 << 30;

/// Loads `libtorch_cuda.so` if it can be, once, and keeps freed host memory
/// for reuse ([`keep_freed_host_memory`]); call before any tensor work.
pub fn init() -> &'static CudaLoad {
    CUDA_LOAD.get_or_init(|| {
        HOST_MEMORY_KEPT.get_or_init(keep_freed_host_memory);
        // Next to the libtorch_cpu.so this process already loaded, else by name
        // (run path and LD_LIBRARY_PATH).
        let candidate = libtorch_dir()
            .map(|dir| dir.join("libtorch_cuda.so"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("libtorch_cuda.so"));
        // SAFETY: loading a shared library runs its constructors; this is
        // libtorch's own CUDA part, loaded once, and never unloaded.
        let result = match unsafe { Library::open(Some(&candidate), RTLD_NOW | RTLD_GLOBAL) } {
            Ok(lib) => {
                std::mem::forget(lib);
                Ok(())
            }
            Err(e) => Err(chain(&e)),
        };
        CudaLoad { candidate, result }
    })
}

/// Makes glibc's allocator keep the large buffers a training step frees
/// (activations, logits, their gradients) for the next step instead of
/// unmapping them: otherwise every step maps them again and the kernel zeroes
/// each page on first touch, which cost a CPU training step about a tenth of
/// its time (benches/README.md). Both limits are set: fixing the mmap
/// threshold alone stops glibc from raising its trim threshold, and the heap
/// then shrinks and regrows between the sampler's steps (half its speed).
/// Buffers of 1 GiB and more still get their own mapping. Returns whether
/// glibc took both settings.
#[cfg(target_env = "gnu")]
pub fn keep_freed_host_memory() -> bool {
    // SAFETY: mallopt only sets parameters of the allocator; it is called
    // once, at start-up, before any tensor work.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP_BYTES) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_BYTES) == 1
    }
}

/// Not glibc: the allocator keeps its own policy.
#[cfg(not(target_env = "gnu"))]
pub fn keep_freed_host_memory() -> bool {
    false
}

/// Whether [`init`] made the allocator keep freed host memory.
pub fn host_memory_kept() -> bool {
    HOST_MEMORY_KEPT.get().copied().unwrap_or(false)
}

/// The size below which freed host buffers are kept, in bytes.
pub const HOST_KEEP_BYTES: u64 = KEEP_BYTES as u64;

/// Resolves a device name: `auto` (CUDA when available), `cpu`, `cuda` or
/// `cuda:N`; a CUDA index must exist on this host. Errors say what is wrong
/// with the name; callers add which setting it came from.
pub fn parse_device(name: &str) -> Result<tch::Device, String> {
    init();
    let device = match name {
        "auto" => tch::Device::cuda_if_available(),
        "cpu" => tch::Device::Cpu,
        "cuda" => tch::Device::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => tch::Device::Cuda(index),
            _ => return Err(format!("'{other}': expected auto, cpu, cuda or cuda:N")),
        },
    };
    if let tch::Device::Cuda(index) = device {
        let count = tch::Cuda::device_count() as usize;
        if index >= count {
            return Err(format!(
                "cuda:{index}: this host has {count} CUDA devices (see `premem doctor`)"
            ));
        }
    }
    Ok(device)
}

/// The device name one of several ranks on a host uses: with a local rank
/// (its index among the host's ranks) and `train.device` `auto` or `cuda`,
/// the GPU of that index, `cuda:{local_rank}`, so that the ranks of a
/// multi-GPU host each take their own GPU. `cpu`, `cuda:N`, and `auto` on
/// a host without CUDA devices (`cuda_devices` = 0) stay as they are.
pub fn local_device_name(device: &str, local_rank: Option<usize>, cuda_devices: usize) -> String {
    match (device, local_rank) {
        ("cuda", Some(rank)) => format!("cuda:{rank}"),
        ("auto", Some(rank)) if cuda_devices > 0 => format!("cuda:{rank}"),
        _ => device.to_string(),
    }
}

/// CUDA devices libtorch sees (0 without CUDA).
pub fn cuda_device_count() -> usize {
    init();
    if tch::Cuda::is_available() {
        tch::Cuda::device_count() as usize
    } else {
        0
    }
}

/// The directory of the `libtorch_cpu.so` mapped into this process.
pub fn libtorch_dir() -> Option<PathBuf> {
    loaded_library("libtorch_cpu.so").and_then(|p| p.parent().map(Path::to_path_buf))
}

/// Paths of mapped shared objects whose file name starts with `prefix`.
pub fn loaded_libraries(prefix: &str) -> Vec<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut found: Vec<PathBuf> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(PathBuf::from)
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

fn loaded_library(prefix: &str) -> Option<PathBuf> {
    loaded_libraries(prefix).into_iter().next()
}

/// The version string of the Python wheel libtorch came from, if any
/// (`<torch>/version.py`), e.g. `2.11.0+cu130`.
pub fn wheel_version(libtorch_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(libtorch_dir.parent()?.join("version.py")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
}

/// A CUDA device as the driver reports it.
#[derive(Clone, Debug)]
pub struct CudaDevice {
    pub index: usize,
    pub name: String,
    pub total_memory_bytes: u64,
}

/// Names and memory of CUDA devices through the driver API (`libcuda.so.1`).
pub fn cuda_devices() -> Result<Vec<CudaDevice>, String> {
    type CuInit = unsafe extern "C" fn(u32) -> c_int;
    type CuDeviceGetCount = unsafe extern "C" fn(*mut c_int) -> c_int;
    type CuDeviceGet = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
    type CuDeviceGetName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
    type CuDeviceTotalMem = unsafe extern "C" fn(*mut usize, c_int) -> c_int;
    // SAFETY: the driver library is loaded for the lifetime of the call and the
    // functions are called with the signatures of the CUDA driver API.
    unsafe {
        let lib = libloading::Library::new("libcuda.so.1").map_err(|e| chain(&e))?;
        let cu_init: libloading::Symbol<CuInit> = lib.get(b"cuInit").map_err(|e| e.to_string())?;
        let count_fn: libloading::Symbol<CuDeviceGetCount> =
            lib.get(b"cuDeviceGetCount").map_err(|e| e.to_string())?;
        let get_fn: libloading::Symbol<CuDeviceGet> =
            lib.get(b"cuDeviceGet").map_err(|e| e.to_string())?;
        let name_fn: libloading::Symbol<CuDeviceGetName> =
            lib.get(b"cuDeviceGetName").map_err(|e| e.to_string())?;
        let mem_fn: libloading::Symbol<CuDeviceTotalMem> =
            lib.get(b"cuDeviceTotalMem_v2").map_err(|e| e.to_string())?;
        let rc = cu_init(0);
        if rc != 0 {
            return Err(format!("cuInit failed with CUDA error {rc}"));
        }
        let mut count = 0;
        count_fn(&mut count);
        let mut devices = vec![];
        for index in 0..count {
            let mut device = 0;
            if get_fn(&mut device, index) != 0 {
                continue;
            }
            let mut name = [0 as c_char; 256];
            name_fn(name.as_mut_ptr(), name.len() as c_int, device);
            let mut memory = 0usize;
            mem_fn(&mut memory, device);
            devices.push(CudaDevice {
                index: index as usize,
                name: std::ffi::CStr::from_ptr(name.as_ptr())
                    .to_string_lossy()
                    .into_owned(),
                total_memory_bytes: memory as u64,
            });
        }
        Ok(devices)
    }
}

#[derive(Clone, Debug)]
pub struct NcclInfo {
    /// Where the library that answered was mapped from.
    pub path: Option<PathBuf>,
    pub version: (i32, i32, i32),
    /// Every libnccl mapped into the process: two different files clash.
    pub mapped: Vec<PathBuf>,
}

/// Loads NCCL the way cudarc does (`libnccl.so` first) and asks its version.
pub fn nccl() -> Result<NcclInfo, String> {
    type GetVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
    let mut errors = vec![];
    for name in ["libnccl.so", "libnccl.so.2"] {
        // SAFETY: NCCL's constructors are side-effect free; ncclGetVersion
        // has the declared signature in every NCCL 2.x.
        let lib = match unsafe { libloading::Library::new(name) } {
            Ok(lib) => lib,
            Err(e) => {
                errors.push(chain(&e));
                continue;
            }
        };
        let code = unsafe {
            let get: libloading::Symbol<GetVersion> =
                lib.get(b"ncclGetVersion").map_err(|e| e.to_string())?;
            let mut code = 0;
            let rc = get(&mut code);
            if rc != 0 {
                return Err(format!("ncclGetVersion failed with NCCL error {rc}"));
            }
            code
        };
        let mapped = loaded_libraries("libnccl.so");
        std::mem::forget(lib);
        return Ok(NcclInfo {
            path: mapped.first().cloned(),
            version: (code / 10000, (code % 10000) / 100, code % 100),
            mapped,
        });
    }
    Err(errors.join("; "))
}

#[cfg(test)]
mod tests {
    #[cfg(target_env = "gnu")]
    #[test]
    fn glibc_takes_both_allocator_settings() {
        assert!(super::keep_freed_host_memory());
    }
}
