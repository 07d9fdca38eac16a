//! A local checkpoint directory checked against its `MANIFEST.json` before
//! its weights are read: every file the manifest lists must be there with
//! the size and sha256 it lists, and no file the model loader reads
//! (`*.safetensors`, `*.json`) may be there unlisted. A flipped byte in the
//! weights, or a manifest edited to match other weights, is then refused
//! instead of evaluated into `inf` perplexities.
//!
//! Hashing the weights costs a read of every byte, so a directory that passed
//! is remembered by a marker file in the cache directory,
//! `<cache>/.verified/<key>`, whose name is a hash of the directory's path,
//! the manifest's bytes, and each listed file's size, inode, modification
//! and change times. Any write to a file, or to the manifest, changes the
//! key (the change time cannot be set back by a user), so the next reader
//! hashes again; a marker that is never written again costs a few bytes.
//! Downloaded checkpoints ([`crate::checkpoint::download_entry`]) are
//! verified as they are downloaded and need no marker.

use std::io::Read;
use std::path::{Path, PathBuf};

use premem_core::storage::checkpoint::{MANIFEST, Manifest};
use premem_core::storage::store::FileEntry;
use sha2::{Digest, Sha256};

use crate::error::{EvalError, Result};

/// The directory of verified-markers under a cache directory.
pub const MARKERS: &str = ".verified";

/// Verifies the checkpoint directory `dir` against its `MANIFEST.json`
/// (unless a marker in `cache_dir` says it passed with these very files) and
/// returns the manifest. Nothing in `dir` is changed, whatever the outcome.
pub fn verify_dir(dir: &Path, cache_dir: &Path) -> Result<Manifest> {
    let error = checkpoint_error(dir);
    let manifest_path = dir.join(MANIFEST);
    let bytes =
        std::fs::read(&manifest_path).map_err(|e| error(format!("cannot read {MANIFEST}: {e}")))?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| error(format!("unreadable {MANIFEST}: {e}")))?;
    check_listing(dir, &manifest)?;
    let marker = cache_dir
        .join(MARKERS)
        .join(marker_name(dir, &bytes, &manifest)?);
    if marker.is_file() {
        return Ok(manifest);
    }
    for entry in &manifest.files {
        check_file(dir, entry)?;
    }
    write_marker(&marker, dir);
    Ok(manifest)
}

fn checkpoint_error(dir: &Path) -> impl Fn(String) -> EvalError + '_ {
    move |message| EvalError::Checkpoint {
        location: dir.display().to_string(),
        message,
    }
}

/// The manifest lists plain, distinct file names, and lists every file of
/// `dir` that the model loader reads.
fn check_listing(dir: &Path, manifest: &Manifest) -> Result<()> {
    let error = checkpoint_error(dir);
    let mut names = std::collections::BTreeSet::new();
    for entry in &manifest.files {
        let name = entry.name.as_str();
        let plain = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\']);
        if !plain || name == MANIFEST {
            return Err(error(format!(
                "its {MANIFEST} lists '{name}', which is not a file of a checkpoint"
            )));
        }
        if !names.insert(name) {
            return Err(error(format!("its {MANIFEST} lists '{name}' twice")));
        }
    }
    let read = std::fs::read_dir(dir).map_err(|e| error(format!("cannot list: {e}")))?;
    for item in read.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        let loaded = name.ends_with(".safetensors") || name.ends_with(".json");
        if loaded && name != MANIFEST && !names.contains(name.as_str()) {
            return Err(error(format!(
                "{name} is not listed in its {MANIFEST}: its contents cannot be verified (publish the checkpoint again, or move the file out)"
            )));
        }
    }
    Ok(())
}

/// One listed file's size and sha256 against its entry.
fn check_file(dir: &Path, entry: &FileEntry) -> Result<()> {
    let error = checkpoint_error(dir);
    let path = dir.join(&entry.name);
    let (bytes, sha256) =
        hash_file(&path).map_err(|e| error(format!("{}: cannot read: {e}", entry.name)))?;
    if bytes != entry.bytes || sha256 != entry.sha256 {
        return Err(error(format!(
            "{} is corrupt: {bytes} bytes with sha256 {sha256}, its {MANIFEST} says {} bytes with sha256 {}; the file or the manifest changed after publication (nothing was read or removed)",
            entry.name, entry.bytes, entry.sha256
        )));
    }
    Ok(())
}

/// Size and hex sha256 of a file, read in 1 MiB blocks.
fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(hasher.finalize())))
}

/// The marker's name: a hash of what a verification holds for. The files'
/// metadata is read before they are hashed, so a write during the hashing
/// changes the key of the next reader.
fn marker_name(dir: &Path, manifest_bytes: &[u8], manifest: &Manifest) -> Result<String> {
    let error = checkpoint_error(dir);
    let canonical = dir
        .canonicalize()
        .map_err(|e| error(format!("cannot resolve the directory: {e}")))?;
    let mut key = Sha256::new();
    key.update(canonical.to_string_lossy().as_bytes());
    key.update([0]);
    key.update(manifest_bytes);
    for path in std::iter::once(PathBuf::from(MANIFEST))
        .chain(manifest.files.iter().map(|f| PathBuf::from(&f.name)))
    {
        let meta = std::fs::metadata(dir.join(&path))
            .map_err(|e| error(format!("{}: {e}", path.display())))?;
        key.update(file_stamp(&path, &meta).as_bytes());
    }
    Ok(hex::encode(&key.finalize()[..16]))
}

/// A file's name, size, inode, and modification and change times.
fn file_stamp(path: &Path, meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "\n{}\0{}\0{}\0{}.{}\0{}.{}",
        path.display(),
        meta.len(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}

/// Records a passed verification; a marker that cannot be written only
/// costs the next reader another hashing.
fn write_marker(marker: &Path, dir: &Path) {
    let written = marker
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            premem_core::storage::files::write_atomic(marker, dir.display().to_string().as_bytes())
        });
    if let Err(e) = written {
        tracing::warn!(marker = %marker.display(), error = %e, "cannot record a verified checkpoint");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use premem_core::storage::checkpoint::{Area, publish};
    use premem_core::{BlockingStore, Store};

    /// A published checkpoint in a local run; its directory and a cache.
    fn published(tmp: &Path) -> (PathBuf, PathBuf) {
        let local = tmp.join("local");
        std::fs::create_dir_all(&local).unwrap();
        std::fs::write(local.join("config.json"), b"{}").unwrap();
        std::fs::write(local.join("model.safetensors"), vec![7u8; 5000]).unwrap();
        let run =
            BlockingStore::new(Store::open(tmp.join("run").to_str().unwrap()).unwrap()).unwrap();
        run.run(publish(run.store(), Area::Weights, 3, &local))
            .unwrap();
        (tmp.join("run/checkpoints/step-00000003"), tmp.join("cache"))
    }

    fn markers(cache: &Path) -> usize {
        std::fs::read_dir(cache.join(MARKERS)).map_or(0, |r| r.count())
    }

    #[test]
    fn a_published_directory_passes_once_and_is_remembered() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, cache) = published(tmp.path());
        assert_eq!(verify_dir(&dir, &cache).unwrap().step, 3);
        assert_eq!(markers(&cache), 1);
        assert_eq!(verify_dir(&dir, &cache).unwrap().step, 3);
        assert_eq!(markers(&cache), 1, "the second read hashed nothing new");
    }

    #[test]
    fn a_flipped_byte_is_refused_even_after_a_pass() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, cache) = published(tmp.path());
        verify_dir(&dir, &cache).unwrap();
        let weights = dir.join("model.safetensors");
        let mut bytes = std::fs::read(&weights).unwrap();
        bytes[100] ^= 0x01;
        std::fs::write(&weights, &bytes).unwrap();
        let err = verify_dir(&dir, &cache).unwrap_err().to_string();
        assert!(
            err.contains(&dir.display().to_string())
                && err.contains("model.safetensors is corrupt")
                && err.contains("5000 bytes with sha256"),
            "{err}"
        );
        assert_eq!(std::fs::read(&weights).unwrap(), bytes, "nothing removed");
    }

    #[test]
    fn an_edited_sha256_or_an_unlisted_weight_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, cache) = published(tmp.path());
        let extra = dir.join("model-00002-of-00002.safetensors");
        std::fs::write(&extra, b"x").unwrap();
        let err = verify_dir(&dir, &cache).unwrap_err().to_string();
        assert!(
            err.contains("model-00002-of-00002.safetensors is not listed"),
            "{err}"
        );
        std::fs::remove_file(&extra).unwrap();

        verify_dir(&dir, &cache).unwrap();
        let path = dir.join(MANIFEST);
        let mut manifest: Manifest =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let entry = manifest
            .files
            .iter_mut()
            .find(|f| f.name == "model.safetensors");
        entry.unwrap().sha256 = "0".repeat(64);
        std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        let err = verify_dir(&dir, &cache).unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors is corrupt") && err.contains(&"0".repeat(64)),
            "{err}"
        );
    }
}
