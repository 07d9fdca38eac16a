//! The run's output in the store, as rank 0 sees it at the start: whether
//! this invocation may use it, claiming it, and removing what a crashed
//! attempt left half-written.

use premem_core::BlockingStore;
use premem_core::spec::JobSpec;
use premem_core::spec::record::RunRecord;
use premem_core::storage::checkpoint::{self as layout, Area};

use crate::error::{Result, TrainError};

/// Reads `run.json` (read-only) and decides whether this invocation may use
/// the output: a new run needs an empty output, a resume the same spec and
/// inputs. Returns whether a run record already exists.
pub(super) fn check_output(
    run: &BlockingStore,
    spec: &JobSpec,
    inputs_digest: &str,
    resume: bool,
) -> Result<bool> {
    let store = run.store();
    if !run.run(store.exists(layout::RUN_FILE))? {
        return Ok(false);
    }
    let refuse = |message: String| TrainError::Resume {
        url: store.url().to_string(),
        message,
    };
    let existing: RunRecord = serde_json::from_slice(&run.run(store.get(layout::RUN_FILE))?)
        .map_err(|e| TrainError::Resume {
            url: store.url_of(layout::RUN_FILE),
            message: format!("unreadable: {e}"),
        })?;
    if !resume {
        return Err(refuse(format!(
            "already holds run '{}'; pass --resume to continue it, or set run.output to a new location",
            existing.name
        )));
    }
    if existing.training_hash != spec.training_hash() {
        return Err(refuse(
            "the job spec changed since this run started (training hash differs); \
             only run.output, checkpoint, device and monitor settings may change on resume"
                .into(),
        ));
    }
    if existing.inputs_digest != inputs_digest {
        return Err(refuse(
            "the train data, tokenizer or model files changed since this run started (same paths, other contents)".into(),
        ));
    }
    if existing.premem_version != env!("CARGO_PKG_VERSION") {
        tracing::warn!(
            started_with = existing.premem_version,
            now = env!("CARGO_PKG_VERSION"),
            "resuming with another premem version: data order or numerics may differ"
        );
    }
    Ok(true)
}

pub(super) fn write_run_record(
    run: &BlockingStore,
    spec: &JobSpec,
    inputs_digest: &str,
) -> Result<()> {
    let store = run.store();
    let record = RunRecord {
        name: spec.run.name.clone(),
        training_hash: spec.training_hash(),
        inputs_digest: inputs_digest.to_string(),
        premem_version: env!("CARGO_PKG_VERSION").to_string(),
        spec: spec.clone(),
        git_revision: premem_core::spec::provenance::git_revision(),
        checksums: premem_core::spec::provenance::input_checksums(spec)?,
    };
    let json = serde_json::to_vec_pretty(&record).expect("run record serialises");
    if !run.run(store.put_if_absent(layout::RUN_FILE, json))? {
        return Err(TrainError::Resume {
            url: store.url().to_string(),
            message: "another process claimed this output while this run was starting".into(),
        });
    }
    Ok(())
}

/// Removes what a crash left half-written after the checkpoint `step`.
pub(super) fn clean_after(run: &BlockingStore, step: Option<u64>) -> Result<()> {
    let store = run.store();
    for area in [Area::Weights, Area::Resume] {
        for removed in run.run(layout::remove_unpublished(store, area))? {
            tracing::info!(%removed, "removed an unpublished checkpoint directory");
        }
    }
    for name in run.run(store.list_files("metrics"))? {
        let newer = name
            .strip_suffix(".jsonl")
            .and_then(layout::parse_step_name)
            .is_some_and(|s| step.is_none_or(|step| s > step));
        if newer {
            run.run(store.delete(&format!("metrics/{name}")))?;
        }
    }
    Ok(())
}
