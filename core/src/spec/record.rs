//! The record of a run (`run.json` at the run's root): the resolved job spec,
//! its training hash and what the run was made with. Written once when the
//! run starts; read by the evaluators, the reports and every resume, and
//! checked as it is read, so none of them checks it again.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::spec::JobSpec;
use crate::storage::checkpoint::RUN_FILE;
use crate::storage::store::{Store, StoreError};

/// The record of a run in `run.json`, written once when the run starts.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct RunRecord {
    pub name: String,
    pub training_hash: String,
    pub inputs_digest: String,
    pub premem_version: String,
    /// Checked as it is read, as every job spec.
    pub spec: JobSpec,
    /// The git revision of that premem build, when known.
    #[serde(default)]
    pub git_revision: Option<String>,
    /// SHA-256 of the data and model files by path
    /// ([`crate::spec::provenance::input_checksums`]).
    #[serde(default)]
    pub checksums: BTreeMap<String, String>,
}

impl RunRecord {
    /// What the spec cannot say about itself: the record names its spec's
    /// run, and its digests are digests (32 and 64 hex digits).
    fn check(&self) -> Result<(), String> {
        if self.name != self.spec.run.name {
            return Err(format!(
                "it names run {:?}, but its spec is run {:?}",
                self.name, self.spec.run.name
            ));
        }
        for (what, digest) in [
            ("training_hash", &self.training_hash),
            ("inputs_digest", &self.inputs_digest),
        ] {
            if !is_hex(digest, 32) {
                return Err(format!("{what} {digest:?} is not 32 hex digits"));
            }
        }
        match self.checksums.iter().find(|(_, sum)| !is_hex(sum, 64)) {
            Some((file, sum)) => Err(format!(
                "checksums: {file}'s {sum:?} is not a SHA-256 (64 hex digits)"
            )),
            None => Ok(()),
        }
    }
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

impl<'de> Deserialize<'de> for RunRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RunRecord, D::Error> {
        let record = RunRecord::deserialize(deserializer)?;
        record.check().map_err(D::Error::custom)?;
        Ok(record)
    }
}

impl Serialize for RunRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RunRecord::serialize(self, serializer)
    }
}

/// Reads a run's `run.json`; the error names the file.
pub async fn read_run_record(run: &Store) -> Result<RunRecord, StoreError> {
    let bytes = run.get(RUN_FILE).await?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        url: run.url_of(RUN_FILE),
        message: format!("not a premem run record: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> serde_json::Value {
        let spec = crate::testing::JobToml::default().spec();
        serde_json::json!({
            "name": "t",
            "training_hash": spec.training_hash(),
            "inputs_digest": "0".repeat(32),
            "premem_version": "0.1.0",
            "spec": spec,
            "checksums": { "train.jsonl": "a".repeat(64) },
        })
    }

    #[test]
    fn a_record_is_checked_as_it_is_read() {
        let read = |v: serde_json::Value| serde_json::from_value::<RunRecord>(v).map(|_| ());
        assert!(read(record()).is_ok());
        let refused = [
            ("name", serde_json::json!("other"), "names run \"other\""),
            ("inputs_digest", "xyz".into(), "inputs_digest \"xyz\""),
            ("checksums", serde_json::json!({"a": "1"}), "a's \"1\""),
        ];
        for (key, value, wanted) in refused {
            let mut bad = record();
            bad[key] = value;
            let err = read(bad).unwrap_err().to_string();
            assert!(err.contains(wanted), "{key}: {err}");
        }
        let mut bad_spec = record();
        bad_spec["spec"]["train"]["batch_size"] = 7.into();
        let err = read(bad_spec).unwrap_err().to_string();
        assert!(err.contains("train.batch_size (7)"), "{err}");
    }
}
