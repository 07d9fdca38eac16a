//! What a run was made with, for its report: the premem build (version and
//! git revision) and SHA-256 checksums of the data and model files.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::spec::{JobSpec, SpecError};

static GIT_REVISION: OnceLock<String> = OnceLock::new();

/// Set once by the binary at start-up (its build script reads `git`).
pub fn set_git_revision(revision: &str) {
    if !revision.is_empty() {
        let _ = GIT_REVISION.set(revision.to_string());
    }
}

/// The git revision premem was built from, when known.
pub fn git_revision() -> Option<String> {
    GIT_REVISION.get().cloned()
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, SpecError> {
    let io = |source| SpecError::Io {
        path: path.into(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// SHA-256 of every input file of a job, by path as the spec names it: the
/// train and test data, the tokenizer, the model config, and for a base
/// model every file of its directory (weights included: this reads them
/// all once, when a run starts).
pub fn input_checksums(spec: &JobSpec) -> Result<BTreeMap<String, String>, SpecError> {
    let mut files: Vec<String> = vec![spec.data.train.path.clone()];
    files.extend(spec.data.test.as_ref().map(|t| t.path.clone()));
    files.extend(spec.model.tokenizer.clone());
    files.extend(spec.model.config.clone());
    if let Some(base) = &spec.model.base {
        let entries = std::fs::read_dir(base).map_err(|source| SpecError::Io {
            path: base.into(),
            source,
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| {
                format!(
                    "{}/{}",
                    base.trim_end_matches('/'),
                    e.file_name().to_string_lossy()
                )
            })
            .collect();
        names.sort();
        files.extend(names);
    }
    let mut sums = BTreeMap::new();
    for file in files {
        let sum = sha256_file(Path::new(&file))?;
        sums.insert(file, sum);
    }
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_checksums_match_a_known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc.txt");
        std::fs::write(&path, "abc").unwrap();
        // FIPS 180-2 test vector.
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let err = sha256_file(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
