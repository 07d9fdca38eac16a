//! The layout of a run in the object store, and atomic publication.
//!
//! ```text
//! <run>/run.json                          the resolved job spec and its training hash
//! <run>/checkpoints/step-00000100/        config.json, model*.safetensors, tokenizer.json,
//!                                         MANIFEST.json (written last)
//! <run>/resume/step-00000100/             optimizer state, step/epoch/cursor, MANIFEST.json
//! <run>/metrics/step-00000100.jsonl       per-step metrics up to that checkpoint
//! <run>/results/step-00000100/            evaluation rows (crate::data::results)
//! <run>/tensorboard/events.out.tfevents.* per-step and per-checkpoint scalars (the coordinator)
//! <run>/early-stop.json                   why `[advice] stop_when` stopped the run, when it did
//! ```
//!
//! A directory is visible only once its `MANIFEST.json` exists: files are
//! uploaded first and the manifest last, so a crash mid-upload leaves nothing
//! listed. Removal deletes the manifest first for the same reason.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::storage::store::{FileEntry, Store, StoreError};

pub const RUN_FILE: &str = "run.json";
pub const MANIFEST: &str = "MANIFEST.json";

/// The two kinds of published directories of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// Model weights in the Hugging Face layout, kept for evaluation.
    Weights,
    /// What a resume needs beyond the weights (optimizer state, cursor).
    Resume,
}

impl Area {
    pub fn dir(self) -> &'static str {
        match self {
            Area::Weights => "checkpoints",
            Area::Resume => "resume",
        }
    }
}

pub fn step_name(step: u64) -> String {
    format!("step-{step:08}")
}

pub fn parse_step_name(name: &str) -> Option<u64> {
    name.strip_prefix("step-")?.parse().ok()
}

/// `<area>/step-XXXXXXXX`, relative to the run.
pub fn step_prefix(area: Area, step: u64) -> String {
    format!("{}/{}", area.dir(), step_name(step))
}

/// Where the coordinator writes a run's TensorBoard event files.
pub const TENSORBOARD_DIR: &str = "tensorboard";

/// The record of an early stop by `[advice] stop_when`, written by the
/// coordinator when the rule fires and again once the ranks stopped.
pub const EARLY_STOP_FILE: &str = "early-stop.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopRecord {
    /// The rule's finding, in words.
    pub reason: String,
    /// The newest evaluated checkpoint when the rule fired.
    pub checkpoint: u64,
    /// The step training stopped at (its checkpoint is the run's last);
    /// `None` until the ranks stopped.
    pub stopped_at_step: Option<u64>,
}

/// A run's early-stop record, if it has one; the error names the file.
pub async fn read_early_stop(run: &Store) -> Result<Option<EarlyStopRecord>, StoreError> {
    let bytes = match run.get(EARLY_STOP_FILE).await {
        Ok(bytes) => bytes,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            url: run.url_of(EARLY_STOP_FILE),
            message: format!("not an early-stop record: {e}"),
        })
}

pub fn metrics_file(step: u64) -> String {
    format!("metrics/{}.jsonl", step_name(step))
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub step: u64,
    pub files: Vec<FileEntry>,
    pub premem_version: String,
    pub created_unix_ms: u128,
}

impl Manifest {
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// Uploads every file of `local_dir` to `<area>/step-N/`, then the manifest.
pub async fn publish(
    run: &Store,
    area: Area,
    step: u64,
    local_dir: &Path,
) -> Result<Manifest, StoreError> {
    let prefix = step_prefix(area, step);
    // A leftover of a crashed attempt at the same step is replaced whole.
    run.delete(&format!("{prefix}/{MANIFEST}")).await?;
    run.delete_prefix(&prefix).await?;
    let mut names: Vec<String> = std::fs::read_dir(local_dir)
        .map_err(|source| StoreError::Local {
            path: local_dir.into(),
            source,
        })?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut files = Vec::with_capacity(names.len());
    for name in &names {
        files.push(
            run.put_file(&format!("{prefix}/{name}"), &local_dir.join(name))
                .await?,
        );
    }
    let manifest = Manifest {
        step,
        files,
        premem_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    run.put(&format!("{prefix}/{MANIFEST}"), json).await?;
    Ok(manifest)
}

/// Steps of the published directories of an area, ascending.
pub async fn published_steps(run: &Store, area: Area) -> Result<Vec<u64>, StoreError> {
    let mut steps = vec![];
    for name in run.list_dirs(area.dir()).await? {
        if let Some(step) = parse_step_name(&name)
            && run
                .exists(&format!("{}/{name}/{MANIFEST}", area.dir()))
                .await?
        {
            steps.push(step);
        }
    }
    steps.sort_unstable();
    Ok(steps)
}

pub async fn read_manifest(run: &Store, area: Area, step: u64) -> Result<Manifest, StoreError> {
    read_manifest_at(&run.child(&step_prefix(area, step))).await
}

/// The manifest at the root of a published directory.
pub async fn read_manifest_at(dir: &Store) -> Result<Manifest, StoreError> {
    let bytes = dir.get(MANIFEST).await?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        url: dir.url_of(MANIFEST),
        message: format!("unreadable manifest: {e}"),
    })
}

/// Downloads a published directory into `local_dir`, verifying every file
/// against the manifest.
pub async fn download(
    run: &Store,
    area: Area,
    step: u64,
    local_dir: &Path,
) -> Result<Manifest, StoreError> {
    download_published(&run.child(&step_prefix(area, step)), local_dir).await
}

/// Downloads the published directory at the root of `dir` (its
/// `MANIFEST.json` and every file it lists, verified) into `local_dir`.
pub async fn download_published(dir: &Store, local_dir: &Path) -> Result<Manifest, StoreError> {
    let manifest = read_manifest_at(dir).await?;
    std::fs::create_dir_all(local_dir).map_err(|source| StoreError::Local {
        path: local_dir.into(),
        source,
    })?;
    for file in &manifest.files {
        let plain = !file.name.is_empty()
            && file.name != ".."
            && file.name != "."
            && !file.name.contains(['/', '\\']);
        if !plain {
            return Err(StoreError::Corrupt {
                url: dir.url_of(MANIFEST),
                message: format!("file name '{}' is not a plain file name", file.name),
            });
        }
        dir.get_file(&file.name, &local_dir.join(&file.name), Some(file))
            .await?;
    }
    Ok(manifest)
}

/// Unpublishes (manifest first) and deletes a directory.
pub async fn remove(run: &Store, area: Area, step: u64) -> Result<(), StoreError> {
    let prefix = step_prefix(area, step);
    run.delete(&format!("{prefix}/{MANIFEST}")).await?;
    run.delete_prefix(&prefix).await
}

/// Deletes directories of an area that were never published (crash leftovers).
pub async fn remove_unpublished(run: &Store, area: Area) -> Result<Vec<String>, StoreError> {
    let mut removed = vec![];
    for name in run.list_dirs(area.dir()).await? {
        let prefix = format!("{}/{name}", area.dir());
        if !run.exists(&format!("{prefix}/{MANIFEST}")).await? {
            run.delete_prefix(&prefix).await?;
            removed.push(prefix);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_manifested_directories_are_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let run = Store::open(tmp.path().join("run").to_str().unwrap()).unwrap();
        let local = tmp.path().join("ckpt");
        std::fs::create_dir(&local).unwrap();
        std::fs::write(local.join("model.safetensors"), b"weights").unwrap();
        std::fs::write(local.join("config.json"), b"{}").unwrap();

        let manifest = publish(&run, Area::Weights, 10, &local).await.unwrap();
        assert_eq!(manifest.files.len(), 2);
        // A crashed publication: files without a manifest.
        run.put(
            "checkpoints/step-00000020/model.safetensors",
            b"half".to_vec(),
        )
        .await
        .unwrap();
        assert_eq!(
            published_steps(&run, Area::Weights).await.unwrap(),
            vec![10]
        );

        let back = tmp.path().join("back");
        download(&run, Area::Weights, 10, &back).await.unwrap();
        assert_eq!(
            std::fs::read(back.join("model.safetensors")).unwrap(),
            b"weights"
        );

        assert_eq!(
            remove_unpublished(&run, Area::Weights).await.unwrap(),
            vec!["checkpoints/step-00000020"]
        );
        remove(&run, Area::Weights, 10).await.unwrap();
        assert!(
            published_steps(&run, Area::Weights)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
