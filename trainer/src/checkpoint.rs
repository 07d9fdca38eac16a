//! Writing and reading checkpoints in the run's object store (layout in
//! `premem_core::storage::checkpoint`): the weights in the Hugging Face layout, then
//! the resume state, each published by a manifest written last.
//!
//! Files are staged in one directory per run, rank and process under the
//! system temp dir (ranks sharing a machine must not share one), emptied
//! before each use, so a process killed mid-save leaves at most one
//! checkpoint's worth of staging behind, removed by the next start of the
//! same rank.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use premem_core::BlockingStore;
use premem_core::science::baselines::{BASELINES_FILE, CheckpointBaselines};
use premem_core::storage::checkpoint::{self as layout, Area};
use premem_model::{CausalLm, ModelConfig, SaveOptions, Tokenizer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::error::{Result, TrainError};

const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FILE: &str = "state.json";

/// Everything besides weights and moments that a resume restores or checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResumeState {
    /// Optimizer steps completed; the next step has this 0-based index.
    pub step: u64,
    pub epoch: u64,
    pub training_hash: String,
    /// Digest of the input files' contents (`JobSpec::inputs_digest`).
    pub inputs_digest: String,
    /// Kind of the model weights (`float32`, `bfloat16`): with bf16 weights
    /// the fp32 master lives in the optimizer state.
    pub weight_dtype: String,
    /// Parameter names and shapes in optimizer buffer order.
    pub layout: Vec<(String, Vec<i64>)>,
    pub premem_version: String,
    /// Digest of the step-0 weights (with `checkpoint.baselines`): a resume
    /// that rebuilds them checks it before measuring distance from init.
    #[serde(default)]
    pub init_digest: Option<String>,
}

fn local_io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The staging directory of every rank and process of this run.
fn staging_run_root(run: &BlockingStore) -> PathBuf {
    let id = hex::encode(&Sha256::digest(run.store().url().as_bytes())[..8]);
    std::env::temp_dir().join(format!("premem-staging-{id}"))
}

fn staging_name(rank: usize, pid: u32) -> String {
    format!("rank-{rank}-pid-{pid}")
}

/// This run's staging directory for `rank` in this process.
pub fn staging_root(run: &BlockingStore, rank: usize) -> PathBuf {
    staging_run_root(run).join(staging_name(rank, std::process::id()))
}

/// An empty staging directory `name` of this run and rank.
fn fresh_staging(run: &BlockingStore, rank: usize, name: &str) -> Result<PathBuf> {
    let dir = staging_root(run, rank).join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(local_io(&dir))?;
    }
    std::fs::create_dir_all(&dir).map_err(local_io(&dir))?;
    Ok(dir)
}

/// Removes a staging directory made by [`fresh_staging`], and this rank's
/// directory above it when empty. (The run's directory above that stays:
/// another rank may be creating its own in it.)
fn done_staging(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).map_err(local_io(dir))?;
    if let Some(rank_dir) = dir.parent() {
        let _ = std::fs::remove_dir(rank_dir);
    }
    Ok(())
}

/// Whether process `pid` may still be running (unknown: yes).
fn may_be_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// Removes this rank's staging left by an earlier process (killed mid-save)
/// and by this one; other ranks' staging, and that of processes still
/// running, stays.
pub fn clear_staging(run: &BlockingStore, rank: usize) -> Result<()> {
    let root = staging_run_root(run);
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(local_io(&root)(e)),
    };
    let prefix = format!("rank-{rank}-pid-");
    let own = std::process::id();
    for entry in entries {
        let entry = entry.map_err(local_io(&root))?;
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own || !may_be_alive(pid) {
            let dir = entry.path();
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(local_io(&dir)(e));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// What a checkpoint writes besides the weights and the optimizer state.
#[derive(Clone, Copy)]
pub struct Records<'a> {
    /// Metrics lines (JSON) since the previous checkpoint.
    pub metrics: &'a [String],
    /// The trainer's baseline measurements, written beside the weights.
    pub baselines: Option<&'a CheckpointBaselines>,
}

/// Writes the checkpoint after `state.step` steps: metrics first, then the
/// weights (with the baseline measurements beside them), then the resume
/// state; each directory visible only when whole. Files are staged under
/// `rank`'s staging directory.
#[allow(clippy::too_many_arguments)]
pub fn save(
    run: &BlockingStore,
    rank: usize,
    model: &CausalLm,
    tokenizer: &Tokenizer,
    optimizer_state: &[(String, Tensor)],
    state: &ResumeState,
    records: &Records<'_>,
    max_shard_bytes: u64,
) -> Result<()> {
    let Records { metrics, baselines } = *records;
    let staging = fresh_staging(run, rank, "save")?;
    let weights = staging.join("weights");
    model.save(&weights, &SaveOptions { max_shard_bytes })?;
    tokenizer.save(&weights.join(premem_model::tokenizer::TOKENIZER_FILE))?;
    if let Some(baselines) = baselines {
        let path = weights.join(BASELINES_FILE);
        let json = serde_json::to_vec_pretty(baselines).expect("baselines serialise");
        std::fs::write(&path, json).map_err(local_io(&path))?;
    }

    let resume = staging.join("resume");
    std::fs::create_dir(&resume).map_err(local_io(&resume))?;
    let tensors: Vec<(String, Tensor)> = optimizer_state
        .iter()
        .map(|(name, t)| (name.clone(), t.to_device(Device::Cpu)))
        .collect();
    Tensor::write_safetensors(&tensors, resume.join(OPTIMIZER_FILE))?;
    let state_json = serde_json::to_vec_pretty(state).expect("state serialises");
    std::fs::write(resume.join(STATE_FILE), state_json).map_err(local_io(&resume))?;

    let store = run.store();
    let mut text = metrics.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    run.run(store.put(&layout::metrics_file(state.step), text.into_bytes()))?;
    run.run(layout::publish(store, Area::Weights, state.step, &weights))?;
    run.run(layout::publish(store, Area::Resume, state.step, &resume))?;
    done_staging(&staging)?;
    Ok(())
}

/// Steps whose weights and resume state are both published, newest first.
pub fn resumable_steps(run: &BlockingStore) -> Result<Vec<u64>> {
    let store = run.store();
    let weights = run.run(layout::published_steps(store, Area::Weights))?;
    let resume = run.run(layout::published_steps(store, Area::Resume))?;
    Ok(resume
        .into_iter()
        .rev()
        .filter(|s| weights.contains(s))
        .collect())
}

/// A checkpoint read back: the model and what the optimizer needs.
pub struct Restored {
    pub model: CausalLm,
    pub state: ResumeState,
    /// The whole optimizer state, in host memory.
    pub optimizer_state: BTreeMap<String, Tensor>,
}

/// Reads the checkpoint of `step` (staging under `rank`'s directory).
/// Errors name the checkpoint's URL.
pub fn load(
    run: &BlockingStore,
    rank: usize,
    step: u64,
    config: ModelConfig,
    device: Device,
    kind: Kind,
) -> Result<Restored> {
    let store = run.store();
    let url = store.url_of(&layout::step_prefix(Area::Resume, step));
    let in_checkpoint = |e: TrainError| TrainError::Resume {
        url: url.clone(),
        message: e.to_string(),
    };
    let staging = fresh_staging(run, rank, "load")?;
    let weights = staging.join("weights");
    let resume = staging.join("resume");
    run.run(layout::download(store, Area::Weights, step, &weights))?;
    run.run(layout::download(store, Area::Resume, step, &resume))?;
    let model = CausalLm::load_with_config(config, &weights, device, kind)
        .map_err(|e| in_checkpoint(e.into()))?;
    let state_text =
        std::fs::read(resume.join(STATE_FILE)).map_err(|e| in_checkpoint(local_io(&resume)(e)))?;
    let state: ResumeState =
        serde_json::from_slice(&state_text).map_err(|e| TrainError::Resume {
            url: url.clone(),
            message: format!("unreadable {STATE_FILE}: {e}"),
        })?;
    // Left in host memory: each rank copies only its range to the device.
    let optimizer_state = Tensor::read_safetensors(resume.join(OPTIMIZER_FILE))
        .map_err(|e| in_checkpoint(e.into()))?
        .into_iter()
        .collect();
    done_staging(&staging)?;
    Ok(Restored {
        model,
        state,
        optimizer_state,
    })
}

/// Deletes resume states beyond the newest `keep` (weights stay).
pub fn prune_resume_states(run: &BlockingStore, keep: usize) -> Result<()> {
    let store = run.store();
    let steps = run.run(layout::published_steps(store, Area::Resume))?;
    for step in steps.iter().take(steps.len().saturating_sub(keep)) {
        run.run(layout::remove(store, Area::Resume, *step))?;
    }
    Ok(())
}
