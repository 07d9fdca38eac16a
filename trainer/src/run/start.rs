//! How a rank starts (or resumes): rank 0 checks or claims the output and
//! decides the start step, every rank restores that step itself, and rank
//! 0's weights and optimizer state are broadcast so that every rank starts
//! bit-identical. A failure on any rank is agreed on, so that no rank is
//! left waiting in a collective.

use std::collections::BTreeMap;
use std::path::Path;

use premem_core::data::order::DataPlan;
use premem_core::spec::ByteSize;
use premem_core::spec::plan;
use premem_core::spec::{JobSpec, Sharding};
use premem_core::storage::checkpoint::{self as layout, Area};
use premem_core::{BlockingStore, Store};
use premem_model::CausalLm;
use tch::{Device, Kind, Tensor};

use super::TrainOptions;
use super::inputs::{Inputs, load_inputs, train_device, weight_kind};
use super::output::{check_output, clean_after, write_run_record};
use crate::baselines::{Probe, weights_digest};
use crate::checkpoint;
use crate::collective::Collective;
use crate::error::{Result, TrainError};
use crate::optim::{AdamConfig, Optimizer, Partition};

/// Where and how this rank trains.
#[derive(Clone, Copy)]
pub(super) struct Placement {
    pub rank: usize,
    pub world: usize,
    pub device: Device,
    /// The weights' element type.
    pub kind: Kind,
    pub adam: AdamConfig,
    /// This rank's part of the optimizer's buffers.
    pub partition: Partition,
}

/// The sharding this run trains with: `train.sharding`, with `auto`
/// resolved by the memory plan (`premem_core::spec::plan`) for GPUs of
/// `train.gpu_memory`, else of this rank's device; with neither (the CPU)
/// `auto` is `none`. The one place `auto` is resolved. Every rank must see
/// the same memory to agree: give `train.gpu_memory` when the GPUs differ.
pub fn effective_sharding(spec: &JobSpec, world: usize, device: Device) -> Result<Sharding> {
    if spec.train.sharding != Sharding::Auto {
        return Ok(spec.train.sharding);
    }
    let device_memory = || match device {
        Device::Cuda(i) => premem_model::runtime::cuda_devices()
            .ok()?
            .into_iter()
            .find(|d| d.index == i)
            .map(|d| ByteSize(d.total_memory_bytes)),
        _ => None,
    };
    let Some(memory) = spec.train.gpu_memory.or_else(device_memory) else {
        return Ok(Sharding::None);
    };
    let stage = plan::resolve_sharding_for_rank(spec, world, device.is_cuda(), Some(memory))
        .map_err(|e| TrainError::Config(format!("train.sharding = \"auto\": {e}")))?;
    Ok(stage.sharding())
}

impl Placement {
    /// This rank's place in `collective`, checked against the spec.
    pub fn of(spec: &JobSpec, collective: &dyn Collective) -> Result<Placement> {
        let device = train_device(spec)?;
        let t = &spec.train;
        let (rank, world) = (collective.rank(), collective.world_size());
        if world == 0 || rank >= world {
            return Err(TrainError::Config(format!(
                "rank {rank} of a world of {world} ranks"
            )));
        }
        if !t.batch_size.is_multiple_of(world) {
            return Err(TrainError::Config(format!(
                "train.batch_size {} is not divisible by the {world} ranks: each rank takes an equal \
                 share of every batch; set a batch size that is a multiple of {world}",
                t.batch_size
            )));
        }
        let sharding = effective_sharding(spec, world, device)?;
        let partition = Partition::new(sharding, rank, world)?;
        tracing::info!(rank, world, ?sharding, "optimizer sharding");
        Ok(Placement {
            rank,
            world,
            partition,
            device,
            kind: weight_kind(t.precision, device),
            adam: AdamConfig {
                kind: t.optimizer,
                betas: t.betas,
                eps: t.eps,
                weight_decay: t.weight_decay,
            },
        })
    }

    /// Rank 0: the one that writes to the store.
    pub fn is_leader(&self) -> bool {
        self.rank == 0
    }
}

/// The model, optimizer and bookkeeping a rank starts stepping from.
pub(super) struct Begun {
    pub store: BlockingStore,
    /// Rank 0's hold on the output.
    pub lock: Option<super::lock::OutputLock>,
    pub model: CausalLm,
    pub optimizer: Optimizer,
    /// The checkpoint step the run continues from.
    pub resumed: Option<u64>,
    /// The baseline measurements (rank 0, `checkpoint.baselines`).
    pub probe: Option<Probe>,
    /// Digest of the step-0 weights (rank 0), recorded in resume states.
    pub init_digest: Option<String>,
}

/// Starts this rank: every rank loads the inputs; rank 0 claims the output
/// and decides the start. Ranks > 0 read the store only after this (the
/// start step's broadcast is their barrier), so they never see it unclaimed.
pub(super) fn begin(
    spec: &JobSpec,
    options: &TrainOptions,
    at: Placement,
    collective: &mut dyn Collective,
) -> Result<(Inputs, DataPlan, Begun)> {
    let prepared = load_inputs(spec).and_then(|inputs| {
        let plan = spec.data_plan(inputs.data.len());
        spec.checkpoint
            .check_steps(plan.total_steps)
            .map_err(TrainError::Config)?;
        let begun = if at.is_leader() {
            Some(begin_leader(spec, options, &inputs, &plan, at)?)
        } else {
            None
        };
        Ok((inputs, plan, begun))
    });
    let (inputs, plan, begun) = agree(
        collective,
        at.device,
        prepared,
        "load the inputs (rank 0: or to claim the output)",
    )?;
    let start = broadcast_start(
        collective,
        at.device,
        begun.as_ref().and_then(|b| b.resumed),
    )?;
    let begun = match begun {
        Some(begun) => Ok(begun),
        None => begin_follower(spec, start, &inputs, at),
    };
    let begun = agree(
        collective,
        at.device,
        begun,
        &format!("restore step {start}"),
    )?;
    let mut begun = begun;
    if at.world > 1 {
        sync_from_leader(&begun.model, &begun.optimizer, collective)?;
        if begun.resumed.is_none() {
            begun.optimizer.master_from_weights();
        }
    }
    Ok((inputs, plan, begun))
}

/// Rank 0's start step (0 for a new run), on every rank.
fn broadcast_start(
    collective: &mut dyn Collective,
    device: Device,
    resumed: Option<u64>,
) -> Result<u64> {
    let mut start = Tensor::from_slice(&[resumed.map_or(0, |s| s as i64)]).to_device(device);
    collective.broadcast(&mut start, 0)?;
    Ok(start.int64_value(&[0]) as u64)
}

/// Rank 0's start: read the store, build or restore the model, and only then
/// claim the output (a run that fails on its inputs leaves nothing behind)
/// and remove what an earlier attempt left half-written.
fn begin_leader(
    spec: &JobSpec,
    options: &TrainOptions,
    inputs: &Inputs,
    plan: &DataPlan,
    at: Placement,
) -> Result<Begun> {
    let run = BlockingStore::new(Store::open(&spec.run.output)?)?;
    run.run(run.store().check_writable())?;
    let owner = options
        .lock_owner
        .clone()
        .unwrap_or_else(premem_core::storage::lease::this_process);
    let lock = super::lock::OutputLock::take(&run, &owner)?;
    let claimed = check_output(&run, spec, &inputs.digest, options.resume)?;
    checkpoint::clear_staging(&run, 0)?;
    let restored = if options.resume {
        restore_newest(&run, spec, inputs, at)?
    } else {
        None
    };
    let resumed = restored.as_ref().map(|r| r.step);
    let minibatches = plan.probe_batches(
        spec.checkpoint.grad_variance_minibatches,
        spec.train.batch_size,
    );
    let measure = spec.checkpoint.baselines;
    let begun = match restored {
        Some(restored) => {
            let probe = if measure {
                Some(resumed_probe(spec, inputs, at, &restored, minibatches)?)
            } else {
                None
            };
            Begun {
                store: run,
                lock: None,
                model: restored.model,
                optimizer: restored.optimizer,
                resumed,
                probe,
                init_digest: restored.init_digest,
            }
        }
        None => fresh_start(spec, inputs, at, run, measure.then_some(minibatches))?,
    };
    if !claimed {
        write_run_record(&begun.store, spec, &inputs.digest)?;
    }
    clean_after(&begun.store, resumed)?;
    Ok(Begun {
        lock: Some(lock),
        ..begun
    })
}

/// A new run: the step-0 model and, when `minibatches` are given, a probe
/// holding its weights and their digest.
fn fresh_start(
    spec: &JobSpec,
    inputs: &Inputs,
    at: Placement,
    store: BlockingStore,
    minibatches: Option<Vec<Vec<usize>>>,
) -> Result<Begun> {
    let model = initial_model(spec, inputs, at.device, at.kind)?;
    let optimizer = Optimizer::new(trainable(&model), at.adam, at.partition);
    let (probe, init_digest) = match minibatches {
        Some(minibatches) => (
            Some(Probe::new(
                Some(&model),
                minibatches,
                spec.train.micro_batch_size,
            )),
            Some(weights_digest(&model)),
        ),
        None => (None, None),
    };
    Ok(Begun {
        store,
        lock: None,
        model,
        optimizer,
        resumed: None,
        probe,
        init_digest,
    })
}

/// The probe of a resumed run: the step-0 weights again, checked against
/// the digest taken at step 0.
fn resumed_probe(
    spec: &JobSpec,
    inputs: &Inputs,
    at: Placement,
    restored: &Restored,
    minibatches: Vec<Vec<usize>>,
) -> Result<Probe> {
    // A base model reads straight into host memory; a random init is
    // redrawn on this run's device.
    let init_device = if spec.model.base.is_some() {
        Device::Cpu
    } else {
        at.device
    };
    let init = initial_model(spec, inputs, init_device, at.kind)?;
    let digest = weights_digest(&init);
    let verified = restored.init_digest.as_deref() == Some(digest.as_str());
    if !verified {
        tracing::warn!(
            "the step-0 weights rebuilt on resume differ from the run's (another device, \
             or a run from an older premem): distance from init is not measured"
        );
    }
    Ok(Probe::new(
        verified.then_some(&init),
        minibatches,
        spec.train.micro_batch_size,
    ))
}

/// A rank > 0's start: the step rank 0 chose, restored by this rank itself
/// (or the step-0 model). Reads the store only, after rank 0 claimed it.
fn begin_follower(spec: &JobSpec, start: u64, inputs: &Inputs, at: Placement) -> Result<Begun> {
    let run = BlockingStore::new(Store::open(&spec.run.output)?)?;
    checkpoint::clear_staging(&run, at.rank)?;
    let (model, optimizer) = if start > 0 {
        let restored = restore_step(&run, at, start, spec, inputs)?;
        (restored.model, restored.optimizer)
    } else {
        let model = initial_model(spec, inputs, at.device, at.kind)?;
        let optimizer = Optimizer::new(trainable(&model), at.adam, at.partition);
        (model, optimizer)
    };
    Ok(Begun {
        store: run,
        lock: None,
        model,
        optimizer,
        resumed: (start > 0).then_some(start),
        probe: None,
        init_digest: None,
    })
}

/// The step-0 model: the base model, or a seeded random init.
fn initial_model(spec: &JobSpec, inputs: &Inputs, device: Device, kind: Kind) -> Result<CausalLm> {
    Ok(match &spec.model.base {
        Some(base) => {
            CausalLm::load_with_config(inputs.config.clone(), Path::new(base), device, kind)?
        }
        None => CausalLm::random(inputs.config.clone(), device, kind, spec.model.init_seed),
    })
}

/// A run restored from a checkpoint.
struct Restored {
    model: CausalLm,
    optimizer: Optimizer,
    step: u64,
    /// Digest of the step-0 weights, when the run recorded one.
    init_digest: Option<String>,
}

/// Restores the checkpoint of `step` and checks that this run may continue it.
fn restore_step(
    run: &BlockingStore,
    at: Placement,
    step: u64,
    spec: &JobSpec,
    inputs: &Inputs,
) -> Result<Restored> {
    let (rank, device) = (at.rank, at.device);
    let wanted_dtype = premem_model::weights::dtype_name(at.kind);
    let restored = checkpoint::load(run, rank, step, inputs.config.clone(), device, at.kind)?;
    let url = run.store().url_of(&layout::step_prefix(Area::Resume, step));
    let refuse = |message: String| TrainError::Resume {
        url: url.clone(),
        message,
    };
    let state = &restored.state;
    if state.training_hash != spec.training_hash() || state.inputs_digest != inputs.digest {
        return Err(refuse(
            "written by a different job spec or other input files".into(),
        ));
    }
    if state.weight_dtype != wanted_dtype {
        return Err(refuse(format!(
            "trained with {} weights, this run would use {wanted_dtype} (train.precision {:?} on {device:?}); \
             set train.precision to match, or resume on the same kind of device",
            state.weight_dtype, spec.train.precision
        )));
    }
    let mut optimizer = Optimizer::new(trainable(&restored.model), at.adam, at.partition);
    optimizer
        .restore(&state.layout, &restored.optimizer_state, state.step as i64)
        .map_err(|e| refuse(e.to_string()))?;
    tracing::info!(step, rank, url = run.store().url(), "resumed");
    Ok(Restored {
        model: restored.model,
        optimizer,
        step,
        init_digest: restored.state.init_digest.clone(),
    })
}

/// Restores the newest checkpoint that reads back whole; a damaged one (lost
/// files, wrong hashes) is skipped with a warning.
fn restore_newest(
    run: &BlockingStore,
    spec: &JobSpec,
    inputs: &Inputs,
    at: Placement,
) -> Result<Option<Restored>> {
    for step in checkpoint::resumable_steps(run)? {
        match restore_step(run, at, step, spec, inputs) {
            Err(TrainError::Store(e)) => {
                tracing::warn!(step, error = %e, "checkpoint unreadable, trying an older one");
            }
            restored => return restored.map(Some),
        }
    }
    Ok(None)
}

/// Every rank learns whether every rank succeeded at `what`, so that one
/// rank's failure does not leave the others waiting in a collective. A
/// failed rank returns its own error; the others say that a rank failed (a
/// [`TrainError::Config`]: not a collective failure that regrouping cures).
fn agree<T>(
    collective: &mut dyn Collective,
    device: Device,
    result: Result<T>,
    what: &str,
) -> Result<T> {
    if collective.world_size() == 1 {
        return result;
    }
    let mut failed = Tensor::from_slice(&[f32::from(u8::from(result.is_err()))]).to_device(device);
    let exchanged = collective.all_reduce_sum(&mut failed);
    let result = result?;
    exchanged?;
    let failed = failed.double_value(&[0]).round() as u64;
    if failed > 0 {
        return Err(TrainError::Config(format!(
            "{failed} other rank(s) failed to {what}; their logs say why"
        )));
    }
    Ok(result)
}

/// Overwrites every rank's weights and optimizer state with rank 0's, so the
/// ranks start bit-identical whatever each one loaded.
fn sync_from_leader(
    model: &CausalLm,
    optimizer: &Optimizer,
    collective: &mut dyn Collective,
) -> Result<()> {
    tch::no_grad(|| {
        // Sorted by name: the same order on every rank. With fp32 weights the
        // optimizer's master buffer is the weights; otherwise its fp32 master
        // is among the state tensors, unless sharded (each rank holds its
        // own range of the state).
        let tensors = trainable(model)
            .into_values()
            .chain(optimizer.replicated_state().into_iter().map(|(_, t)| t));
        for mut tensor in tensors {
            collective.broadcast(&mut tensor, 0)?;
        }
        Ok(())
    })
}

fn trainable(model: &CausalLm) -> BTreeMap<String, Tensor> {
    model.var_store().variables().into_iter().collect()
}
