//! A checkpoint to evaluate, made local: a model directory as it is, or a
//! published checkpoint in an object store (`s3://.../checkpoints/step-N`,
//! `file://...`) downloaded into a cache and verified against its manifest.
//! A run's output (local or URL) stands for its newest published checkpoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use premem_core::storage::checkpoint::{
    Area, MANIFEST, Manifest, download_published, published_steps, read_manifest_at, step_prefix,
};
use premem_core::{BlockingStore, Store};
use premem_model::{CausalLm, Tokenizer};
use sha2::{Digest, Sha256};
use tch::{Device, Kind};

use crate::error::{EvalError, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalCheckpoint {
    pub dir: PathBuf,
    /// The training step, when the checkpoint carries a manifest.
    pub step: Option<u64>,
}

/// A checkpoint's model loaded for evaluation, with its tokenizer (checked
/// to fit the vocabulary) and the EOS token that ends completions.
pub struct LoadedModel {
    pub model: CausalLm,
    pub tokenizer: Tokenizer,
    pub eos: i64,
}

impl LoadedModel {
    /// Loads the model directory `dir` on `device` with weights of `kind`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<LoadedModel> {
        let model = CausalLm::load(dir, device, kind)?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        tokenizer.check_fits(model.config().vocab_size)?;
        let eos = *model.config().eos_token_ids.first().ok_or_else(|| {
            EvalError::Invalid(format!(
                "{}: config.json has no eos_token_id",
                dir.display()
            ))
        })?;
        Ok(LoadedModel {
            model,
            tokenizer,
            eos,
        })
    }

    /// The padding token: the config's, else EOS.
    pub fn pad(&self) -> i64 {
        self.model.config().pad_token_id.unwrap_or(self.eos)
    }
}

/// Where checkpoints are downloaded (and verified-markers kept) unless the
/// command is told otherwise (`--cache-dir`).
pub const DEFAULT_CACHE_DIR: &str = ".premem-cache/checkpoints";

/// Marks a cache entry whose download completed (it holds the location).
pub(crate) const COMPLETE: &str = ".complete";

/// The checkpoint at `location`, local: a model directory read in place
/// (verified against its `MANIFEST.json`, see [`crate::verify`]), or a
/// published checkpoint or run output downloaded into `cache_dir`
/// (verified as it is downloaded).
pub fn fetch(location: &str, cache_dir: &Path) -> Result<LocalCheckpoint> {
    if !location.contains("://") {
        return fetch_dir(location, cache_dir);
    }
    fetch_published(location, cache_dir)
}

/// A local directory: a model directory, or a run output.
fn fetch_dir(location: &str, cache_dir: &Path) -> Result<LocalCheckpoint> {
    let error = |message: &str| EvalError::Checkpoint {
        location: location.to_string(),
        message: message.into(),
    };
    let dir = Path::new(location);
    if !dir.is_dir() {
        return Err(error("no such directory"));
    }
    if dir.join("config.json").is_file() {
        return open_model_dir(dir, cache_dir);
    }
    if !dir.join(Area::Weights.dir()).is_dir() {
        return Err(error(
            "neither a model directory (no config.json) nor a run output (no checkpoints/)",
        ));
    }
    fetch_published(location, cache_dir)
}

/// A model directory read in place: verified against its `MANIFEST.json`
/// when it has one (a published checkpoint; markers in `cache_dir`), else
/// accepted as a plain Hugging Face directory, with a warning that nothing
/// is verified.
pub fn open_model_dir(dir: &Path, cache_dir: &Path) -> Result<LocalCheckpoint> {
    if !dir.join(MANIFEST).exists() {
        // A directory that is not there is the loader's to name.
        if dir.is_dir() {
            tracing::warn!(
                "{} has no {MANIFEST}: its files are not verified",
                dir.display()
            );
        }
        return Ok(LocalCheckpoint {
            dir: dir.to_path_buf(),
            step: None,
        });
    }
    let manifest = crate::verify::verify_dir(dir, cache_dir)?;
    Ok(LocalCheckpoint {
        dir: dir.to_path_buf(),
        step: Some(manifest.step),
    })
}

/// A published checkpoint, or the newest one of a run output.
fn fetch_published(location: &str, cache_dir: &Path) -> Result<LocalCheckpoint> {
    let error = |message: String| EvalError::Checkpoint {
        location: location.to_string(),
        message,
    };
    let root = BlockingStore::new(Store::open(location)?)?;
    let store = match root.run(root.store().exists(MANIFEST))? {
        true => root,
        false => {
            let steps = root.run(published_steps(root.store(), Area::Weights))?;
            let Some(newest) = steps.last() else {
                // A plain model directory given as a file:// URL is read
                // in place, as the directory itself would be.
                let dir = Path::new(root.store().url());
                if location.starts_with("file://") && dir.join("config.json").is_file() {
                    return open_model_dir(dir, cache_dir);
                }
                return Err(error(format!(
                    "neither a published checkpoint (no {MANIFEST}) nor a run output with published checkpoints"
                )));
            };
            BlockingStore::new(root.store().child(&step_prefix(Area::Weights, *newest)))?
        }
    };
    let manifest = store.run(read_manifest_at(store.store()))?;
    let name = entry_name(location, &manifest);
    let (local, _) = download_entry(&store, &manifest, cache_dir, &name, location)?;
    Ok(LocalCheckpoint {
        dir: local,
        step: Some(manifest.step),
    })
}

/// The name of a published checkpoint's directory in a cache: derived from
/// its location and publication time, so a checkpoint published again under
/// the same name is downloaded again.
pub(crate) fn entry_name(location: &str, manifest: &Manifest) -> String {
    let key = Sha256::digest(format!("{location}\n{}", manifest.created_unix_ms).as_bytes());
    hex::encode(&key[..12])
}

/// Whether a cache entry's download completed.
pub(crate) fn is_complete(entry: &Path) -> bool {
    entry.join(COMPLETE).is_file()
}

/// Prefix of the directories downloads go to before their rename.
pub(crate) const PARTIAL_PREFIX: &str = ".partial-";

/// Downloads the published directory at the root of `store` (whose manifest
/// is `manifest`), verified file by file against it, into
/// `cache_dir/name` unless that holds a complete download already; `true`
/// when this call downloaded it. The download goes to a name of its own
/// (process id and a counter) and is renamed into place once complete, so
/// processes sharing `cache_dir` never see each other's partial files; when
/// two download the same checkpoint at once, the first rename wins and the
/// other copy is dropped.
pub(crate) fn download_entry(
    store: &BlockingStore,
    manifest: &Manifest,
    cache_dir: &Path,
    name: &str,
    location: &str,
) -> Result<(PathBuf, bool)> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let error = |message: String| EvalError::Checkpoint {
        location: location.to_string(),
        message,
    };
    let io = |path: &Path, e: std::io::Error| error(format!("{}: {e}", path.display()));
    let local = cache_dir.join(name);
    if is_complete(&local) {
        return Ok((local, false));
    }
    std::fs::create_dir_all(cache_dir).map_err(|e| io(cache_dir, e))?;
    let partial = cache_dir.join(format!(
        "{PARTIAL_PREFIX}{name}-{}-{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let downloaded = store.run(download_published(store.store(), &partial))?;
        if downloaded.created_unix_ms != manifest.created_unix_ms {
            return Err(error(
                "published again while it was being downloaded; try again".into(),
            ));
        }
        std::fs::write(partial.join(COMPLETE), location.as_bytes()).map_err(|e| io(&partial, e))?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    if local.exists() && !is_complete(&local) {
        // Left by an older premem that downloaded in place.
        let _ = std::fs::remove_dir_all(&local);
    }
    match std::fs::rename(&partial, &local) {
        Ok(()) => Ok((local, true)),
        Err(_) if is_complete(&local) => {
            // Another process finished the same download first.
            let _ = std::fs::remove_dir_all(&partial);
            Ok((local, false))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(io(&local, e))
        }
    }
}
