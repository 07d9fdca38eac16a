//! A checkpoint to evaluate, made local: a model directory as it is, or a
//! published checkpoint in an object store (`s3://.../checkpoints/step-N`,
//! `file://...`) downloaded into a cache and verified against its manifest.
//! A run's output (local or URL) stands for its newest published checkpoint.

use std::path::{Path, PathBuf};

use premem_core::checkpoint::{
    Area, MANIFEST, Manifest, download_published, published_steps, read_manifest_at, step_prefix,
};
use premem_core::{BlockingStore, Store};
use sha2::{Digest, Sha256};

use crate::error::{EvalError, Result};

pub struct LocalCheckpoint {
    pub dir: PathBuf,
    /// The training step, when the checkpoint carries a manifest.
    pub step: Option<u64>,
}

/// Marks a cache entry whose download completed.
const COMPLETE: &str = ".complete";

pub fn fetch(location: &str, cache_dir: &Path) -> Result<LocalCheckpoint> {
    let error = |message: String| EvalError::Checkpoint {
        location: location.to_string(),
        message,
    };
    if !location.contains("://") {
        let dir = Path::new(location);
        if !dir.is_dir() {
            return Err(error("no such directory".into()));
        }
        if !dir.join("config.json").is_file() && !dir.join(Area::Weights.dir()).is_dir() {
            return Err(error(
                "neither a model directory (no config.json) nor a run output (no checkpoints/)"
                    .into(),
            ));
        }
        if !dir.join("config.json").is_file() {
            return fetch_published(location, cache_dir);
        }
        let step = match std::fs::read(dir.join(MANIFEST)) {
            Ok(bytes) => Some(
                serde_json::from_slice::<Manifest>(&bytes)
                    .map_err(|e| error(format!("unreadable {MANIFEST}: {e}")))?
                    .step,
            ),
            Err(_) => None,
        };
        return Ok(LocalCheckpoint {
            dir: dir.to_path_buf(),
            step,
        });
    }
    fetch_published(location, cache_dir)
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
                return Err(error(format!(
                    "neither a published checkpoint (no {MANIFEST}) nor a run output with published checkpoints"
                )));
            };
            BlockingStore::new(root.store().child(&step_prefix(Area::Weights, *newest)))?
        }
    };
    let manifest = store.run(read_manifest_at(store.store()))?;
    let key = Sha256::digest(format!("{location}\n{}", manifest.created_unix_ms).as_bytes());
    let local = cache_dir.join(hex::encode(&key[..12]));
    if !local.join(COMPLETE).exists() {
        let partial = local.with_extension("partial");
        let io = |path: &Path, e: std::io::Error| error(format!("{}: {e}", path.display()));
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(|e| io(&partial, e))?;
        }
        store.run(download_published(store.store(), &partial))?;
        std::fs::write(partial.join(COMPLETE), b"").map_err(|e| io(&partial, e))?;
        if local.exists() {
            std::fs::remove_dir_all(&local).map_err(|e| io(&local, e))?;
        }
        std::fs::rename(&partial, &local).map_err(|e| io(&local, e))?;
    }
    Ok(LocalCheckpoint {
        dir: local,
        step: Some(manifest.step),
    })
}
