//! Reading a run or a sweep from the object store: `run.json`, the published
//! checkpoints, their baseline files and every result file.

use std::collections::{BTreeMap, BTreeSet};

use premem_core::data::results::{ExampleResult, from_parquet, results_prefix};
use premem_core::science::baselines::{BASELINES_FILE, CheckpointBaselines};
use premem_core::spec::record::{RunRecord, read_run_record};
use premem_core::storage::checkpoint::{
    Area, EarlyStopRecord, RUN_FILE, parse_step_name, published_steps, read_early_stop, step_prefix,
};
use premem_core::{BlockingStore, Store};

use super::{ReportError, Result};

/// Everything a report needs of one run.
#[derive(Clone, Debug)]
pub struct RunData {
    pub name: String,
    pub url: String,
    pub record: RunRecord,
    /// Steps of the published checkpoints.
    pub published: Vec<u64>,
    /// Result rows by checkpoint step (all splits and preambles).
    pub rows: BTreeMap<u64, Vec<ExampleResult>>,
    /// The trainer's baseline measurements by checkpoint step.
    pub baselines: BTreeMap<u64, CheckpointBaselines>,
    /// Things that did not stop the report but limit it (one line each).
    pub notes: Vec<String>,
    /// Why `[advice] stop_when` stopped the run, when it did.
    pub early_stop: Option<EarlyStopRecord>,
}

/// A run (a location with `run.json`) or a sweep (a location whose
/// sub-directories hold runs), runs in name order.
pub fn load(location: &str) -> Result<Vec<RunData>> {
    let root = BlockingStore::new(Store::open_existing(location)?)?;
    if root.run(root.store().exists(RUN_FILE))? {
        return Ok(vec![load_run(&root)?]);
    }
    let mut runs = vec![];
    for name in root.run(root.store().list_dirs(""))? {
        let child = BlockingStore::new(root.store().child(&name))?;
        if child.run(child.store().exists(RUN_FILE))? {
            runs.push(load_run(&child)?);
        }
    }
    if runs.is_empty() {
        return Err(ReportError::Invalid {
            location: root.store().url().to_string(),
            message: format!(
                "neither a run (no {RUN_FILE}) nor a sweep (no sub-directory with a {RUN_FILE})"
            ),
        });
    }
    runs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut seen = BTreeSet::new();
    for run in &runs {
        if !seen.insert(run.name.clone()) {
            return Err(ReportError::Invalid {
                location: run.url.clone(),
                message: format!("two runs of the sweep are both named '{}'", run.name),
            });
        }
    }
    Ok(runs)
}

fn load_run(run: &BlockingStore) -> Result<RunData> {
    let store = run.store();
    let record = run.run(read_run_record(store))?;
    let published = run.run(published_steps(store, Area::Weights))?;
    let mut notes = vec![];
    let baselines = load_baselines(run, &published, &mut notes)?;
    let rows = load_results(run, &mut notes)?;
    let early_stop = run.run(read_early_stop(store))?;
    for step in rows.keys() {
        if !published.contains(step) {
            notes.push(format!(
                "results for step {step} have no published checkpoint (removed?)"
            ));
        }
    }
    Ok(RunData {
        name: record.name.clone(),
        url: store.url().to_string(),
        record,
        published,
        rows,
        baselines,
        notes,
        early_stop,
    })
}

/// The baseline files of the published checkpoints; an unreadable one is
/// noted and left out.
fn load_baselines(
    run: &BlockingStore,
    published: &[u64],
    notes: &mut Vec<String>,
) -> Result<BTreeMap<u64, CheckpointBaselines>> {
    let store = run.store();
    let mut baselines = BTreeMap::new();
    for &step in published {
        let path = format!("{}/{BASELINES_FILE}", step_prefix(Area::Weights, step));
        if !run.run(store.exists(&path))? {
            continue;
        }
        let bytes = run.run(store.get(&path))?;
        match serde_json::from_slice::<CheckpointBaselines>(&bytes) {
            Ok(b) => {
                baselines.insert(step, b);
            }
            Err(e) => notes.push(format!("{}: unreadable, ignored: {e}", store.url_of(&path))),
        }
    }
    Ok(baselines)
}

/// Every result row by checkpoint step; a directory under `results` that is
/// not a step is noted and left out.
fn load_results(
    run: &BlockingStore,
    notes: &mut Vec<String>,
) -> Result<BTreeMap<u64, Vec<ExampleResult>>> {
    let store = run.store();
    let mut rows: BTreeMap<u64, Vec<ExampleResult>> = BTreeMap::new();
    for dir in run.run(store.list_dirs("results"))? {
        let Some(step) = parse_step_name(&dir) else {
            notes.push(format!(
                "{}: not a step directory, ignored",
                store.url_of(&format!("results/{dir}"))
            ));
            continue;
        };
        let prefix = results_prefix(step);
        // (split, id, preamble) → the file that had it.
        let mut seen: BTreeMap<(String, String, String), String> = BTreeMap::new();
        for file in run.run(store.list_files(&prefix))? {
            if !file.ends_with(".parquet") || file.contains('/') {
                continue;
            }
            let path = format!("{prefix}/{file}");
            let url = store.url_of(&path);
            let bytes = run.run(store.get(&path))?;
            let file_rows = from_parquet(bytes, &url)?;
            for row in &file_rows {
                check_row(row, step, &file, &url, &mut seen)?;
            }
            rows.entry(step).or_default().extend(file_rows);
        }
    }
    Ok(rows)
}

/// A row belongs to the step and split its file is for, and appears in no
/// other file of the step; `seen` maps each (split, id, preamble) to its file.
fn check_row(
    row: &ExampleResult,
    step: u64,
    file: &str,
    url: &str,
    seen: &mut BTreeMap<(String, String, String), String>,
) -> Result<()> {
    let invalid = |message: String| ReportError::Invalid {
        location: url.to_string(),
        message,
    };
    if row.checkpoint_step != step {
        return Err(invalid(format!(
            "example '{}' has checkpoint_step {} in the results of step {step}",
            row.id, row.checkpoint_step
        )));
    }
    if !file.starts_with(&row.split) {
        return Err(invalid(format!(
            "example '{}' of split '{}' in a file not named for that split",
            row.id, row.split
        )));
    }
    let key = (row.split.clone(), row.id.clone(), row.preamble.clone());
    if let Some(other) = seen.insert(key, url.to_string()) {
        return Err(invalid(format!(
            "example '{}' ({} split, preamble {:?}) also appears in {other}",
            row.id, row.split, row.preamble
        )));
    }
    Ok(())
}
