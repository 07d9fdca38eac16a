//! Trainer group membership as a credential. Registration gives each rank
//! a secret for its generation, HMAC-SHA256 of (job, rank, generation)
//! under the coordinator's key; the rank's rendezvous, heartbeats,
//! checkpoint reports and end of training must present it. A token holder
//! who never registered, or registered for another rank or generation,
//! cannot speak for a member.
//!
//! The key lives in the state store (`membership.key`, made once), so a
//! restarted coordinator still recognises the ranks that trained on while
//! it was away, without having stored their secrets. Whoever can read the
//! state store can forge memberships: it is the coordinator's alone
//! (docs/security.md).

use hmac::{Hmac, Mac};
use premem_core::{Store, StoreError};
use sha2::Sha256;

use crate::state::{Refusal, Refused};

/// The key's object, at the root of the state store.
pub const KEY_FILE: &str = "membership.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{url} is not a membership key (64 hex digits): delete it and restart (running trainer ranks then regroup)"
    )]
    Corrupt { url: String },
    #[error("writing the membership key {path}: {source}")]
    Local {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The coordinator's membership key.
#[derive(Clone)]
pub struct MembershipKey([u8; 32]);

impl std::fmt::Debug for MembershipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MembershipKey(..)")
    }
}

impl MembershipKey {
    pub fn random() -> MembershipKey {
        MembershipKey(rand::random())
    }

    /// The key of the state store `store`, made there by the first
    /// coordinator that serves it.
    /// In a local directory the key file is readable by its owner only
    /// (0600), from the moment it exists; an older, wider one is narrowed.
    pub async fn load_or_create(store: &Store) -> Result<MembershipKey, KeyError> {
        let fresh = hex::encode(MembershipKey::random().0);
        match store.local_file(KEY_FILE) {
            Some(path) => {
                create_private(&path, fresh.as_bytes()).map_err(|source| KeyError::Local {
                    path: path.clone(),
                    source,
                })?
            }
            None => {
                store.put_if_absent(KEY_FILE, fresh.into_bytes()).await?;
            }
        }
        let text = store.get(KEY_FILE).await?;
        let corrupt = || KeyError::Corrupt {
            url: store.url_of(KEY_FILE),
        };
        let bytes = hex::decode(text.trim_ascii()).map_err(|_| corrupt())?;
        Ok(MembershipKey(bytes.try_into().map_err(|_| corrupt())?))
    }

    fn mac(&self, job: &str, rank: u32, generation: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        // Lengths first: no two (job, rank, generation) share an input.
        mac.update(&(job.len() as u64).to_le_bytes());
        mac.update(job.as_bytes());
        mac.update(&rank.to_le_bytes());
        mac.update(&generation.to_le_bytes());
        mac
    }

    /// The secret of `rank` of `job` in `generation`.
    pub fn secret(&self, job: &str, rank: u32, generation: u64) -> String {
        hex::encode(self.mac(job, rank, generation).finalize().into_bytes())
    }

    /// Whether `presented` is the secret of `rank` in `generation`
    /// (compared in constant time).
    pub fn holds(&self, job: &str, rank: u32, generation: u64, presented: &str) -> bool {
        hex::decode(presented)
            .is_ok_and(|bytes| self.mac(job, rank, generation).verify_slice(&bytes).is_ok())
    }

    /// Refuses, with PERMISSION_DENIED, a request that does not present
    /// the secret of `rank` in `generation`.
    pub fn check(&self, job: &str, rank: u32, generation: u64, presented: &str) -> Refused<()> {
        if self.holds(job, rank, generation, presented) {
            return Ok(());
        }
        Err(Refusal::Denied(format!(
            "rank {rank} of job '{job}': {} member secret of generation {generation}; register to get one",
            if presented.is_empty() {
                "no"
            } else {
                "not the"
            }
        )))
    }
}

/// Writes `bytes` to `path` unless it exists, mode 0600 from the start:
/// written to a private temporary file, then hard-linked into place (which
/// fails, leaving the first, when another process made it meanwhile). An
/// existing file readable by others is narrowed to 0600.
fn create_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().expect("a key file lies in a directory");
    std::fs::create_dir_all(dir)?;
    let temp = dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    let linked = std::fs::hard_link(&temp, path);
    std::fs::remove_file(&temp)?;
    match linked {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_holds_for_its_own_job_rank_and_generation_only() {
        let key = MembershipKey::random();
        let secret = key.secret("job", 1, 7);
        assert!(key.holds("job", 1, 7, &secret));
        assert!(!key.holds("job", 0, 7, &secret));
        assert!(!key.holds("job", 1, 8, &secret));
        assert!(!key.holds("jo", 1, 7, &secret));
        assert!(!key.holds("job", 1, 7, ""));
        assert!(!key.holds("job", 1, 7, "not hex"));
        assert!(!MembershipKey::random().holds("job", 1, 7, &secret));
        let refused = key.check("job", 1, 7, "").unwrap_err();
        assert!(matches!(refused, Refusal::Denied(m) if m.contains("no member secret")));
    }

    #[tokio::test]
    async fn the_key_is_made_once_per_state_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let first = MembershipKey::load_or_create(&store).await.unwrap();
        let again = MembershipKey::load_or_create(&store).await.unwrap();
        assert_eq!(first.secret("j", 0, 1), again.secret("j", 0, 1));
        std::fs::write(dir.path().join(KEY_FILE), "garbage").unwrap();
        let corrupt = MembershipKey::load_or_create(&store).await.unwrap_err();
        assert!(corrupt.to_string().contains("delete it"), "{corrupt}");
    }

    #[tokio::test]
    async fn a_local_key_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let key = MembershipKey::load_or_create(&store).await.unwrap();
        let path = dir.path().join(KEY_FILE);
        assert_eq!(mode(&path), 0o600);
        // A key an older version left world-readable is narrowed, and kept.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let again = MembershipKey::load_or_create(&store).await.unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(key.secret("j", 0, 1), again.secret("j", 0, 1));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [KEY_FILE], "no temporary file is left");
    }
}
