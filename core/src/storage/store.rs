//! The object store, premem's durable truth: a local directory (the embedded
//! default) or `file://`, `s3://`, `gs://`, `az://` URLs through the
//! `object_store` crate. Cloud credentials and endpoints come from the
//! standard environment variables (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`,
//! `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, ...) and are never
//! logged.
//!
//! Paths given to a [`Store`] are relative to its root, with `/` separators.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// Files at least this large are uploaded in parts.
const MULTIPART_THRESHOLD: u64 = 16 << 20;
const PART_SIZE: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object store '{location}': {message}")]
    Open { location: String, message: String },
    #[error("{url}: not found")]
    NotFound { url: String },
    #[error("{url}: {source}")]
    Backend {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{path}: {source}")]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes differ from what their manifest promises.
    #[error("{url}: corrupt: {message}")]
    Corrupt { url: String, message: String },
}

/// A file as uploaded: name relative to its prefix, size, sha256.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    root: Path,
    /// The location as the user wrote it (local directories made absolute).
    url: String,
    /// For a local store, the directory of `root`: deletions there also
    /// remove the staging files of uploads a crash interrupted, which the
    /// object-store listing hides.
    local_dir: Option<PathBuf>,
}

impl Store {
    /// Opens a local directory (created if missing) or an object-store URL.
    pub fn open(location: &str) -> Result<Store, StoreError> {
        let open_error = |message: String| StoreError::Open {
            location: location.to_string(),
            message,
        };
        if !location.contains("://") {
            return Self::open_local(FsPath::new(location), location);
        }
        let url = url::Url::parse(location).map_err(|e| open_error(format!("not a URL: {e}")))?;
        let root = Path::from_url_path(url.path()).map_err(|e| open_error(e.to_string()))?;
        let inner: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|_| open_error("file:// URLs need an absolute path".into()))?;
                return Self::open_local(&path, location);
            }
            "memory" => {
                return Err(open_error(
                    "an in-memory store keeps nothing past the process; use a directory, file://, s3://, gs:// or az://".into(),
                ));
            }
            scheme => {
                crate::storage::store_client::cloud_store(scheme, location).map_err(open_error)?
            }
        };
        Ok(Store {
            inner,
            root,
            url: location.trim_end_matches('/').to_string(),
            local_dir: None,
        })
    }

    /// As [`Store::open`], for a reader of what is there: a local directory
    /// (a path or `file://`) must exist already; nothing is created.
    pub fn open_existing(location: &str) -> Result<Store, StoreError> {
        let local = if !location.contains("://") {
            Some(PathBuf::from(location))
        } else if location.starts_with("file://") {
            url::Url::parse(location)
                .ok()
                .and_then(|u| u.to_file_path().ok())
        } else {
            None
        };
        if let Some(dir) = local
            && !dir.is_dir()
        {
            return Err(StoreError::NotFound {
                url: location.to_string(),
            });
        }
        Self::open(location)
    }

    fn open_local(dir: &FsPath, location: &str) -> Result<Store, StoreError> {
        let open_error = |message: String| StoreError::Open {
            location: location.to_string(),
            message,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| open_error(format!("cannot create the directory: {e}")))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| open_error(format!("cannot resolve the directory: {e}")))?;
        let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| open_error(e.to_string()))?;
        Ok(Store {
            // fsync: a manifest must never reach the disk before its files.
            inner: Arc::new(fs.with_automatic_cleanup(true).with_fsync(true)),
            root: Path::default(),
            url: dir.display().to_string(),
            local_dir: Some(dir),
        })
    }

    /// The store's location, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The store rooted at `prefix` below this one.
    pub fn child(&self, prefix: &str) -> Store {
        Store {
            inner: self.inner.clone(),
            root: self.path(prefix),
            url: format!("{}/{}", self.url, prefix.trim_matches('/')),
            local_dir: self
                .local_dir
                .as_ref()
                .map(|d| d.join(prefix.trim_matches('/'))),
        }
    }

    fn path(&self, relative: &str) -> Path {
        relative
            .split('/')
            .filter(|p| !p.is_empty())
            .fold(self.root.clone(), |path, part| path.clone().join(part))
    }

    /// The local file of a path below the root, when the store is a local
    /// directory (for what the object-store API cannot say: a file's mode).
    pub fn local_file(&self, relative: &str) -> Option<PathBuf> {
        let dir = self.local_dir.as_ref()?;
        Some(
            relative
                .split('/')
                .filter(|p| !p.is_empty())
                .fold(dir.clone(), |d, p| d.join(p)),
        )
    }

    /// The URL of a path below the root, for messages.
    pub fn url_of(&self, relative: &str) -> String {
        format!("{}/{}", self.url, relative.trim_matches('/'))
    }

    fn backend(&self, relative: &str) -> impl Fn(object_store::Error) -> StoreError {
        let url = self.url_of(relative);
        move |source| match source {
            object_store::Error::NotFound { .. } => StoreError::NotFound { url: url.clone() },
            source => StoreError::Backend {
                url: url.clone(),
                source,
            },
        }
    }

    /// Writes an object that must not exist yet; `Ok(false)` when it does.
    pub async fn put_if_absent(
        &self,
        relative: &str,
        bytes: impl Into<Bytes>,
    ) -> Result<bool, StoreError> {
        let options = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(
                &self.path(relative),
                PutPayload::from(bytes.into()),
                options,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.backend(relative)(e)),
        }
    }

    pub async fn put(&self, relative: &str, bytes: impl Into<Bytes>) -> Result<(), StoreError> {
        self.inner
            .put(&self.path(relative), PutPayload::from(bytes.into()))
            .await
            .map_err(self.backend(relative))?;
        Ok(())
    }

    pub async fn get(&self, relative: &str) -> Result<Bytes, StoreError> {
        let result = self
            .inner
            .get(&self.path(relative))
            .await
            .map_err(self.backend(relative))?;
        result.bytes().await.map_err(self.backend(relative))
    }

    pub async fn exists(&self, relative: &str) -> Result<bool, StoreError> {
        match self.inner.head(&self.path(relative)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.backend(relative)(e)),
        }
    }

    pub async fn delete(&self, relative: &str) -> Result<(), StoreError> {
        match self.inner.delete(&self.path(relative)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.backend(relative)(e)),
        }
    }

    /// Names of the "directories" directly below `prefix`.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let listing = self
            .inner
            .list_with_delimiter(Some(&self.path(prefix)))
            .await
            .map_err(self.backend(prefix))?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every object below `prefix`, as paths relative to `prefix`.
    pub async fn list_files(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let base = self.path(prefix);
        let objects: Vec<_> = self
            .inner
            .list(Some(&base))
            .try_collect()
            .await
            .map_err(self.backend(prefix))?;
        let mut names: Vec<String> = objects
            .iter()
            .filter_map(|o| o.location.prefix_match(&base))
            .map(|parts| {
                parts
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Deletes every object below `prefix` (locally: the whole directory,
    /// staging files of interrupted uploads included).
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        if let Some(dir) = &self.local_dir {
            let path = dir.join(prefix.trim_matches('/'));
            return match std::fs::remove_dir_all(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(StoreError::Local { path, source }),
            };
        }
        for name in self.list_files(prefix).await? {
            self.delete(&format!("{}/{name}", prefix.trim_end_matches('/')))
                .await?;
        }
        Ok(())
    }

    /// Uploads a local file (in parts when large) and returns its size and
    /// sha256.
    pub async fn put_file(&self, relative: &str, local: &FsPath) -> Result<FileEntry, StoreError> {
        let local_error = |source| StoreError::Local {
            path: local.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::open(local).await.map_err(local_error)?;
        let size = file.metadata().await.map_err(local_error)?.len();
        let mut hasher = Sha256::new();
        let name = relative.rsplit('/').next().unwrap_or(relative).to_string();
        if size < MULTIPART_THRESHOLD {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).await.map_err(local_error)?;
            hasher.update(&bytes);
            self.put(relative, bytes).await?;
        } else {
            let upload = self
                .inner
                .put_multipart(&self.path(relative))
                .await
                .map_err(self.backend(relative))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut buffer = vec![0u8; PART_SIZE];
            loop {
                let n = file.read(&mut buffer).await.map_err(local_error)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
                writer
                    .wait_for_capacity(4)
                    .await
                    .map_err(self.backend(relative))?;
                writer.write(&buffer[..n]);
            }
            writer.finish().await.map_err(self.backend(relative))?;
        }
        Ok(FileEntry {
            name,
            bytes: size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Downloads an object to a local file, checking size and sha256 against
    /// `expected` when given.
    pub async fn get_file(
        &self,
        relative: &str,
        local: &FsPath,
        expected: Option<&FileEntry>,
    ) -> Result<(), StoreError> {
        let local_error = |source| StoreError::Local {
            path: local.to_path_buf(),
            source,
        };
        let result = self
            .inner
            .get(&self.path(relative))
            .await
            .map_err(self.backend(relative))?;
        let mut stream = result.into_stream();
        let mut file = tokio::fs::File::create(local).await.map_err(local_error)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(self.backend(relative))? {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                .await
                .map_err(local_error)?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(local_error)?;
        if let Some(expected) = expected {
            let sha256 = hex::encode(hasher.finalize());
            if size != expected.bytes || sha256 != expected.sha256 {
                return Err(StoreError::Corrupt {
                    url: self.url_of(relative),
                    message: format!(
                        "{size} bytes with sha256 {sha256}, the manifest says {} bytes with sha256 {}",
                        expected.bytes, expected.sha256
                    ),
                });
            }
        }
        Ok(())
    }

    /// Fails early, naming the store, when it cannot be written (wrong
    /// credentials, missing bucket, read-only directory).
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        let probe = ".premem-write-check";
        let target = match url::Url::parse(&self.url) {
            Ok(url) if self.local_dir.is_none() && url.host_str().is_some() => {
                format!("bucket '{}'", url.host_str().unwrap_or_default())
            }
            _ => "the directory".to_string(),
        };
        self.put(probe, Bytes::from_static(b"ok"))
            .await
            .map_err(|e| StoreError::Open {
                location: self.url.clone(),
                message: format!(
                    "cannot write to {target} (check the credentials and that it exists): {}",
                    crate::error_text::chain(&e)
                ),
            })?;
        self.delete(probe).await
    }
}

/// A store with its own runtime, for synchronous callers (the trainer loop).
pub struct BlockingStore {
    store: Store,
    runtime: tokio::runtime::Runtime,
}

impl BlockingStore {
    pub fn new(store: Store) -> Result<BlockingStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| StoreError::Local {
                path: PathBuf::from("<tokio runtime>"),
                source: e,
            })?;
        Ok(BlockingStore { store, runtime })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs one store operation to completion.
    pub fn run<T>(&self, operation: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(operation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_store_round_trips_and_lists() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("runs/a").to_str().unwrap()).unwrap();
        store
            .put("checkpoints/step-1/x.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        store
            .put("checkpoints/step-2/y.json", Bytes::from_static(b"[]"))
            .await
            .unwrap();
        assert_eq!(
            store.list_dirs("checkpoints").await.unwrap(),
            vec!["step-1", "step-2"]
        );
        assert_eq!(
            store.list_files("checkpoints").await.unwrap(),
            vec!["step-1/x.json", "step-2/y.json"]
        );
        assert_eq!(
            store
                .get("checkpoints/step-2/y.json")
                .await
                .unwrap()
                .as_ref(),
            b"[]"
        );
        let child = store.child("checkpoints/step-1");
        assert!(child.exists("x.json").await.unwrap());
        store.delete_prefix("checkpoints/step-1").await.unwrap();
        assert_eq!(
            store.list_dirs("checkpoints").await.unwrap(),
            vec!["step-2"]
        );
        let err = store.get("nope.json").await.unwrap_err();
        assert!(
            matches!(err, StoreError::NotFound { .. })
                && err.to_string().ends_with("runs/a/nope.json: not found")
        );
    }

    #[tokio::test]
    async fn files_upload_with_hashes_and_corruption_is_caught() {
        let tmp = tempfile::tempdir().unwrap();
        let local = tmp.path().join("w.bin");
        std::fs::write(&local, vec![7u8; 1000]).unwrap();
        let store = Store::open(tmp.path().join("store").to_str().unwrap()).unwrap();
        let entry = store.put_file("a/w.bin", &local).await.unwrap();
        assert_eq!((entry.name.as_str(), entry.bytes), ("w.bin", 1000));
        let back = tmp.path().join("back.bin");
        store
            .get_file("a/w.bin", &back, Some(&entry))
            .await
            .unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), vec![7u8; 1000]);
        store.put("a/w.bin", vec![8u8; 1000]).await.unwrap();
        let err = store
            .get_file("a/w.bin", &back, Some(&entry))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn unusable_locations_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let below_file = file.join("run");
        let err = Store::open(below_file.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plain-file/run") && err.contains("cannot create the directory"),
            "{err}"
        );
        let err = Store::open("ftp://host/x").unwrap_err().to_string();
        assert!(err.contains("scheme 'ftp' is not supported"), "{err}");
    }
}
