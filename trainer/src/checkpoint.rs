//! Writing and reading checkpoints in the run's object store (layout in
//! `premem_core::checkpoint`): the weights in the Hugging Face layout, then
//! the resume state, each published by a manifest written last.

use std::collections::BTreeMap;
use std::path::Path;

use premem_core::BlockingStore;
use premem_core::checkpoint::{self as layout, Area};
use premem_model::{CausalLm, ModelConfig, SaveOptions, Tokenizer};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{Result, TrainError};
use crate::optim::Optimizer;

const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FILE: &str = "state.json";

/// Everything besides weights and moments that a resume restores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResumeState {
    /// Optimizer steps completed; the next step has this 0-based index.
    pub step: u64,
    pub epoch: u64,
    pub training_hash: String,
    /// Parameter names and shapes in optimizer buffer order.
    pub layout: Vec<(String, Vec<i64>)>,
    pub premem_version: String,
}

fn local_io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the checkpoint after `state.step` steps: metrics first, then the
/// weights, then the resume state; each directory visible only when whole.
pub fn save(
    run: &BlockingStore,
    model: &CausalLm,
    tokenizer: &Tokenizer,
    optimizer: &Optimizer,
    state: &ResumeState,
    metrics: &[String],
    max_shard_bytes: u64,
) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("premem-checkpoint-")
        .tempdir()
        .map_err(local_io(Path::new("<tmp>")))?;
    let weights = tmp.path().join("weights");
    model.save(&weights, &SaveOptions { max_shard_bytes })?;
    tokenizer.save(&weights.join(premem_model::tokenizer::TOKENIZER_FILE))?;

    let resume = tmp.path().join("resume");
    std::fs::create_dir(&resume).map_err(local_io(&resume))?;
    let optimizer_path = resume.join(OPTIMIZER_FILE);
    let tensors: Vec<(String, Tensor)> = optimizer
        .state_tensors()
        .into_iter()
        .map(|(name, t)| (name, t.to_device(Device::Cpu)))
        .collect();
    Tensor::write_safetensors(&tensors, &optimizer_path)?;
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
    Ok(())
}

/// The newest step whose weights and resume state are both published.
pub fn latest_resumable(run: &BlockingStore) -> Result<Option<u64>> {
    let store = run.store();
    let weights = run.run(layout::published_steps(store, Area::Weights))?;
    let resume = run.run(layout::published_steps(store, Area::Resume))?;
    Ok(resume.into_iter().rev().find(|s| weights.contains(s)))
}

/// A checkpoint read back: the model and what the optimizer needs.
pub struct Restored {
    pub model: CausalLm,
    pub state: ResumeState,
    pub optimizer_state: BTreeMap<String, Tensor>,
}

pub fn load(
    run: &BlockingStore,
    step: u64,
    config: ModelConfig,
    device: Device,
    kind: Kind,
) -> Result<Restored> {
    let tmp = tempfile::Builder::new()
        .prefix("premem-resume-")
        .tempdir()
        .map_err(local_io(Path::new("<tmp>")))?;
    let store = run.store();
    let weights = tmp.path().join("weights");
    let resume = tmp.path().join("resume");
    run.run(layout::download(store, Area::Weights, step, &weights))?;
    run.run(layout::download(store, Area::Resume, step, &resume))?;
    let model = CausalLm::load_with_config(config, &weights, device, kind)?;
    let state_path = resume.join(STATE_FILE);
    let state_text = std::fs::read(&state_path).map_err(local_io(&state_path))?;
    let state: ResumeState =
        serde_json::from_slice(&state_text).map_err(|e| TrainError::Resume {
            url: store.url_of(&format!(
                "{}/{STATE_FILE}",
                layout::step_prefix(Area::Resume, step)
            )),
            message: format!("unreadable resume state: {e}"),
        })?;
    let optimizer_state = Tensor::read_safetensors(resume.join(OPTIMIZER_FILE))?
        .into_iter()
        .map(|(name, t)| (name, t.to_device(device)))
        .collect();
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
