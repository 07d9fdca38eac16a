//! The coordinator's lock on its state store (not to be confused with the
//! task leases of `state::leases`): a lease object in the store
//! ([`premem_core::storage::lease`]) taken before the state is read and
//! renewed while it serves, so a second coordinator on the same `--state` is
//! refused at start instead of overwriting the first one's jobs. A
//! coordinator that finds its lock taken over stops serving.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use premem_core::Store;
use premem_core::storage::lease::{Lease, LeaseError};
use tokio::sync::watch;

/// The lease object, at the root of the state store.
pub const STATE_LEASE: &str = "coordinator.lease";
/// How long a lease outlives its last renewal by default: how long a
/// successor under another name waits after a coordinator dies.
pub const STATE_LEASE_TTL: Duration = Duration::from_secs(30);

pub async fn take(state: &Store, owner: &str, ttl: Duration) -> Result<Lease, LeaseError> {
    Lease::acquire(state, STATE_LEASE, owner, ttl).await
}

/// Renews `lease` every third of its ttl until `stopped`, then releases
/// it. A lost lease (or one that cannot be renewed before it would expire)
/// stops the server through `shutdown` and is the task's error.
pub fn keep(
    lease: Lease,
    shutdown: Arc<watch::Sender<bool>>,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<Result<(), LeaseError>> {
    tokio::spawn(async move {
        tokio::pin!(stopped);
        let every = lease.ttl() / 3;
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tokio::time::sleep(every) => {
                    if let Err(e) = renew_in_time(&lease).await {
                        tracing::error!(error = %e, "the state store's lease is lost: stopping");
                        shutdown.send_replace(true);
                        return Err(e);
                    }
                }
            }
        }
        lease.release().await
    })
}

/// One renewal, retried until the lease would expire.
async fn renew_in_time(lease: &Lease) -> Result<(), LeaseError> {
    let deadline = tokio::time::Instant::now() + lease.ttl() * 2 / 3;
    loop {
        match lease.renew().await {
            Ok(()) => return Ok(()),
            Err(e @ LeaseError::Lost { .. }) => return Err(e),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "renewing the state store's lease: retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
