//! Rank 0's hold on the run output while it trains: a lease object
//! ([`premem_core::storage::lease`]) in the output, taken before the output is
//! checked or claimed and renewed by a thread of its own, so two `premem
//! train --resume` of one output cannot run side by side. The training
//! loop asks [`OutputLock::check`] before each checkpoint: a lock another
//! process took over (this one stalled past the lease) stops the run
//! before it writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use premem_core::storage::lease::{Lease, LeaseError};
use premem_core::{BlockingStore, Store};

use crate::error::{Result, TrainError};

/// The lease object, at the root of the run output.
pub const OUTPUT_LEASE: &str = "train.lease";
/// How long the lease outlives its last renewal (renewed every third).
pub const OUTPUT_LEASE_TTL: Duration = Duration::from_secs(60);

pub(crate) struct OutputLock {
    lost: Arc<AtomicBool>,
    done: Option<std::sync::mpsc::Sender<()>>,
    keeper: Option<std::thread::JoinHandle<()>>,
}

impl OutputLock {
    /// Takes the output's lease for `owner` and starts renewing it.
    pub fn take(run: &BlockingStore, owner: &str) -> Result<OutputLock> {
        let lease = run
            .run(Lease::acquire(
                run.store(),
                OUTPUT_LEASE,
                owner,
                OUTPUT_LEASE_TTL,
            ))
            .map_err(lock_error)?;
        let lost = Arc::new(AtomicBool::new(false));
        let (done, stop) = std::sync::mpsc::channel();
        let keeper = {
            let (store, lost) = (run.store().clone(), lost.clone());
            std::thread::spawn(move || keep(store, lease, &stop, &lost))
        };
        Ok(OutputLock {
            lost,
            done: Some(done),
            keeper: Some(keeper),
        })
    }

    /// `Err` once another process holds the output.
    pub fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(TrainError::Config(format!(
                "the run output's {OUTPUT_LEASE} was taken over by another process: this run stops without writing"
            )));
        }
        Ok(())
    }
}

impl Drop for OutputLock {
    /// Stops the renewals and releases the lease.
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

fn lock_error(e: LeaseError) -> TrainError {
    match e {
        LeaseError::Store(e) => TrainError::Store(e),
        e => TrainError::Config(format!("the run output is being trained: {e}")),
    }
}

/// Renews `lease` every third of its ttl until `stop` closes, then
/// releases it; a lost lease sets `lost`.
fn keep(store: Store, lease: Lease, stop: &std::sync::mpsc::Receiver<()>, lost: &AtomicBool) {
    let Ok(run) = BlockingStore::new(store) else {
        lost.store(true, Ordering::SeqCst);
        return;
    };
    let every = lease.ttl() / 3;
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        match run.run(lease.renew()) {
            Ok(()) => {}
            Err(e @ LeaseError::Lost { .. }) => {
                tracing::error!(error = %e, "the run output's lease is lost");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            // A store hiccup: the next renewal may pass; the lease has two
            // more thirds of its ttl.
            Err(e) => tracing::warn!(error = %e, "renewing the run output's lease"),
        }
    }
    if let Err(e) = run.run(lease.release()) {
        tracing::warn!(error = %e, "releasing the run output's lease");
    }
}
