//! Published checkpoints kept on local disk for the evaluator, bounded by
//! bytes: each checkpoint (`<run>/checkpoints/step-XXXXXXXX`) is downloaded
//! once, verified against its manifest, and kept until the cache holds more
//! than its bound; then the least recently used ones go.
//!
//! The directory is the whole state, so a restarted worker finds its
//! checkpoints again, and processes on one host may share it:
//!
//! ```text
//! <dir>/<entry>/                 a complete download: the checkpoint's files,
//!          .complete             written last, holding the checkpoint's location
//!          .last-used            nanoseconds since the epoch of the last use
//! <dir>/.partial-<entry>-<pid>-<n>/   a download in progress (renamed to <entry> when done)
//! <dir>/.evicting-<entry>-<pid>-<n>/  an entry being deleted
//! ```
//!
//! An entry's name derives from the checkpoint's location and publication
//! time (the checkpoint's manifest is read on every [`CheckpointCache::get`],
//! a small request), so a checkpoint published again is downloaded again.
//! Size the bound to hold at least one checkpoint per process sharing the
//! directory: an entry another process is still loading can otherwise be
//! evicted under it (its load then fails, and the task is retried).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use premem_core::storage::checkpoint::{Area, MANIFEST, read_manifest_at, step_prefix};
use premem_core::{BlockingStore, Store, StoreError};

use crate::checkpoint::{
    COMPLETE, LocalCheckpoint, PARTIAL_PREFIX, download_entry, entry_name, is_complete,
};
use crate::error::{EvalError, Result};

const LAST_USED: &str = ".last-used";
const EVICTING_PREFIX: &str = ".evicting-";

/// Distinguishes the temporary names one process makes.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A bounded cache of published checkpoints in a local directory.
pub struct CheckpointCache {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bytes of complete entries by name (an entry never changes once complete).
    sizes: HashMap<String, u64>,
    /// The newest last-use stamp written, so stamps of one process increase.
    clock: u128,
}

/// A checkpoint held by the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    pub name: String,
    pub dir: PathBuf,
    /// The checkpoint's location (URL) it was downloaded from.
    pub source: String,
    pub bytes: u64,
    /// Its last use, nanoseconds since the Unix epoch.
    pub last_used: u128,
}

impl CheckpointCache {
    /// A cache in `dir` (created when missing) of at most `max_bytes`. Entries
    /// already there are taken over (and evicted down to the bound);
    /// downloads and evictions that a dead process left half done are
    /// removed.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<CheckpointCache> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| cache_error(&dir, e.to_string()))?;
        let cache = CheckpointCache {
            dir,
            max_bytes,
            state: Mutex::new(State::default()),
        };
        cache.remove_stale_temporaries();
        let entries = cache.entries()?;
        tracing::info!(
            dir = %cache.dir.display(),
            checkpoints = entries.len(),
            bytes = entries.iter().map(|e| e.bytes).sum::<u64>(),
            max_bytes,
            "checkpoint cache"
        );
        cache.evict(None)?;
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The published checkpoint of the run at `run_location` (a local
    /// directory or an object-store URL) at `step`, downloaded unless the
    /// cache holds it; then checkpoints other than this one are evicted,
    /// least recently used first, until the cache fits its bound.
    pub fn get(&self, run_location: &str, step: u64) -> Result<LocalCheckpoint> {
        let prefix = step_prefix(Area::Weights, step);
        if !run_location.contains("://") && !Path::new(run_location).is_dir() {
            return Err(EvalError::Checkpoint {
                location: Path::new(run_location).join(&prefix).display().to_string(),
                message: "no such directory (the run's output is not here)".into(),
            });
        }
        let store = BlockingStore::new(Store::open(run_location)?.child(&prefix))?;
        let location = store.store().url().to_string();
        let error = |message: String| EvalError::Checkpoint {
            location: location.clone(),
            message,
        };
        let manifest = match store.run(read_manifest_at(store.store())) {
            Ok(manifest) => manifest,
            Err(StoreError::NotFound { .. }) => {
                return Err(error(format!(
                    "no published checkpoint at step {step} (no {MANIFEST})"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if manifest.step != step {
            return Err(error(format!(
                "its {MANIFEST} says step {}, not {step}",
                manifest.step
            )));
        }
        let name = entry_name(&location, &manifest);
        // Another process may evict the entry between its download and its
        // first use; download it again then.
        let mut attempts = 0;
        let dir = loop {
            attempts += 1;
            let started = std::time::Instant::now();
            let (dir, downloaded) = download_entry(&store, &manifest, &self.dir, &name, &location)?;
            match self.touch(&dir) {
                Ok(()) => {
                    if downloaded {
                        tracing::info!(
                            checkpoint = %location,
                            step,
                            bytes = manifest.files.iter().map(|f| f.bytes).sum::<u64>(),
                            seconds = started.elapsed().as_secs_f64(),
                            "downloaded checkpoint"
                        );
                    }
                    break dir;
                }
                Err(_) if !is_complete(&dir) && attempts < 3 => continue,
                Err(e) => return Err(cache_error(&dir, format!("cannot mark as used: {e}"))),
            }
        };
        self.evict(Some(&name))?;
        Ok(LocalCheckpoint {
            dir,
            step: Some(step),
        })
    }

    /// The complete checkpoints in the cache, least recently used first.
    pub fn entries(&self) -> Result<Vec<CacheEntry>> {
        let read =
            std::fs::read_dir(&self.dir).map_err(|e| cache_error(&self.dir, e.to_string()))?;
        let mut entries = vec![];
        let mut state = self.state.lock().expect("cache state");
        let mut seen = vec![];
        for item in read.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let dir = item.path();
            if name.starts_with('.') || !dir.is_dir() || !is_complete(&dir) {
                continue;
            }
            let bytes = match state.sizes.get(&name) {
                Some(&bytes) => bytes,
                None => {
                    let Ok(bytes) = dir_bytes(&dir) else {
                        // Evicted by another process while listed.
                        continue;
                    };
                    state.sizes.insert(name.clone(), bytes);
                    bytes
                }
            };
            let last_used = std::fs::read_to_string(dir.join(LAST_USED))
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .or_else(|| modified_ns(&dir.join(COMPLETE)))
                .unwrap_or(0);
            let source = std::fs::read_to_string(dir.join(COMPLETE)).unwrap_or_default();
            seen.push(name.clone());
            entries.push(CacheEntry {
                name,
                dir,
                source,
                bytes,
                last_used,
            });
        }
        state.sizes.retain(|name, _| seen.contains(name));
        entries.sort_by(|a, b| (a.last_used, &a.name).cmp(&(b.last_used, &b.name)));
        Ok(entries)
    }

    /// Bytes of the complete checkpoints in the cache.
    pub fn total_bytes(&self) -> Result<u64> {
        Ok(self.entries()?.iter().map(|e| e.bytes).sum())
    }

    /// Records a use of an entry (atomically: a temporary file renamed).
    fn touch(&self, dir: &Path) -> std::io::Result<()> {
        let stamp = {
            let mut state = self.state.lock().expect("cache state");
            let now = std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            state.clock = now.max(state.clock + 1);
            state.clock
        };
        let temporary = dir.join(format!(
            "{LAST_USED}.{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&temporary, stamp.to_string())?;
        std::fs::rename(&temporary, dir.join(LAST_USED)).inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })
    }

    /// Evicts least recently used entries other than `keep` until the cache
    /// fits its bound.
    fn evict(&self, keep: Option<&str>) -> Result<()> {
        let entries = self.entries()?;
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        for entry in &entries {
            if total <= self.max_bytes {
                break;
            }
            if Some(entry.name.as_str()) == keep {
                continue;
            }
            match self.remove(entry) {
                Ok(()) => {
                    total -= entry.bytes;
                    tracing::info!(
                        checkpoint = %entry.source,
                        bytes = entry.bytes,
                        "evicted checkpoint from the cache"
                    );
                }
                Err(e) => tracing::warn!(
                    dir = %entry.dir.display(),
                    error = %e,
                    "cannot evict a cached checkpoint"
                ),
            }
        }
        if total > self.max_bytes {
            match keep.and_then(|k| entries.iter().find(|e| e.name == k)) {
                Some(kept) if kept.bytes > self.max_bytes => tracing::warn!(
                    checkpoint = %kept.source,
                    bytes = kept.bytes,
                    max_bytes = self.max_bytes,
                    "a checkpoint larger than the cache bound: keeping it alone"
                ),
                _ => tracing::warn!(
                    dir = %self.dir.display(),
                    bytes = total,
                    max_bytes = self.max_bytes,
                    "checkpoint cache over its bound"
                ),
            }
        }
        Ok(())
    }

    /// Deletes an entry: first renamed out of sight (atomic), then removed.
    fn remove(&self, entry: &CacheEntry) -> std::io::Result<()> {
        let doomed = self.dir.join(format!(
            "{EVICTING_PREFIX}{}-{}-{}",
            entry.name,
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::rename(&entry.dir, &doomed) {
            Ok(()) => {}
            // Another process evicted it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.state
            .lock()
            .expect("cache state")
            .sizes
            .remove(&entry.name);
        match std::fs::remove_dir_all(&doomed) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes downloads and evictions of processes that no longer run.
    fn remove_stale_temporaries(&self) {
        let Ok(read) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for item in read.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let Some(rest) = name
                .strip_prefix(PARTIAL_PREFIX)
                .or_else(|| name.strip_prefix(EVICTING_PREFIX))
            else {
                continue;
            };
            // <entry>-<pid>-<n>
            let pid = rest.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| !process_alive(pid)) {
                tracing::info!(dir = %item.path().display(), "removing a stale partial download");
                let _ = std::fs::remove_dir_all(item.path());
            }
        }
    }
}

fn cache_error(path: &Path, message: String) -> EvalError {
    EvalError::Cache {
        path: path.to_path_buf(),
        message,
    }
}

/// Whether a process runs on this host; `true` when that cannot be told.
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// Bytes of the files of a directory, subdirectories included.
fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let meta = item.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&item.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

fn modified_ns(path: &Path) -> Option<u128> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(modified.duration_since(UNIX_EPOCH).ok()?.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use premem_core::storage::checkpoint::publish;

    /// A run directory with checkpoints whose weight file has `bytes` bytes
    /// (a few hundred more with the other files).
    struct Run {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        cache_dir: PathBuf,
        store: BlockingStore,
    }

    impl Run {
        fn new() -> Run {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("run");
            let store = BlockingStore::new(Store::open(dir.to_str().unwrap()).unwrap()).unwrap();
            Run {
                dir,
                cache_dir: tmp.path().join("cache"),
                _tmp: tmp,
                store,
            }
        }

        fn location(&self) -> &str {
            self.dir.to_str().unwrap()
        }

        fn publish(&self, step: u64, bytes: usize) {
            let local = self.dir.parent().unwrap().join(format!("local-{step}"));
            std::fs::create_dir_all(&local).unwrap();
            std::fs::write(local.join("config.json"), format!("{{\"step\": {step}}}")).unwrap();
            std::fs::write(local.join("model.safetensors"), vec![step as u8; bytes]).unwrap();
            self.store
                .run(publish(self.store.store(), Area::Weights, step, &local))
                .unwrap();
        }

        fn cached_steps(&self, cache: &CheckpointCache) -> Vec<u64> {
            let mut steps: Vec<u64> = cache
                .entries()
                .unwrap()
                .iter()
                .map(|e| {
                    let config = std::fs::read_to_string(e.dir.join("config.json")).unwrap();
                    serde_json::from_str::<serde_json::Value>(&config).unwrap()["step"]
                        .as_u64()
                        .unwrap()
                })
                .collect();
            steps.sort();
            steps
        }
    }

    #[test]
    fn downloads_once_verified_and_keeps_it() {
        let run = Run::new();
        run.publish(1, 1000);
        let cache = CheckpointCache::new(&run.cache_dir, 1 << 20).unwrap();
        let first = cache.get(run.location(), 1).unwrap();
        assert_eq!(first.step, Some(1));
        assert_eq!(
            std::fs::read(first.dir.join("model.safetensors")).unwrap(),
            vec![1u8; 1000]
        );
        // A hit reads only the manifest: the weights in the store may go.
        std::fs::remove_file(run.dir.join("checkpoints/step-00000001/model.safetensors")).unwrap();
        let again = cache.get(run.location(), 1).unwrap();
        assert_eq!(again, first);
        let entries = cache.entries().unwrap();
        assert_eq!(entries.len(), 1);
        assert!(entries[0].source.ends_with("checkpoints/step-00000001"));
        assert!(entries[0].bytes > 1000);
        // No temporaries left behind.
        let names: Vec<String> = std::fs::read_dir(&run.cache_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![entries[0].name.clone()]);

        // A file that differs from its manifest is refused and nothing stays.
        run.publish(2, 1000);
        std::fs::write(
            run.dir.join("checkpoints/step-00000002/model.safetensors"),
            vec![9u8; 1000],
        )
        .unwrap();
        let err = cache.get(run.location(), 2).unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("corrupt"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&run.cache_dir).unwrap().count(), 1);

        // A step that was never published, and a run that is not there.
        let err = cache.get(run.location(), 7).unwrap_err().to_string();
        assert!(
            err.contains("checkpoints/step-00000007")
                && err.contains("no published checkpoint at step 7"),
            "{err}"
        );
        let nowhere = run.dir.parent().unwrap().join("nowhere");
        let err = cache
            .get(nowhere.to_str().unwrap(), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such directory"), "{err}");
        assert!(!nowhere.exists());
    }

    #[test]
    fn evicts_least_recently_used_beyond_the_bound() {
        let run = Run::new();
        for step in 1..=4 {
            run.publish(step, 1000);
        }
        // Room for two checkpoints of ~1000 bytes, not three.
        let cache = CheckpointCache::new(&run.cache_dir, 2500).unwrap();
        cache.get(run.location(), 1).unwrap();
        cache.get(run.location(), 2).unwrap();
        assert_eq!(run.cached_steps(&cache), vec![1, 2]);
        cache.get(run.location(), 1).unwrap(); // 2 is now the least recent
        cache.get(run.location(), 3).unwrap();
        assert_eq!(run.cached_steps(&cache), vec![1, 3]);
        assert!(cache.total_bytes().unwrap() <= 2500);

        // A restart rebuilds the index from the directory, recency included.
        drop(cache);
        let cache = CheckpointCache::new(&run.cache_dir, 2500).unwrap();
        assert_eq!(run.cached_steps(&cache), vec![1, 3]);
        cache.get(run.location(), 4).unwrap();
        assert_eq!(run.cached_steps(&cache), vec![3, 4]);

        // A smaller bound at start-up evicts down to it, newest kept.
        drop(cache);
        let cache = CheckpointCache::new(&run.cache_dir, 1500).unwrap();
        assert_eq!(run.cached_steps(&cache), vec![4]);
    }

    #[test]
    fn a_checkpoint_larger_than_the_bound_is_kept_alone() {
        let run = Run::new();
        run.publish(1, 1000);
        run.publish(2, 1000);
        let cache = CheckpointCache::new(&run.cache_dir, 500).unwrap();
        let one = cache.get(run.location(), 1).unwrap();
        assert!(one.dir.join("model.safetensors").is_file());
        assert_eq!(run.cached_steps(&cache), vec![1]);
        let two = cache.get(run.location(), 2).unwrap();
        assert!(two.dir.join("model.safetensors").is_file());
        assert!(!one.dir.exists());
        assert_eq!(run.cached_steps(&cache), vec![2]);
    }

    #[test]
    fn a_checkpoint_published_again_is_downloaded_again() {
        let run = Run::new();
        run.publish(1, 1000);
        let cache = CheckpointCache::new(&run.cache_dir, 1 << 20).unwrap();
        let old = cache.get(run.location(), 1).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        run.publish(1, 700);
        let new = cache.get(run.location(), 1).unwrap();
        assert_ne!(old.dir, new.dir);
        assert_eq!(
            std::fs::metadata(new.dir.join("model.safetensors"))
                .unwrap()
                .len(),
            700
        );
    }

    #[test]
    fn temporaries_of_dead_processes_are_removed_at_start() {
        let run = Run::new();
        let dead = run
            .cache_dir
            .join(format!("{PARTIAL_PREFIX}abc-4294967295-0"));
        let evicting = run
            .cache_dir
            .join(format!("{EVICTING_PREFIX}abc-4294967295-3"));
        let alive = run
            .cache_dir
            .join(format!("{PARTIAL_PREFIX}abc-{}-0", std::process::id()));
        let incomplete = run.cache_dir.join("0123456789abcdef01234567");
        for dir in [&dead, &evicting, &alive, &incomplete] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("model.safetensors"), [0u8; 100]).unwrap();
        }
        let cache = CheckpointCache::new(&run.cache_dir, 1 << 20).unwrap();
        assert!(!dead.exists() && !evicting.exists());
        assert!(alive.exists(), "a download in progress stays");
        assert!(
            cache.entries().unwrap().is_empty(),
            "incomplete entries do not count"
        );
    }

    #[test]
    fn concurrent_gets_of_one_checkpoint_share_one_entry() {
        let run = Run::new();
        run.publish(1, 20_000);
        let cache = CheckpointCache::new(&run.cache_dir, 1 << 20).unwrap();
        let other = CheckpointCache::new(&run.cache_dir, 1 << 20).unwrap();
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| cache.get(run.location(), 1).unwrap());
            let b = s.spawn(|| other.get(run.location(), 1).unwrap());
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!(a, b);
        assert_eq!(cache.entries().unwrap().len(), 1);
        assert_eq!(std::fs::read_dir(&run.cache_dir).unwrap().count(), 1);
        assert_eq!(
            std::fs::read(a.dir.join("model.safetensors")).unwrap(),
            vec![1u8; 20_000]
        );
    }
}
