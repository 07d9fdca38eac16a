//! The NCCL collective between CUDA ranks (cudarc, NCCL loaded at run time).
//!
//! cudarc is built with `dynamic-loading`: nothing CUDA is linked, so the
//! trainer builds and runs on hosts without CUDA, and NCCL (`libnccl.so`) and
//! the CUDA driver (`libcuda.so.1`) are opened on first use. cudarc's loader
//! panics when a library or a symbol is missing; every call here runs inside
//! `catch_unwind` and the library's presence is probed first, so callers only
//! ever see an error ([`CollectiveError`]).
//!
//! Before use:
//! - cudarc opens `libnccl.so` (not `libnccl.so.2`). It must be the same file
//!   as the `libnccl.so.2` that `libtorch_cuda.so` loaded, or the two copies
//!   clash ("corrupted comm object detected"): put a directory holding
//!   `libnccl.so -> <torch's libnccl.so.2>` first on `LD_LIBRARY_PATH`.
//!   [`NcclCollective::new`] refuses to start when two NCCL files are mapped.
//! - cudarc 0.19 binds NCCL 2.28.3's API; [`nccl_version`] checks the loaded
//!   library against [`MIN_NCCL_VERSION`] (the torch 2.11 wheels ship 2.28.9).
//! - NCCL refuses two ranks on one GPU ("Duplicate GPU detected"): one rank
//!   per device. Multi-rank tests therefore run on the CPU ring
//!   ([`crate::ring`]); NCCL itself is tested at world size 1 on a GPU.
//!
//! Streams: every collective is enqueued on the legacy default (null) stream
//! of the device's primary context, the context libtorch's runtime uses. tch
//! offers no stream guards, so libtorch runs its kernels on that same stream:
//! the kernels that produced a tensor are ordered before the NCCL kernel that
//! reads it, and later libtorch kernels after it. Each collective then waits
//! for the stream to drain before it returns, by polling (`cuStreamQuery`)
//! while checking `ncclCommGetAsyncError` and the abort flag, as NCCL advises
//! instead of a blocking synchronize. So when a call returns `Ok`, the tensor
//! holds the result (for the host and for any stream), an asynchronous NCCL
//! error is reported by the call it happened in, and [`NcclAborter::abort`]
//! from another thread ends a collective that waits on a lost rank. The cost
//! is one host synchronization per collective; a training step makes two.

use std::any::Any;
use std::ffi::{CStr, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::ptr::null_mut;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cudarc::driver::result as cu;
use cudarc::driver::sys as cu_sys;
use cudarc::nccl::result as nccl;
use cudarc::nccl::sys;
use tch::{Device, Kind, Tensor};

use crate::collective::{Collective, CollectiveError};

/// Oldest NCCL whose API cudarc 0.19 binds in full.
pub const MIN_NCCL_VERSION: (u32, u32, u32) = (2, 28, 3);

/// Size of an NCCL unique id (`ncclUniqueId`), as [`unique_id`] returns it.
pub const UNIQUE_ID_BYTES: usize = 128;

const _: () = assert!(std::mem::size_of::<sys::ncclUniqueId>() == UNIQUE_ID_BYTES);

/// How long a collective that saw its communicator aborted waits for NCCL's
/// kernels to leave the stream before it gives up and returns.
const ABORT_DRAIN: Duration = Duration::from_secs(10);

/// Why a communicator is gone after [`NcclAborter::abort`]: the group
/// changed (any other reason is a failure of this communicator).
const ABORTED: &str = "aborted";

const NCCL_NOT_FOUND: &str = "libnccl.so not found on LD_LIBRARY_PATH (cudarc opens libnccl.so, not \
     libnccl.so.2): put a directory holding libnccl.so -> torch's libnccl.so.2 first on \
     LD_LIBRARY_PATH";

/// Loads NCCL (once) and returns its version; an error when NCCL cannot be
/// loaded or is older than [`MIN_NCCL_VERSION`].
pub fn nccl_version() -> Result<(u32, u32, u32), CollectiveError> {
    no_panic("nccl: loading libnccl.so", || {
        // SAFETY: only opens and closes candidate library files; running
        // NCCL's initializers has no effect beyond the library itself.
        if !unsafe { sys::is_culib_present() } {
            return Err(format!("nccl: {NCCL_NOT_FOUND}"));
        }
        let code = nccl::get_nccl_version()
            .map_err(|e| format!("nccl: ncclGetVersion failed: {}", describe(e.0)))?;
        let version = decode_version(code)?;
        check_version(version)?;
        Ok(version)
    })
    .map_err(CollectiveError::Nccl)
}

/// A new NCCL unique id (`ncclGetUniqueId`, [`UNIQUE_ID_BYTES`] bytes). Rank 0
/// makes it and hands it to every rank before they call
/// [`NcclCollective::new`]; it also names rank 0's bootstrap address.
pub fn unique_id() -> Result<Vec<u8>, CollectiveError> {
    nccl_version()?;
    no_panic("nccl unique_id", || {
        let id = nccl::get_uniqueid()
            .map_err(|e| format!("nccl unique_id: ncclGetUniqueId failed: {}", describe(e.0)))?;
        Ok(id.internal.iter().map(|&c| c as u8).collect())
    })
    .map_err(CollectiveError::Nccl)
}

/// One rank of an NCCL communicator on one CUDA device.
///
/// Dropping it destroys the communicator (`ncclCommDestroy`), or aborts it
/// when a collective failed, and releases the device's primary context.
pub struct NcclCollective {
    rank: usize,
    world_size: usize,
    ordinal: usize,
    cu_device: cu_sys::CUdevice,
    /// The device's primary context (retained by `new`, released on drop).
    ctx: cu_sys::CUcontext,
    comm: Arc<Comm>,
}

// SAFETY: the raw context is a process-wide handle that CUDA allows any
// thread to make current; the communicator is shared through `Comm`, whose
// state lock orders destroy and abort. Collectives take `&mut self`.
unsafe impl Send for NcclCollective {}

/// Aborts an [`NcclCollective`]'s communicator from another thread, e.g. a
/// heartbeat watchdog that saw a rank die while this rank waits in a
/// collective: the waiting collective returns an error and the communicator
/// is gone; regroup with a new unique id and a new [`NcclCollective`].
///
/// It holds the raw communicator, shared with the collective behind a lock:
/// it never touches the communicator once it was aborted or destroyed, so
/// calling [`NcclAborter::abort`] late (after the collective dropped) or
/// twice is a no-op. Aborting while another thread is inside an NCCL call on
/// the same communicator is what `ncclCommAbort` is for (NCCL's blocking
/// calls watch the abort flag); that thread's call returns an error.
#[derive(Clone)]
pub struct NcclAborter {
    comm: Arc<Comm>,
}

impl NcclAborter {
    /// `ncclCommAbort`: ends the communicator's pending operations and frees
    /// it. Safe to call from any thread, any number of times.
    pub fn abort(&self) -> Result<(), CollectiveError> {
        self.comm.abort(ABORTED).map_err(CollectiveError::Nccl)
    }
}

/// The raw communicator and what became of it.
struct Comm {
    raw: sys::ncclComm_t,
    state: Mutex<CommState>,
}

// SAFETY: `raw` is only passed to NCCL, which allows a communicator to be
// used from any thread; freeing it (destroy or abort) happens once, under the
// state lock, and nothing dereferences it after `CommState::gone` is set.
unsafe impl Send for Comm {}
unsafe impl Sync for Comm {}

#[derive(Default)]
struct CommState {
    /// Set once the communicator was freed: why ("aborted", "destroyed", ...).
    gone: Option<String>,
}

impl Comm {
    fn lock(&self) -> MutexGuard<'_, CommState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Aborts unless already gone; `why` is what later calls report.
    fn abort(&self, why: &str) -> Result<(), String> {
        let mut state = self.lock();
        if state.gone.is_some() {
            return Ok(());
        }
        state.gone = Some(why.to_string());
        no_panic("nccl abort", || {
            // SAFETY: `raw` is a live communicator (not gone until now) and is
            // never used again through this `Comm`.
            unsafe { nccl::comm_abort(self.raw) }
                .map(|_| ())
                .map_err(|e| format!("nccl abort: ncclCommAbort failed: {}", describe(e.0)))
        })
    }

    /// Destroys unless already gone.
    fn destroy(&self) -> Result<(), String> {
        let mut state = self.lock();
        if state.gone.is_some() {
            return Ok(());
        }
        state.gone = Some("destroyed".to_string());
        no_panic("nccl destroy", || {
            // SAFETY: as in `abort`.
            unsafe { nccl::comm_destroy(self.raw) }
                .map(|_| ())
                .map_err(|e| format!("nccl destroy: ncclCommDestroy failed: {}", describe(e.0)))
        })
    }
}

impl NcclCollective {
    /// Joins the communicator named by `unique_id` as `rank` of `world_size`
    /// on the CUDA device of `device` (`ncclCommInitRank` with the device's
    /// primary context current, the context libtorch uses). Blocks until all
    /// `world_size` ranks have called it.
    pub fn new(
        rank: usize,
        world_size: usize,
        unique_id: &[u8],
        device: Device,
    ) -> Result<NcclCollective, CollectiveError> {
        let ordinal = match device {
            Device::Cuda(i) => i,
            other => {
                return Err(CollectiveError::Form(format!(
                    "nccl init: {other:?} is not a CUDA device"
                )));
            }
        };
        let args =
            InitArgs::check(rank, world_size, ordinal, unique_id).map_err(CollectiveError::Form)?;
        nccl_version()?;
        check_single_nccl().map_err(CollectiveError::Nccl)?;
        no_panic("nccl init", || args.init()).map_err(CollectiveError::Nccl)
    }

    /// The CUDA device of this rank.
    pub fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    /// A handle that aborts this communicator from another thread.
    pub fn aborter(&self) -> NcclAborter {
        NcclAborter {
            comm: Arc::clone(&self.comm),
        }
    }

    /// `ncclCommAbort` now; later collectives fail. See [`NcclAborter`].
    pub fn abort(&self) -> Result<(), CollectiveError> {
        self.comm.abort(ABORTED).map_err(CollectiveError::Nccl)
    }

    /// Sums `input` (`world_size * n` elements) over all ranks and leaves
    /// block `rank` of the sum (`n` elements) in `output`.
    pub fn reduce_scatter_sum(
        &mut self,
        input: &Tensor,
        output: &mut Tensor,
    ) -> Result<(), CollectiveError> {
        const OP: &str = "reduce_scatter_sum";
        let (src, dst) = self.buffers(OP, input, output, true)?;
        if src.numel != dst.numel * self.world_size {
            return Err(CollectiveError::Tensor(format!(
                "nccl {OP}: input has {} elements, expected world size {} x output's {}",
                src.numel, self.world_size, dst.numel
            )));
        }
        if dst.numel == 0 {
            return Ok(());
        }
        self.run(OP, |comm| {
            // SAFETY: both buffers are contiguous device memory of the
            // checked sizes on this communicator's device.
            unsafe {
                nccl::reduce_scatter(
                    src.ptr,
                    dst.ptr,
                    dst.numel,
                    dst.dtype,
                    sys::ncclRedOp_t::ncclSum,
                    comm,
                    null_mut(),
                )
            }
        })
    }

    /// Concatenates every rank's `input` (`n` elements) in rank order into
    /// `output` (`world_size * n` elements).
    pub fn all_gather(
        &mut self,
        input: &Tensor,
        output: &mut Tensor,
    ) -> Result<(), CollectiveError> {
        const OP: &str = "all_gather";
        let (src, dst) = self.buffers(OP, input, output, false)?;
        if dst.numel != src.numel * self.world_size {
            return Err(CollectiveError::Tensor(format!(
                "nccl {OP}: output has {} elements, expected world size {} x input's {}",
                dst.numel, self.world_size, src.numel
            )));
        }
        if src.numel == 0 {
            return Ok(());
        }
        self.run(OP, |comm| {
            // SAFETY: as in reduce_scatter_sum.
            unsafe { nccl::all_gather(src.ptr, dst.ptr, src.numel, src.dtype, comm, null_mut()) }
        })
    }

    /// An operation's input and output buffers, of one element type.
    fn buffers(
        &self,
        op: &str,
        input: &Tensor,
        output: &Tensor,
        reduce: bool,
    ) -> Result<(Buffer, Buffer), CollectiveError> {
        let of = |name, t| {
            Buffer::of(op, name, t, self.ordinal, reduce).map_err(CollectiveError::Tensor)
        };
        let (src, dst) = (of("input", input)?, of("output", output)?);
        check_same_kind(op, &src, &dst).map_err(CollectiveError::Tensor)?;
        Ok((src, dst))
    }

    /// Refuses a communicator that is gone, makes the primary context
    /// current, enqueues `launch` on the null stream and waits for it.
    fn run(
        &mut self,
        op: &str,
        launch: impl FnOnce(sys::ncclComm_t) -> Result<nccl::NcclStatus, nccl::NcclError>,
    ) -> Result<(), CollectiveError> {
        no_panic(&format!("nccl {op}"), || {
            if let Some(why) = &self.comm.lock().gone {
                return Err(gone(op, why));
            }
            let _bound = CurrentContext::bind(self.ctx)
                .map_err(|e| CollectiveError::Nccl(format!("nccl {op}: {e}")))?;
            // Not under the state lock: a launch that blocks on a lost peer
            // (connection set-up) must stay abortable from another thread.
            if let Err(e) = launch(self.comm.raw) {
                let error = format!("nccl {op}: {}", describe(e.0));
                let _ = self.comm.abort(&format!("aborted after an error in {op}"));
                return Err(CollectiveError::Nccl(error));
            }
            self.wait(op)
        })
    }

    /// Polls the null stream until NCCL's kernel is done, watching for
    /// asynchronous errors and for an abort from another thread.
    fn wait(&self, op: &str) -> Result<(), CollectiveError> {
        let start = Instant::now();
        let mut failure: Option<(CollectiveError, Instant)> = None;
        loop {
            // SAFETY: the primary context is current; the null stream is
            // always valid in it.
            let query = unsafe { cu_sys::cuStreamQuery(null_mut()) };
            match query {
                cu_sys::CUresult::CUDA_SUCCESS => {
                    return match failure {
                        None => Ok(()),
                        Some((error, _)) => Err(error),
                    };
                }
                cu_sys::CUresult::CUDA_ERROR_NOT_READY => {}
                other => return Err(self.stream_failed(op, other, failure.map(|(e, _)| e))),
            }
            match &failure {
                Some((error, since)) => {
                    if since.elapsed() > ABORT_DRAIN {
                        let mut error = error.clone();
                        error.message_mut().push_str(&format!(
                            " (NCCL's kernel is still on the stream after {}s)",
                            ABORT_DRAIN.as_secs()
                        ));
                        return Err(error);
                    }
                }
                None => failure = self.async_failure(op),
            }
            if start.elapsed() < Duration::from_millis(1) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }

    /// Aborts after the stream failed; the error says so, after the NCCL
    /// error seen before it, if any.
    fn stream_failed(
        &self,
        op: &str,
        result: cu_sys::CUresult,
        earlier: Option<CollectiveError>,
    ) -> CollectiveError {
        let _ = self
            .comm
            .abort(&format!("aborted after a CUDA error in {op}"));
        let mut error = format!(
            "nccl {op}: the default stream failed: {:?}",
            cu::DriverError(result)
        );
        if let Some(nccl_error) = earlier {
            error = format!("{nccl_error}; then {error}");
        }
        CollectiveError::Nccl(error)
    }

    /// `None` while the communicator is healthy; else the error, after
    /// aborting it (which makes NCCL's kernels leave the stream).
    fn async_failure(&self, op: &str) -> Option<(CollectiveError, Instant)> {
        let state = self.comm.lock();
        if let Some(why) = &state.gone {
            return Some((gone(op, why), Instant::now()));
        }
        let mut async_error = sys::ncclResult_t::ncclSuccess;
        // SAFETY: the communicator is live (not gone) and cannot be freed
        // while the state lock is held.
        let r = unsafe { sys::ncclCommGetAsyncError(self.comm.raw, &mut async_error) };
        drop(state);
        let error = match (r, async_error) {
            (sys::ncclResult_t::ncclSuccess, sys::ncclResult_t::ncclSuccess)
            | (sys::ncclResult_t::ncclSuccess, sys::ncclResult_t::ncclInProgress) => return None,
            (sys::ncclResult_t::ncclSuccess, e) => {
                format!("nccl {op}: asynchronous error: {}", describe(e))
            }
            (e, _) => format!("nccl {op}: ncclCommGetAsyncError failed: {}", describe(e)),
        };
        let _ = self.comm.abort(&format!("aborted after an error in {op}"));
        Some((CollectiveError::Nccl(error), Instant::now()))
    }
}

/// `ncclCommInitRank`'s arguments, checked before NCCL is loaded.
struct InitArgs {
    rank: usize,
    world_size: usize,
    ordinal: usize,
    c_rank: c_int,
    c_world: c_int,
    c_ordinal: c_int,
    id: sys::ncclUniqueId,
}

impl InitArgs {
    fn check(
        rank: usize,
        world_size: usize,
        ordinal: usize,
        unique_id: &[u8],
    ) -> Result<InitArgs, String> {
        if rank >= world_size {
            return Err(format!(
                "nccl init: rank {rank} is outside world size {world_size}"
            ));
        }
        let (c_rank, c_world, c_ordinal) = match (
            c_int::try_from(rank),
            c_int::try_from(world_size),
            c_int::try_from(ordinal),
        ) {
            (Ok(r), Ok(w), Ok(o)) => (r, w, o),
            _ => return Err("nccl init: rank, world size or device index too large".into()),
        };
        if unique_id.len() != UNIQUE_ID_BYTES {
            return Err(format!(
                "nccl init: unique id has {} bytes, expected {UNIQUE_ID_BYTES}",
                unique_id.len()
            ));
        }
        let mut id = sys::ncclUniqueId {
            internal: [0; UNIQUE_ID_BYTES],
        };
        for (dst, &src) in id.internal.iter_mut().zip(unique_id) {
            *dst = src as c_char;
        }
        Ok(InitArgs {
            rank,
            world_size,
            ordinal,
            c_rank,
            c_world,
            c_ordinal,
            id,
        })
    }

    /// Joins the communicator with the device's primary context current.
    fn init(self) -> Result<NcclCollective, String> {
        let (rank, world_size, ordinal) = (self.rank, self.world_size, self.ordinal);
        // SAFETY: probes the driver library only.
        if !unsafe { cu_sys::is_culib_present() } {
            return Err(
                "nccl init: the CUDA driver (libcuda.so.1) cannot be loaded on this host".into(),
            );
        }
        cu::init().map_err(|e| format!("nccl init: cuInit failed: {e:?}"))?;
        let cu_device = cu::device::get(self.c_ordinal)
            .map_err(|e| format!("nccl init: cuda:{ordinal}: {e:?}"))?;
        // SAFETY: `cu_device` came from cuDeviceGet.
        let ctx = unsafe { cu::primary_ctx::retain(cu_device) }
            .map_err(|e| format!("nccl init: cuda:{ordinal} primary context: {e:?}"))?;
        let release = |err: String| {
            // SAFETY: balances the retain above.
            let _ = unsafe { cu::primary_ctx::release(cu_device) };
            err
        };
        let bound = CurrentContext::bind(ctx).map_err(release)?;
        let mut raw: sys::ncclComm_t = null_mut();
        // SAFETY: `raw` is a valid out pointer; the id came from
        // ncclGetUniqueId (checked for size above).
        let init = unsafe { nccl::comm_init_rank(&mut raw, self.c_world, self.id, self.c_rank) };
        drop(bound);
        if let Err(e) = init {
            return Err(release(format!(
                "nccl init: ncclCommInitRank (rank {rank} of {world_size}, cuda:{ordinal}) failed: {}",
                describe(e.0)
            )));
        }
        Ok(NcclCollective {
            rank,
            world_size,
            ordinal,
            cu_device,
            ctx,
            comm: Arc::new(Comm {
                raw,
                state: Mutex::new(CommState::default()),
            }),
        })
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn all_reduce_sum(&mut self, tensor: &mut Tensor) -> Result<(), CollectiveError> {
        const OP: &str = "all_reduce_sum";
        let buf = Buffer::of(OP, "tensor", tensor, self.ordinal, true)
            .map_err(CollectiveError::Tensor)?;
        if buf.numel == 0 {
            return Ok(());
        }
        self.run(OP, |comm| {
            // SAFETY: in place on contiguous device memory of `numel`
            // elements on this communicator's device.
            unsafe {
                nccl::all_reduce(
                    buf.ptr,
                    buf.ptr,
                    buf.numel,
                    buf.dtype,
                    sys::ncclRedOp_t::ncclSum,
                    comm,
                    null_mut(),
                )
            }
        })
    }

    fn broadcast(&mut self, tensor: &mut Tensor, root: usize) -> Result<(), CollectiveError> {
        const OP: &str = "broadcast";
        if root >= self.world_size {
            return Err(CollectiveError::Tensor(format!(
                "nccl {OP}: root {root} is outside world size {}",
                self.world_size
            )));
        }
        let buf = Buffer::of(OP, "tensor", tensor, self.ordinal, false)
            .map_err(CollectiveError::Tensor)?;
        if buf.numel == 0 {
            return Ok(());
        }
        self.run(OP, |comm| {
            // SAFETY: as in all_reduce_sum; `root` fits c_int (< world size).
            unsafe {
                nccl::broadcast(
                    buf.ptr,
                    buf.ptr,
                    buf.numel,
                    buf.dtype,
                    root as c_int,
                    comm,
                    null_mut(),
                )
            }
        })
    }

    fn reduce_scatter_sum(
        &mut self,
        input: &Tensor,
        output: &mut Tensor,
    ) -> Result<(), CollectiveError> {
        NcclCollective::reduce_scatter_sum(self, input, output)
    }

    fn all_gather(&mut self, tensor: &mut Tensor) -> Result<(), CollectiveError> {
        self.all_gather_in_place(tensor)
    }
}

impl NcclCollective {
    /// The trait's in-place all-gather: rank r's piece of `tensor` is the
    /// send buffer, at `recvbuff + rank * sendcount`, which NCCL documents
    /// as its in-place form.
    fn all_gather_in_place(&mut self, tensor: &mut Tensor) -> Result<(), CollectiveError> {
        const OP: &str = "all_gather";
        let (numel, world) = (tensor.numel(), self.world_size);
        if !numel.is_multiple_of(world) {
            return Err(CollectiveError::Tensor(format!(
                "nccl {OP}: {numel} elements do not split into {world} equal pieces"
            )));
        }
        let mut flat = tensor
            .f_view([-1])
            .map_err(|e| CollectiveError::Tensor(format!("nccl {OP}: {e}")))?;
        let piece = (numel / world) as i64;
        let mine = flat.narrow(0, self.rank as i64 * piece, piece);
        NcclCollective::all_gather(self, &mine, &mut flat)
    }
}

impl Drop for NcclCollective {
    fn drop(&mut self) {
        let bound = CurrentContext::bind(self.ctx);
        if let Err(e) = self.comm.destroy() {
            tracing::warn!(error = %e, "nccl communicator not destroyed cleanly");
        }
        drop(bound);
        let _ = no_panic("nccl drop", || {
            // SAFETY: balances the retain in `new`.
            unsafe { cu::primary_ctx::release(self.cu_device) }.map_err(|e| format!("{e:?}"))
        });
    }
}

/// The error of an operation on a communicator that is gone: aborted from
/// outside (the group changed), or freed after a failure.
fn gone(op: &str, why: &str) -> CollectiveError {
    let message = format!("nccl {op}: the communicator was {why}");
    if why == ABORTED {
        CollectiveError::Aborted(message)
    } else {
        CollectiveError::Broken(message)
    }
}

/// A tensor's memory as NCCL sees it.
#[derive(Debug)]
struct Buffer {
    ptr: *mut std::ffi::c_void,
    numel: usize,
    dtype: sys::ncclDataType_t,
    kind: Kind,
}

impl Buffer {
    /// Checks that `t` is a defined, contiguous tensor on `cuda:{ordinal}`
    /// with an element type NCCL has (`reduce`: one it can sum).
    fn of(
        op: &str,
        name: &str,
        t: &Tensor,
        ordinal: usize,
        reduce: bool,
    ) -> Result<Buffer, String> {
        if !t.defined() {
            return Err(format!("nccl {op}: {name} is an undefined tensor"));
        }
        let device = t.device();
        if device != Device::Cuda(ordinal) {
            return Err(format!(
                "nccl {op}: {name} is on {device:?}, the communicator on Cuda({ordinal})"
            ));
        }
        if !t.is_contiguous() {
            return Err(format!("nccl {op}: {name} is not contiguous"));
        }
        let kind = t.f_kind().map_err(|e| format!("nccl {op}: {name}: {e}"))?;
        let Some(dtype) = nccl_dtype(kind, reduce) else {
            let verb = if reduce { "sum" } else { "carry" };
            return Err(format!(
                "nccl {op}: {name} has element type {kind:?}, which NCCL cannot {verb}"
            ));
        };
        Ok(Buffer {
            ptr: t.data_ptr(),
            numel: t.numel(),
            dtype,
            kind,
        })
    }
}

fn check_same_kind(op: &str, src: &Buffer, dst: &Buffer) -> Result<(), String> {
    if src.kind != dst.kind {
        return Err(format!(
            "nccl {op}: input is {:?} but output is {:?}",
            src.kind, dst.kind
        ));
    }
    Ok(())
}

/// NCCL's type for a tch element type; `reduce` leaves out types whose sum
/// NCCL would compute differently from libtorch (bool).
fn nccl_dtype(kind: Kind, reduce: bool) -> Option<sys::ncclDataType_t> {
    use sys::ncclDataType_t as D;
    Some(match kind {
        Kind::Uint8 => D::ncclUint8,
        Kind::Int8 => D::ncclInt8,
        Kind::Int => D::ncclInt32,
        Kind::Int64 => D::ncclInt64,
        Kind::Half => D::ncclFloat16,
        Kind::Float => D::ncclFloat32,
        Kind::Double => D::ncclFloat64,
        Kind::BFloat16 => D::ncclBfloat16,
        Kind::Float8e4m3fn => D::ncclFloat8e4m3,
        Kind::Float8e5m2 => D::ncclFloat8e5m2,
        Kind::Bool if !reduce => D::ncclUint8,
        _ => return None,
    })
}

/// `ncclGetVersion`'s code: `major*10000 + minor*100 + patch` since 2.9,
/// `major*1000 + minor*100 + patch` before.
fn decode_version(code: c_int) -> Result<(u32, u32, u32), String> {
    let code = u32::try_from(code).map_err(|_| format!("nccl: ncclGetVersion returned {code}"))?;
    Ok(if code >= 10_000 {
        (code / 10_000, code % 10_000 / 100, code % 100)
    } else {
        (code / 1000, code % 1000 / 100, code % 100)
    })
}

fn check_version(version: (u32, u32, u32)) -> Result<(), String> {
    if version < MIN_NCCL_VERSION {
        let (a, b, c) = version;
        let (x, y, z) = MIN_NCCL_VERSION;
        return Err(format!(
            "nccl: libnccl.so is NCCL {a}.{b}.{c}, older than {x}.{y}.{z} whose API cudarc 0.19 binds: \
             point libnccl.so at torch's libnccl.so.2 (NCCL 2.28.9 in the torch 2.11 wheels)"
        ));
    }
    Ok(())
}

/// Errors when two different NCCL files are mapped into this process (e.g.
/// torch's `libnccl.so.2` and another `libnccl.so`): they would clash.
fn check_single_nccl() -> Result<(), String> {
    let copies = mapped_nccl_files();
    if copies.len() > 1 {
        let list: Vec<String> = copies.iter().map(|p| p.display().to_string()).collect();
        return Err(format!(
            "nccl: several NCCL libraries are loaded and would clash (\"corrupted comm object \
             detected\"): {}; put a directory holding libnccl.so -> torch's libnccl.so.2 first on \
             LD_LIBRARY_PATH",
            list.join(", ")
        ));
    }
    Ok(())
}

/// Distinct files named `libnccl.so*` mapped into this process (Linux).
fn mapped_nccl_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = premem_model::runtime::loaded_libraries("libnccl.so")
        .into_iter()
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
        .collect();
    files.sort();
    files.dedup();
    files
}

/// `ncclResult_t` name, NCCL's text for it and the thread's last NCCL error.
fn describe(code: sys::ncclResult_t) -> String {
    let text = no_panic("", || {
        // SAFETY: NCCL returns static strings for every code; the last-error
        // string is thread-local and ncclGetLastError ignores its argument.
        unsafe {
            Ok::<_, String>((
                c_text(sys::ncclGetErrorString(code)),
                c_text(sys::ncclGetLastError(null_mut())),
            ))
        }
    });
    match text {
        Ok((text, last)) if !last.is_empty() => format!("{code:?} ({text}): {last}"),
        Ok((text, _)) => format!("{code:?} ({text})"),
        Err(_) => format!("{code:?}"),
    }
}

/// # Safety
/// `p` is null or a NUL-terminated string.
unsafe fn c_text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: per the contract.
    unsafe { CStr::from_ptr(p) }
        .to_string_lossy()
        .trim()
        .to_string()
}

/// Makes a context current on this thread and restores the previous one.
struct CurrentContext {
    restore: Option<cu_sys::CUcontext>,
}

impl CurrentContext {
    fn bind(ctx: cu_sys::CUcontext) -> Result<CurrentContext, String> {
        no_panic("cuda context", || {
            let previous = cu::ctx::get_current()
                .map_err(|e| format!("cuCtxGetCurrent failed: {e:?}"))?
                .unwrap_or(null_mut());
            if previous == ctx {
                return Ok(CurrentContext { restore: None });
            }
            // SAFETY: `ctx` is a retained primary context.
            unsafe { cu::ctx::set_current(ctx) }
                .map_err(|e| format!("cuCtxSetCurrent failed: {e:?}"))?;
            Ok(CurrentContext {
                restore: Some(previous),
            })
        })
    }
}

impl Drop for CurrentContext {
    fn drop(&mut self) {
        if let Some(previous) = self.restore {
            let _ = no_panic("cuda context", || {
                // SAFETY: `previous` was current on this thread (or null).
                unsafe { cu::ctx::set_current(previous) }.map_err(|e| format!("{e:?}"))
            });
        }
    }
}

/// A panic caught by [`no_panic`], as text.
struct Panicked(String);

impl From<Panicked> for String {
    fn from(panicked: Panicked) -> String {
        panicked.0
    }
}

impl From<Panicked> for CollectiveError {
    fn from(panicked: Panicked) -> CollectiveError {
        CollectiveError::Nccl(panicked.0)
    }
}

/// Runs `f`, turning a panic (cudarc's loader panics on a missing library or
/// symbol) into an error that starts with `what`.
fn no_panic<T, E: From<Panicked>>(what: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(Panicked(format!("{what}: {}", panic_text(payload.as_ref()))).into()),
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panicked".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libnccl_loadable() -> bool {
        // SAFETY: probes library files only.
        unsafe { sys::is_culib_present() }
    }

    #[test]
    fn nccl_version_without_libnccl_is_an_error_not_a_panic() {
        if libnccl_loadable() {
            eprintln!("skipped: libnccl.so is loadable on this host");
            return;
        }
        let err = nccl_version().unwrap_err().to_string();
        eprintln!("nccl_version: {err}");
        assert!(
            err.contains("libnccl.so not found on LD_LIBRARY_PATH"),
            "{err}"
        );
        let err = unique_id().unwrap_err().to_string();
        assert!(err.contains("libnccl.so not found"), "{err}");
        let err = NcclCollective::new(0, 1, &[0; UNIQUE_ID_BYTES], Device::Cuda(0))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("libnccl.so not found"), "{err}");
    }

    #[test]
    fn cudarcs_loader_panic_is_caught() {
        if libnccl_loadable() {
            eprintln!("skipped: libnccl.so is loadable on this host");
            return;
        }
        // cudarc's own loader, unprobed: it panics; `no_panic` turns that
        // into an error (the process is not aborted).
        let err = no_panic("nccl", || {
            nccl::get_nccl_version().map_err(|e| describe(e.0))
        })
        .unwrap_err();
        eprintln!("caught: {err}");
        assert!(err.starts_with("nccl: "), "{err}");
    }

    #[test]
    fn handles_cross_threads() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync + Clone>() {}
        send::<NcclCollective>();
        send_sync::<NcclAborter>();
    }

    #[test]
    fn versions_decode_and_compare() {
        assert_eq!(decode_version(22809).unwrap(), (2, 28, 9));
        assert_eq!(decode_version(22803).unwrap(), (2, 28, 3));
        assert_eq!(decode_version(2804).unwrap(), (2, 8, 4));
        assert!(decode_version(-1).is_err());
        assert!(check_version((2, 28, 3)).is_ok());
        assert!(check_version((2, 30, 0)).is_ok());
        let err = check_version((2, 27, 7)).unwrap_err();
        assert!(err.contains("2.27.7") && err.contains("2.28.3"), "{err}");
    }

    #[test]
    fn element_types_map_to_nccl() {
        use sys::ncclDataType_t as D;
        assert_eq!(nccl_dtype(Kind::Float, true), Some(D::ncclFloat32));
        assert_eq!(nccl_dtype(Kind::BFloat16, true), Some(D::ncclBfloat16));
        assert_eq!(nccl_dtype(Kind::Int64, true), Some(D::ncclInt64));
        assert_eq!(nccl_dtype(Kind::Bool, true), None);
        assert_eq!(nccl_dtype(Kind::Bool, false), Some(D::ncclUint8));
        assert_eq!(nccl_dtype(Kind::ComplexFloat, false), None);
    }

    #[test]
    fn cpu_and_strided_tensors_are_refused() {
        let t = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        let err = Buffer::of("all_reduce_sum", "tensor", &t, 0, true).unwrap_err();
        assert!(
            err.contains("Cpu") && err.contains("all_reduce_sum"),
            "{err}"
        );
        let err = Buffer::of("x", "tensor", &Tensor::new(), 0, true).unwrap_err();
        assert!(err.contains("undefined"), "{err}");
    }

    #[test]
    fn bad_arguments_are_refused_before_loading_nccl() {
        let id = [0u8; UNIQUE_ID_BYTES];
        let err = NcclCollective::new(0, 1, &id, Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a CUDA device"), "{err}");
        let err = NcclCollective::new(2, 2, &id, Device::Cuda(0))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("outside world size"), "{err}");
        let err = NcclCollective::new(0, 1, &id[..5], Device::Cuda(0))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("5 bytes"), "{err}");
    }
}
