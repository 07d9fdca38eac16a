//! An exclusive hold on a store location that works on every store premem
//! uses (a directory, S3, GCS, Azure): a lease object whose body names its
//! owner and when it expires. It is taken with a create-only write; one
//! that expired (its holder died) is deleted and taken anew; the holder
//! renews it before it expires and finds out, at a renewal, when someone
//! else took it. It guards the coordinator's state store and a run output
//! being trained.
//!
//! An owner that restarts under the same name (`premem run`'s supervised
//! coordinator, a container restarted in its pod: same host name, pid 1)
//! takes its own lease back at once; any other waits for it to expire.
//!
//! Two takers of one expired lease can both delete it; the create-only
//! write still lets one of them create the new lease, and the other sees
//! the winner's owner when it reads it back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::storage::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "{url} is held by {owner} (its lease expires in {expires_in_s} s): stop that process, or wait until the lease expires if it died"
    )]
    Held {
        url: String,
        owner: String,
        expires_in_s: u64,
    },
    #[error("{url} was taken over by {owner}: this process no longer holds it")]
    Lost { url: String, owner: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The lease object's body.
#[derive(Debug, Serialize, Deserialize)]
struct Body {
    owner: String,
    /// Milliseconds since the Unix epoch.
    expires_at_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A lease this process holds.
pub struct Lease {
    store: Store,
    name: String,
    owner: String,
    ttl: Duration,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

/// An owner name for this process: host and pid.
pub fn this_process() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

/// Whether `owner` names a process of this host ([`this_process`]'s
/// form) that is gone: its lease need not be waited out (a `premem train`
/// killed with SIGKILL and resumed at once). A pid reused since is taken
/// as alive: the lease is then waited out.
fn is_dead_here(owner: &str) -> bool {
    let Some((host, pid)) = owner.rsplit_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host == host_name()
        && pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl Lease {
    /// Takes the lease `name` in `store` for `owner`, held `ttl` from now
    /// (and from each renewal).
    pub async fn acquire(
        store: &Store,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Lease, LeaseError> {
        let lease = Lease {
            store: store.clone(),
            name: name.to_string(),
            owner: owner.to_string(),
            ttl,
        };
        for _ in 0..2 {
            if store.put_if_absent(name, lease.body()).await? {
                return lease.confirm().await.map(|()| lease);
            }
            match lease.read().await? {
                // This owner's own (a restart under the same name): take it.
                Some(held) if held.owner == owner => {
                    store.put(name, lease.body()).await?;
                    return Ok(lease);
                }
                Some(held) if held.expires_at_ms > now_ms() && !is_dead_here(&held.owner) => {
                    return Err(lease.held(held));
                }
                // Expired, unreadable, or gone meanwhile: clear it and try again.
                _ => lease.store.delete(name).await?,
            }
        }
        match lease.read().await? {
            Some(held) => Err(lease.held(held)),
            None => Err(LeaseError::Held {
                url: lease.url(),
                owner: "another process".into(),
                expires_in_s: ttl.as_secs(),
            }),
        }
    }

    /// Extends the lease by its ttl from now; `Lost` when another process
    /// holds it now.
    pub async fn renew(&self) -> Result<(), LeaseError> {
        self.confirm().await?;
        self.store.put(&self.name, self.body()).await?;
        Ok(())
    }

    /// Gives the lease up (when this process still holds it).
    pub async fn release(self) -> Result<(), LeaseError> {
        if let Some(held) = self.read().await?
            && held.owner == self.owner
        {
            self.store.delete(&self.name).await?;
        }
        Ok(())
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn url(&self) -> String {
        self.store.url_of(&self.name)
    }

    fn body(&self) -> Vec<u8> {
        let body = Body {
            owner: self.owner.clone(),
            expires_at_ms: now_ms() + self.ttl.as_millis() as u64,
        };
        serde_json::to_vec(&body).expect("a lease body serializes")
    }

    /// The lease as stored; `None` when it is gone or not a lease body.
    async fn read(&self) -> Result<Option<Body>, StoreError> {
        match self.store.get(&self.name).await {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Checks that the stored lease is this process's.
    async fn confirm(&self) -> Result<(), LeaseError> {
        match self.read().await? {
            Some(held) if held.owner == self.owner => Ok(()),
            Some(held) => Err(LeaseError::Lost {
                url: self.url(),
                owner: held.owner,
            }),
            None => Err(LeaseError::Lost {
                url: self.url(),
                owner: "nobody (the lease was removed)".into(),
            }),
        }
    }

    fn held(&self, held: Body) -> LeaseError {
        LeaseError::Held {
            url: self.url(),
            owner: held.owner,
            expires_in_s: held.expires_at_ms.saturating_sub(now_ms()).div_ceil(1000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> Store {
        Store::open(dir.to_str().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_an_expired_lease_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let ttl = Duration::from_millis(300);
        let a = Lease::acquire(&store, "x.lease", "a", ttl).await.unwrap();
        let err = Lease::acquire(&store, "x.lease", "b", ttl)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&err, LeaseError::Held { owner, .. } if owner == "a"),
            "{err}"
        );
        assert!(err.to_string().contains("is held by a"), "{err}");
        a.renew().await.unwrap();
        // a dies (no renewal): after the ttl, b takes over and a learns it.
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        let b = Lease::acquire(&store, "x.lease", "b", ttl).await.unwrap();
        let lost = a.renew().await.unwrap_err();
        assert!(
            matches!(&lost, LeaseError::Lost { owner, .. } if owner == "b"),
            "{lost}"
        );
        // a's release leaves b's lease; b's removes it.
        a.release().await.unwrap();
        b.renew().await.unwrap();
        b.release().await.unwrap();
        let c = Lease::acquire(&store, "x.lease", "c", ttl).await.unwrap();
        // c restarting under its name takes its lease back before it expires.
        drop(c);
        Lease::acquire(&store, "x.lease", "c", ttl).await.unwrap();
    }

    #[tokio::test]
    async fn a_lease_of_a_dead_process_on_this_host_is_taken_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let ttl = Duration::from_secs(600);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = format!("{}:{}", host_name(), child.id());
        child.wait().unwrap();
        Lease::acquire(&store, "x.lease", &dead, ttl).await.unwrap();
        Lease::acquire(&store, "x.lease", &this_process(), ttl)
            .await
            .unwrap();
        // A live one (this process, under another lease name) is waited out.
        let other = Lease::acquire(&store, "y.lease", &this_process(), ttl)
            .await
            .unwrap();
        let err = Lease::acquire(&store, "y.lease", "elsewhere:1", ttl)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, LeaseError::Held { .. }), "{err}");
        drop(other);
    }

    #[tokio::test]
    async fn an_unreadable_lease_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        store.put("x.lease", &b"not json"[..]).await.unwrap();
        let ttl = Duration::from_secs(5);
        Lease::acquire(&store, "x.lease", "a", ttl).await.unwrap();
    }
}
