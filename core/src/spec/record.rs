//! The record of a run (`run.json` at the run's root): the resolved job spec,
//! its training hash and what the run was made with. Written once when the
//! run starts; read by the evaluators, the reports and every resume.

use serde::{Deserialize, Serialize};

use crate::spec::JobSpec;
use crate::storage::checkpoint::RUN_FILE;
use crate::storage::store::{Store, StoreError};

/// The record of a run in `run.json`, written once when the run starts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub name: String,
    pub training_hash: String,
    pub inputs_digest: String,
    pub premem_version: String,
    pub spec: JobSpec,
    /// The git revision of that premem build, when known.
    #[serde(default)]
    pub git_revision: Option<String>,
    /// SHA-256 of the data and model files by path
    /// ([`crate::spec::provenance::input_checksums`]).
    #[serde(default)]
    pub checksums: std::collections::BTreeMap<String, String>,
}

/// Reads a run's `run.json`; the error names the file.
pub async fn read_run_record(run: &Store) -> Result<RunRecord, StoreError> {
    let bytes = run.get(RUN_FILE).await?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        url: run.url_of(RUN_FILE),
        message: format!("not a premem run record: {e}"),
    })
}
