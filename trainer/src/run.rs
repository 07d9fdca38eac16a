//! A training run from a job spec: load and check everything, then step,
//! checkpoint and log until the planned number of steps; as one process, or
//! as one rank of several data-parallel ranks (rank 0 alone writes to the
//! store; see [`train_observed`]).
//!
//! The step itself is [`crate::step::train_step`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use premem_core::checkpoint::{self as layout, Area, RunRecord};
use premem_core::order::{DataPlan, rank_shard};
use premem_core::spec::{JobSpec, Precision};
use premem_core::{BlockingStore, Dataset, Store};
use premem_model::{CausalLm, ModelConfig, Tokenizer};
use serde_json::json;
use tch::{Device, Kind, Tensor};

use crate::baselines::Probe;
use crate::checkpoint::{self, ResumeState};
use crate::collective::Collective;
use crate::error::{Result, TrainError};
use crate::monitor::Monitor;
use crate::optim::{AdamConfig, Optimizer};
use crate::schedule::LrSchedule;
use crate::step::{StepOutput, StepSettings, train_step};
use premem_model::batch::{Batch, TokenizedExample, tokenize};

#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Continue from the newest complete checkpoint in `run.output`.
    pub resume: bool,
    /// Draw a progress bar (when stderr is a terminal).
    pub progress: bool,
    /// Set when the process should checkpoint and stop (SIGTERM/SIGINT).
    pub stop: Option<Arc<AtomicBool>>,
}

#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// Optimizer steps completed (including those of earlier attempts).
    pub steps: u64,
    pub total_steps: u64,
    /// Step the run started from (0, or the checkpoint it resumed).
    pub resumed_from: Option<u64>,
    pub final_loss: Option<f64>,
    /// (step, greedy train accuracy) of the monitor.
    pub monitor: Vec<(u64, f64)>,
    pub tokens_per_s: f64,
    /// Stopped by a signal before the last step (a checkpoint was written).
    pub interrupted: bool,
    pub output: String,
}

fn weight_kind(precision: Precision, device: Device) -> Kind {
    match precision {
        Precision::Fp32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
        Precision::Auto if device.is_cuda() => Kind::BFloat16,
        Precision::Auto => Kind::Float,
    }
}

/// What the run is made of, loaded and checked before anything is written.
struct Inputs {
    data: Dataset,
    /// `JobSpec::inputs_digest`.
    digest: String,
    tokenized: Vec<TokenizedExample>,
    tokenizer: Tokenizer,
    config: ModelConfig,
    eos: i64,
    pad: i64,
}

fn load_inputs(spec: &JobSpec) -> Result<Inputs> {
    let data = Dataset::load(&spec.data.train)?;
    let digest = spec.inputs_digest()?;
    let (config_path, tokenizer_path): (PathBuf, PathBuf) =
        match (&spec.model.base, &spec.model.config) {
            (Some(base), _) => {
                let base = Path::new(base);
                let tokenizer = spec
                    .model
                    .tokenizer
                    .as_ref()
                    .map(Into::into)
                    .unwrap_or_else(|| base.join(premem_model::tokenizer::TOKENIZER_FILE));
                (base.join("config.json"), tokenizer)
            }
            (None, Some(config)) => (
                config.into(),
                spec.model.tokenizer.as_ref().expect("validated").into(),
            ),
            (None, None) => unreachable!("validated"),
        };
    let config = ModelConfig::from_file(&config_path)?;
    let tokenizer = Tokenizer::from_file(&tokenizer_path)?;
    tokenizer.check_fits(config.vocab_size)?;
    let eos = *config.eos_token_ids.first().ok_or_else(|| {
        TrainError::Config(format!(
            "{}: no eos_token_id; training needs one to end each completion",
            config_path.display()
        ))
    })?;
    let pad = config.pad_token_id.unwrap_or(eos);
    let mut tokenized = Vec::with_capacity(data.len());
    let mut truncated = 0usize;
    for example in &data.examples {
        let (t, cut) = tokenize(
            example,
            &spec.prompt,
            &tokenizer,
            eos,
            spec.train.max_length,
        )?;
        truncated += cut as usize;
        tokenized.push(t);
    }
    if truncated > 0 {
        tracing::warn!(
            truncated,
            max_length = spec.train.max_length,
            "completions cut to train.max_length"
        );
    }
    Ok(Inputs {
        data,
        digest,
        tokenized,
        tokenizer,
        config,
        eos,
        pad,
    })
}

/// Reads `run.json` (read-only) and decides whether this invocation may use
/// the output: a new run needs an empty output, a resume the same spec and
/// inputs. Returns whether a run record already exists.
fn check_output(
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

fn write_run_record(run: &BlockingStore, spec: &JobSpec, inputs_digest: &str) -> Result<()> {
    let store = run.store();
    let record = RunRecord {
        name: spec.run.name.clone(),
        training_hash: spec.training_hash(),
        inputs_digest: inputs_digest.to_string(),
        premem_version: env!("CARGO_PKG_VERSION").to_string(),
        spec: spec.clone(),
        git_revision: premem_core::provenance::git_revision(),
        checksums: premem_core::provenance::input_checksums(spec)?,
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

/// A run restored from a checkpoint.
struct Restored {
    model: CausalLm,
    optimizer: Optimizer,
    step: u64,
    /// Digest of the step-0 weights, when the run recorded one.
    init_digest: Option<String>,
}

/// Restores the checkpoint of `step` and checks that this run may continue it.
#[allow(clippy::too_many_arguments)]
fn restore_step(
    run: &BlockingStore,
    rank: usize,
    step: u64,
    spec: &JobSpec,
    inputs: &Inputs,
    device: Device,
    kind: Kind,
    adam: AdamConfig,
) -> Result<Restored> {
    let wanted_dtype = premem_model::weights::dtype_name(kind);
    let restored = checkpoint::load(run, rank, step, inputs.config.clone(), device, kind)?;
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
    let mut optimizer = Optimizer::new(trainable(&restored.model), adam);
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
    device: Device,
    kind: Kind,
    adam: AdamConfig,
) -> Result<Option<Restored>> {
    for step in checkpoint::resumable_steps(run)? {
        match restore_step(run, 0, step, spec, inputs, device, kind, adam) {
            Err(TrainError::Store(e)) => {
                tracing::warn!(step, error = %e, "checkpoint unreadable, trying an older one");
            }
            restored => return restored.map(Some),
        }
    }
    Ok(None)
}

/// Removes what a crash left half-written after the checkpoint `step`.
fn clean_after(run: &BlockingStore, step: Option<u64>) -> Result<()> {
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

/// Trains the job of `spec` as rank `collective.rank()` of
/// `collective.world_size()`; see [`train_observed`].
pub fn train(
    spec: &JobSpec,
    options: &TrainOptions,
    collective: &mut dyn Collective,
) -> Result<TrainSummary> {
    train_observed(spec, options, collective, None)
}

/// What a run tells its caller as it goes (a node reporting to its
/// coordinator, a test). Every method defaults to doing nothing.
pub trait TrainObserver {
    /// After each optimizer step (`done` steps completed), on every rank.
    fn step(&self, _done: u64) {}
    /// On rank 0, after the checkpoint of `step` is published.
    fn checkpoint(&self, _step: u64) {}
    /// On every rank, with the in-memory model, when the run ends without
    /// error (after the last step, or stopped).
    fn finished(&self, _model: &CausalLm) {}
}

/// The model, optimizer and bookkeeping a rank starts stepping from.
struct Begun {
    run: BlockingStore,
    model: CausalLm,
    optimizer: Optimizer,
    /// The checkpoint step the run continues from.
    resumed: Option<u64>,
    /// The baseline measurements (rank 0, `checkpoint.baselines`).
    probe: Option<Probe>,
    /// Digest of the step-0 weights (rank 0), recorded in resume states.
    init_digest: Option<String>,
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

/// Rank 0's start: read the store, build or restore the model, and only then
/// claim the output (a run that fails on its inputs leaves nothing behind)
/// and remove what an earlier attempt left half-written.
#[allow(clippy::too_many_arguments)]
fn begin_leader(
    spec: &JobSpec,
    options: &TrainOptions,
    inputs: &Inputs,
    plan: &DataPlan,
    device: Device,
    kind: Kind,
    adam: AdamConfig,
) -> Result<Begun> {
    let t = &spec.train;
    let run = BlockingStore::new(Store::open(&spec.run.output)?)?;
    run.run(run.store().check_writable())?;
    let claimed = check_output(&run, spec, &inputs.digest, options.resume)?;
    checkpoint::clear_staging(&run, 0)?;
    let restored = if options.resume {
        restore_newest(&run, spec, inputs, device, kind, adam)?
    } else {
        None
    };
    let resumed = restored.as_ref().map(|r| r.step);
    let measure = spec.checkpoint.baselines;
    let minibatches = plan.probe_batches(spec.checkpoint.grad_variance_minibatches, t.batch_size);
    let (model, optimizer, probe, init_digest) = match restored {
        Some(restored) => {
            let probe = if measure {
                // The step-0 weights again, checked against the digest taken
                // at step 0: a base model reads straight into host memory; a
                // random init is redrawn on this run's device.
                let init_device = if spec.model.base.is_some() {
                    Device::Cpu
                } else {
                    device
                };
                let init = initial_model(spec, inputs, init_device, kind)?;
                let digest = crate::baselines::weights_digest(&init);
                let verified = restored.init_digest.as_deref() == Some(digest.as_str());
                if !verified {
                    tracing::warn!(
                        "the step-0 weights rebuilt on resume differ from the run's (another device, \
                         or a run from an older premem): distance from init is not measured"
                    );
                }
                Some(Probe::new(
                    verified.then_some(&init),
                    minibatches,
                    t.micro_batch_size,
                ))
            } else {
                None
            };
            (
                restored.model,
                restored.optimizer,
                probe,
                restored.init_digest,
            )
        }
        None => {
            let model = initial_model(spec, inputs, device, kind)?;
            let optimizer = Optimizer::new(trainable(&model), adam);
            let (probe, digest) = if measure {
                (
                    Some(Probe::new(Some(&model), minibatches, t.micro_batch_size)),
                    Some(crate::baselines::weights_digest(&model)),
                )
            } else {
                (None, None)
            };
            (model, optimizer, probe, digest)
        }
    };
    if !claimed {
        write_run_record(&run, spec, &inputs.digest)?;
    }
    clean_after(&run, resumed)?;
    Ok(Begun {
        run,
        model,
        optimizer,
        resumed,
        probe,
        init_digest,
    })
}

/// A rank > 0's start: the step rank 0 chose, restored by this rank itself
/// (or the step-0 model). Reads the store only, after rank 0 claimed it.
#[allow(clippy::too_many_arguments)]
fn begin_follower(
    spec: &JobSpec,
    rank: usize,
    start: u64,
    inputs: &Inputs,
    device: Device,
    kind: Kind,
    adam: AdamConfig,
) -> Result<Begun> {
    let run = BlockingStore::new(Store::open(&spec.run.output)?)?;
    checkpoint::clear_staging(&run, rank)?;
    let (model, optimizer) = if start > 0 {
        let restored = restore_step(&run, rank, start, spec, inputs, device, kind, adam)?;
        (restored.model, restored.optimizer)
    } else {
        let model = initial_model(spec, inputs, device, kind)?;
        let optimizer = Optimizer::new(trainable(&model), adam);
        (model, optimizer)
    };
    Ok(Begun {
        run,
        model,
        optimizer,
        resumed: (start > 0).then_some(start),
        probe: None,
        init_digest: None,
    })
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
    exchanged.map_err(TrainError::Collective)?;
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
        // is among the state tensors.
        let tensors = trainable(model)
            .into_values()
            .chain(optimizer.state_tensors().into_iter().map(|(_, t)| t));
        for mut tensor in tensors {
            collective
                .broadcast(&mut tensor, 0)
                .map_err(TrainError::Collective)?;
        }
        Ok(())
    })
}

/// Trains the job of `spec` as rank `collective.rank()` of
/// `collective.world_size()`, each rank on its share of every global batch.
///
/// Rank 0 alone writes to the store: it claims the output (or checks the run
/// it resumes), decides the start step, and writes checkpoints, metrics and
/// baselines. Every rank then restores that step itself, rank 0's weights
/// and optimizer state are broadcast so all start bit-identical, and the
/// gradients are all-reduced every step, so the ranks stay identical.
pub fn train_observed(
    spec: &JobSpec,
    options: &TrainOptions,
    collective: &mut dyn Collective,
    observer: Option<&dyn TrainObserver>,
) -> Result<TrainSummary> {
    spec.validate().map_err(TrainError::Config)?;
    let device = premem_model::runtime::parse_device(&spec.train.device)
        .map_err(|e| TrainError::Config(format!("train.device {e}")))?;
    let kind = weight_kind(spec.train.precision, device);
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
    let leader = rank == 0;
    let adam = AdamConfig {
        kind: t.optimizer,
        betas: t.betas,
        eps: t.eps,
        weight_decay: t.weight_decay,
    };

    // Every rank loads the inputs; rank 0 claims the output and decides the
    // start. Ranks > 0 read the store only after this (the start step's
    // broadcast is their barrier), so they never see it unclaimed.
    let prepared = load_inputs(spec).and_then(|inputs| {
        let plan = DataPlan::for_job(spec, inputs.data.len());
        let begun = if leader {
            Some(begin_leader(
                spec, options, &inputs, &plan, device, kind, adam,
            )?)
        } else {
            None
        };
        Ok((inputs, plan, begun))
    });
    let (inputs, plan, begun) = agree(
        collective,
        device,
        prepared,
        "load the inputs (rank 0: or to claim the output)",
    )?;
    let mut start = Tensor::from_slice(&[begun
        .as_ref()
        .and_then(|b| b.resumed)
        .map_or(0, |s| s as i64)])
    .to_device(device);
    collective
        .broadcast(&mut start, 0)
        .map_err(TrainError::Collective)?;
    let start = start.int64_value(&[0]) as u64;
    let begun = match begun {
        Some(begun) => Ok(begun),
        None => begin_follower(spec, rank, start, &inputs, device, kind, adam),
    };
    let Begun {
        run,
        model,
        mut optimizer,
        resumed: resume_step,
        probe,
        init_digest,
    } = agree(collective, device, begun, &format!("restore step {start}"))?;
    if world > 1 {
        sync_from_leader(&model, &optimizer, collective)?;
    }
    let schedule = LrSchedule::new(&t.schedule, t.lr, plan.total_steps);

    let monitor = Monitor {
        examples: if leader {
            plan.subset
                .iter()
                .take(t.monitor_examples)
                .map(|&i| &inputs.data.examples[i])
                .collect()
        } else {
            vec![]
        },
        template: &spec.prompt,
        style: inputs.data.style,
        max_new_tokens: t.monitor_max_new_tokens,
        eos: inputs.eos,
        pad: inputs.pad,
    };
    let mut metrics: Vec<String> = vec![];
    let mut summary = TrainSummary {
        steps: start,
        total_steps: plan.total_steps,
        resumed_from: resume_step,
        final_loss: None,
        monitor: vec![],
        tokens_per_s: 0.0,
        interrupted: false,
        output: run.store().url().to_string(),
    };
    let record_monitor = |step: u64,
                          metrics: &mut Vec<String>,
                          summary: &mut TrainSummary|
     -> Result<()> {
        if monitor.examples.is_empty() {
            return Ok(());
        }
        let accuracy = monitor.greedy_accuracy(&model, &inputs.tokenizer)?;
        tracing::info!(
            step,
            accuracy,
            examples = monitor.examples.len(),
            "greedy train accuracy"
        );
        metrics.push(json!({"step": step, "greedy_train_accuracy": accuracy, "monitor_examples": monitor.examples.len()}).to_string());
        summary.monitor.push((step, accuracy));
        Ok(())
    };
    if start == 0 {
        record_monitor(0, &mut metrics, &mut summary)?;
    }

    let progress = progress_bar(options.progress && leader, start, plan.total_steps);
    let run_started = Instant::now();
    let mut tokens_done = 0usize;
    for step in start..plan.total_steps {
        let started = Instant::now();
        let batch = plan.batch(step);
        let loss_tokens: usize = batch
            .iter()
            .map(|&i| inputs.tokenized[i].loss_tokens())
            .sum();
        let shard = rank_shard(&batch, rank, world);
        let micro_batches = shard.chunks(t.micro_batch_size).map(|micro| {
            let examples: Vec<&TokenizedExample> =
                micro.iter().map(|&i| &inputs.tokenized[i]).collect();
            Batch::collate(&examples, inputs.pad, device)
        });
        let lr = schedule.lr(step);
        let settings = StepSettings {
            global_loss_tokens: loss_tokens,
            lr,
            max_grad_norm: t.max_grad_norm,
        };
        let StepOutput {
            loss,
            grad_norm,
            tokens,
        } = train_step(&model, &mut optimizer, micro_batches, &settings, collective)?;

        let done = step + 1;
        let seconds = started.elapsed().as_secs_f64();
        tokens_done += tokens;
        let tokens_per_s = tokens as f64 * world as f64 / seconds.max(1e-9);
        summary.steps = done;
        summary.final_loss = Some(loss);
        if leader {
            metrics.push(
                json!({
                    "step": done,
                    "epoch": done as f64 / plan.steps_per_epoch as f64,
                    "loss": loss,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "loss_tokens": loss_tokens,
                    "tokens_per_s": tokens_per_s,
                    "step_seconds": seconds,
                })
                .to_string(),
            );
            progress.set_position(done);
            progress.set_message(format!(
                "loss {loss:.4} lr {lr:.2e} {tokens_per_s:.0} tok/s"
            ));
            if progress.is_hidden()
                && (done % (plan.total_steps / 20).max(1) == 0 || done == plan.total_steps)
            {
                tracing::info!(
                    step = done,
                    total = plan.total_steps,
                    loss,
                    lr,
                    grad_norm,
                    tokens_per_s,
                    "train"
                );
            }
        }
        if let Some(observer) = observer {
            observer.step(done);
        }

        // A stop asked of any rank stops every rank after the same step.
        let mut stop = options
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst));
        if world > 1 {
            let mut flag = Tensor::from_slice(&[f32::from(u8::from(stop))]).to_device(device);
            collective
                .all_reduce_sum(&mut flag)
                .map_err(TrainError::Collective)?;
            stop = flag.double_value(&[0]) > 0.0;
        }
        let stop = stop && done < plan.total_steps;
        let due = done == plan.total_steps
            || spec.checkpoint.every_steps.is_some_and(|n| done % n == 0)
            || (spec.checkpoint.every_epoch && plan.ends_epoch(step));
        if (due || stop) && leader {
            if due {
                record_monitor(done, &mut metrics, &mut summary)?;
            }
            // The probe runs on rank 0 alone; the other ranks meanwhile
            // wait in the next step's all-reduce (no timeout).
            let baselines = match &probe {
                Some(probe) => {
                    let b = probe.measure(
                        done,
                        &model,
                        &mut optimizer,
                        &inputs.tokenized,
                        inputs.pad,
                    )?;
                    tracing::info!(
                        step = done,
                        grad_variance = ?b.grad_variance,
                        distance_from_init = ?b.distance_from_init,
                        "baselines"
                    );
                    metrics.push(
                        json!({
                            "step": done,
                            "grad_variance": b.grad_variance,
                            "grad_norm_mean": b.grad_norm_mean,
                            "distance_from_init": b.distance_from_init,
                        })
                        .to_string(),
                    );
                    Some(b)
                }
                None => None,
            };
            let state = ResumeState {
                step: done,
                epoch: plan.epoch_of(step),
                training_hash: spec.training_hash(),
                inputs_digest: inputs.digest.clone(),
                weight_dtype: premem_model::weights::dtype_name(kind).to_string(),
                layout: optimizer.layout(),
                premem_version: env!("CARGO_PKG_VERSION").to_string(),
                init_digest: init_digest.clone(),
            };
            checkpoint::save(
                &run,
                rank,
                &model,
                &inputs.tokenizer,
                &optimizer,
                &state,
                &checkpoint::Records {
                    metrics: &metrics,
                    baselines: baselines.as_ref(),
                },
                spec.checkpoint.max_shard_bytes,
            )?;
            if let Some(keep) = spec.checkpoint.keep_resume_states {
                checkpoint::prune_resume_states(&run, keep)?;
            }
            tracing::info!(step = done, url = run.store().url(), "checkpoint published");
            if let Some(observer) = observer {
                observer.checkpoint(done);
            }
            metrics.clear();
        }
        if stop {
            summary.interrupted = true;
            break;
        }
    }
    if world > 1 {
        // No rank returns before rank 0 has published the last checkpoint.
        let mut barrier = Tensor::zeros([1], (Kind::Float, device));
        collective
            .all_reduce_sum(&mut barrier)
            .map_err(TrainError::Collective)?;
    }
    progress.finish_and_clear();
    summary.tokens_per_s =
        tokens_done as f64 * world as f64 / run_started.elapsed().as_secs_f64().max(1e-9);
    if let Some(observer) = observer {
        observer.finished(&model);
    }
    Ok(summary)
}

fn trainable(model: &CausalLm) -> BTreeMap<String, Tensor> {
    model.var_store().variables().into_iter().collect()
}

fn progress_bar(enabled: bool, start: u64, total: u64) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] step {pos}/{len} {msg} (eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_position(start);
    bar
}
