//! A training run from a job spec: load and check everything, then step,
//! checkpoint and log until the planned number of steps; as one process, or
//! as one rank of several data-parallel ranks (rank 0 alone writes to the
//! store; see [`train_observed`]).
//!
//! The run is a value with a method per phase: start (or resume),
//! step, agree on stop, checkpoint when due, finish. The step itself is
//! [`crate::step::train_step`].

mod inputs;
mod lock;
mod output;
mod start;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use premem_core::BlockingStore;
use premem_core::data::order::{DataPlan, rank_shard};
use premem_core::science::baselines::CheckpointBaselines;
use premem_core::spec::JobSpec;
use premem_model::CausalLm;
use premem_model::batch::{Batch, LossOptions, TokenizedExample};
use serde_json::json;
use tch::{Kind, Tensor};

use crate::baselines::Probe;
use crate::checkpoint::{self, ResumeState};
use crate::collective::Collective;
use crate::error::{Result, TrainError};
use crate::monitor::Monitor;
use crate::optim::Optimizer;
use crate::schedule::LrSchedule;
use crate::step::{StepOutput, StepSettings, train_step};
use inputs::Inputs;
pub(crate) use inputs::train_device;
pub use start::effective_sharding;
use start::{Begun, Placement};

#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Continue from the newest complete checkpoint in `run.output`.
    pub resume: bool,
    /// Draw a progress bar (when stderr is a terminal).
    pub progress: bool,
    /// Set when the process should checkpoint and stop (SIGTERM/SIGINT).
    pub stop: Option<Arc<AtomicBool>>,
    /// The name rank 0 holds the run output's lease under (default:
    /// host:pid). A process restarted under the same name takes the lease
    /// back at once; any other waits until it expires.
    pub lock_owner: Option<String>,
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

impl TrainSummary {
    /// `trained 40/40 steps, final loss 1.2345` (or `stopped at …`).
    pub fn outcome(&self) -> String {
        format!(
            "{} {}/{} steps, final loss {}",
            if self.interrupted {
                "stopped at"
            } else {
                "trained"
            },
            self.steps,
            self.total_steps,
            self.final_loss.map_or("-".into(), |l| format!("{l:.4}"))
        )
    }
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
    /// After each optimizer step (`done` steps completed), on every rank,
    /// with the group's throughput at that step (tokens over every rank per
    /// second).
    fn step(&self, _done: u64, _tokens_per_s: f64) {}
    /// On rank 0, after the checkpoint of `step` is published.
    fn checkpoint(&self, _step: u64) {}
    /// On every rank, with the in-memory model, when the run ends without
    /// error (after the last step, or stopped).
    fn finished(&self, _model: &CausalLm) {}
}

/// Trains the job of `spec` as rank `collective.rank()` of
/// `collective.world_size()`, each rank on its share of every global batch.
/// `spec` was validated where it was read (`JobSpec::from_file`, or the
/// node's parse of what the coordinator sent); it is not checked again.
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
    let mut run = Run::start(spec, options, collective, observer)?;
    for step in run.remaining_steps() {
        run.step(step)?;
        let stop = run.agree_on_stop(step)?;
        run.checkpoint_if_due(step, stop)?;
        if stop {
            break;
        }
    }
    run.finish()
}

/// One rank's run: what it trains on, the model it trains, and what it has
/// recorded so far.
struct Run<'a> {
    spec: &'a JobSpec,
    /// Set when the process should checkpoint and stop.
    stop: Option<&'a AtomicBool>,
    collective: &'a mut dyn Collective,
    observer: Option<&'a dyn TrainObserver>,
    at: Placement,
    inputs: Inputs,
    plan: DataPlan,
    schedule: LrSchedule,
    store: BlockingStore,
    /// Rank 0's hold on the output, released when the run ends.
    lock: Option<lock::OutputLock>,
    model: CausalLm,
    optimizer: Optimizer,
    /// The baseline measurements (rank 0, `checkpoint.baselines`).
    probe: Option<Probe>,
    /// Digest of the step-0 weights (rank 0), recorded in resume states.
    init_digest: Option<String>,
    /// Metrics lines (rank 0) that the next checkpoint writes.
    metrics: Vec<String>,
    summary: TrainSummary,
    progress: indicatif::ProgressBar,
    /// When stepping began, and the tokens this rank trained since.
    stepping_since: Instant,
    tokens_done: usize,
}

impl<'a> Run<'a> {
    /// Starts or resumes the run on every rank (see [`start::begin`]) and
    /// records the step-0 monitor of a new run.
    fn start(
        spec: &'a JobSpec,
        options: &'a TrainOptions,
        collective: &'a mut dyn Collective,
        observer: Option<&'a dyn TrainObserver>,
    ) -> Result<Run<'a>> {
        let at = Placement::of(spec, collective)?;
        let (inputs, plan, begun) = start::begin(spec, options, at, collective)?;
        let Begun {
            store,
            lock,
            model,
            optimizer,
            resumed,
            probe,
            init_digest,
        } = begun;
        let first = resumed.unwrap_or(0);
        let mut run = Run {
            spec,
            stop: options.stop.as_deref(),
            collective,
            observer,
            at,
            schedule: LrSchedule::new(&spec.train.schedule, spec.train.lr, plan.total_steps),
            summary: TrainSummary {
                steps: first,
                total_steps: plan.total_steps,
                resumed_from: resumed,
                final_loss: None,
                monitor: vec![],
                tokens_per_s: 0.0,
                interrupted: false,
                output: store.store().url().to_string(),
            },
            inputs,
            plan,
            store,
            lock,
            model,
            optimizer,
            probe,
            init_digest,
            metrics: vec![],
            progress: indicatif::ProgressBar::hidden(),
            stepping_since: Instant::now(),
            tokens_done: 0,
        };
        if first == 0 {
            run.record_monitor(0)?;
        }
        // The step-0 monitor is not part of the throughput.
        let bar = options.progress && at.is_leader();
        run.progress = progress_bar(bar, first, run.plan.total_steps);
        run.stepping_since = Instant::now();
        Ok(run)
    }

    /// The steps still to train.
    fn remaining_steps(&self) -> Range<u64> {
        self.summary.steps..self.plan.total_steps
    }

    /// Trains step `step` (0-based) on this rank's share of its batch.
    fn step(&mut self, step: u64) -> Result<()> {
        let started = Instant::now();
        let batch = self.plan.batch(step);
        let loss_tokens: usize = batch
            .iter()
            .map(|&i| self.inputs.tokenized[i].loss_tokens())
            .sum();
        let shard = rank_shard(&batch, self.at.rank, self.at.world);
        let (inputs, device) = (&self.inputs, self.at.device);
        let micro_batches = shard.chunks(self.spec.train.micro_batch_size).map(|micro| {
            let examples: Vec<&TokenizedExample> =
                micro.iter().map(|&i| &inputs.tokenized[i]).collect();
            Batch::collate(&examples, inputs.pad, device)
        });
        let settings = StepSettings {
            step: step + 1,
            global_loss_tokens: loss_tokens,
            lr: self.schedule.lr(step),
            max_grad_norm: self.spec.train.max_grad_norm,
            loss: LossOptions::of(&self.spec.train),
        };
        let output = train_step(
            &self.model,
            &mut self.optimizer,
            micro_batches,
            &settings,
            &mut *self.collective,
        )?;
        let seconds = started.elapsed().as_secs_f64();
        self.record_step(step, &settings, output, seconds);
        Ok(())
    }

    /// Counts a trained step; rank 0 also keeps its metrics line and shows
    /// its progress.
    fn record_step(
        &mut self,
        step: u64,
        settings: &StepSettings,
        output: StepOutput,
        seconds: f64,
    ) {
        let done = step + 1;
        self.tokens_done += output.tokens;
        let tokens_per_s = output.tokens as f64 * self.at.world as f64 / seconds.max(1e-9);
        self.summary.steps = done;
        self.summary.final_loss = Some(output.loss);
        if self.at.is_leader() {
            self.metrics.push(
                json!({
                    "step": done,
                    "epoch": done as f64 / self.plan.steps_per_epoch as f64,
                    "loss": output.loss,
                    "lr": settings.lr,
                    "grad_norm": output.grad_norm,
                    "loss_tokens": settings.global_loss_tokens,
                    "tokens_per_s": tokens_per_s,
                    "step_seconds": seconds,
                })
                .to_string(),
            );
            self.show_progress(done, &output, settings.lr, tokens_per_s);
        }
        if let Some(observer) = self.observer {
            observer.step(done, tokens_per_s);
        }
    }

    /// The progress bar, or without one a log line every 5% of the run.
    fn show_progress(&self, done: u64, output: &StepOutput, lr: f64, tokens_per_s: f64) {
        let (loss, grad_norm, total) = (output.loss, output.grad_norm, self.plan.total_steps);
        self.progress.set_position(done);
        self.progress.set_message(format!(
            "loss {loss:.4} lr {lr:.2e} {tokens_per_s:.0} tok/s"
        ));
        if self.progress.is_hidden() && (done.is_multiple_of((total / 20).max(1)) || done == total)
        {
            tracing::info!(
                step = done,
                total,
                loss,
                lr,
                grad_norm,
                tokens_per_s,
                "train"
            );
        }
    }

    /// Whether to stop after step `step`: a stop asked of any rank (signal,
    /// the coordinator's STOP) stops every rank after the same step. A stop
    /// before the last step marks the run interrupted.
    fn agree_on_stop(&mut self, step: u64) -> Result<bool> {
        let mut stop = self.stop.is_some_and(|s| s.load(Ordering::SeqCst));
        if self.at.world > 1 {
            let mut flag =
                Tensor::from_slice(&[f32::from(u8::from(stop))]).to_device(self.at.device);
            self.collective.all_reduce_sum(&mut flag)?;
            stop = flag.double_value(&[0]) > 0.0;
        }
        let stop = stop && step + 1 < self.plan.total_steps;
        self.summary.interrupted = stop;
        Ok(stop)
    }

    /// Rank 0 checkpoints after step `step` when one is due (or the run
    /// stops): the monitor (when due), the baselines, then the checkpoint.
    fn checkpoint_if_due(&mut self, step: u64, stop: bool) -> Result<()> {
        let done = step + 1;
        let due = self
            .spec
            .checkpoint
            .due(done, self.plan.total_steps, self.plan.ends_epoch(step));
        if !(due || stop) {
            return Ok(());
        }
        // Every rank holds the same weights: all refuse together.
        self.check_finite_weights(done)?;
        if let Some(lock) = &self.lock {
            lock.check()?;
        }
        // Sharded, every rank sends its range of the optimizer state.
        let Some(optimizer_state) = self.optimizer.gather_state(&mut *self.collective)? else {
            return Ok(());
        };
        if due {
            self.record_monitor(done)?;
        }
        // The probe runs on rank 0 alone; the other ranks meanwhile wait in
        // the next step's all-reduce (no timeout).
        let baselines = self.measure_baselines(done)?;
        self.publish_checkpoint(step, baselines.as_ref(), &optimizer_state)
    }

    /// Refuses to checkpoint weights that are not finite (a step whose loss
    /// and gradient were finite can still overflow them, e.g. with a huge
    /// learning rate); the first such weight in name order is named.
    fn check_finite_weights(&self, done: u64) -> Result<()> {
        let variables: std::collections::BTreeMap<String, Tensor> =
            self.model.var_store().variables().into_iter().collect();
        for (name, weight) in variables {
            if weight.isfinite().all().int64_value(&[]) == 0 {
                return Err(TrainError::NonFiniteWeights { step: done, name });
            }
        }
        Ok(())
    }

    /// Greedy train accuracy of the monitor examples (rank 0), into the
    /// metrics and the summary.
    fn record_monitor(&mut self, step: u64) -> Result<()> {
        let monitor = self.monitor();
        if monitor.examples.is_empty() {
            return Ok(());
        }
        let accuracy = monitor.greedy_accuracy(&self.model, &self.inputs.tokenizer)?;
        let examples = monitor.examples.len();
        tracing::info!(step, accuracy, examples, "greedy train accuracy");
        self.metrics.push(
            json!({"step": step, "greedy_train_accuracy": accuracy, "monitor_examples": examples})
                .to_string(),
        );
        self.summary.monitor.push((step, accuracy));
        Ok(())
    }

    /// The monitor: the first `train.monitor_examples` of the plan's subset
    /// on rank 0, none on the others.
    fn monitor(&self) -> Monitor<'_> {
        let t = &self.spec.train;
        let examples = if self.at.is_leader() {
            self.plan
                .subset
                .iter()
                .take(t.monitor_examples)
                .map(|&i| &self.inputs.data.examples[i])
                .collect()
        } else {
            vec![]
        };
        Monitor {
            examples,
            template: &self.spec.prompt,
            style: self.inputs.data.style,
            max_new_tokens: t.monitor_max_new_tokens,
            eos: self.inputs.eos,
        }
    }

    /// The baselines at checkpoint `done`, logged and into the metrics.
    fn measure_baselines(&mut self, done: u64) -> Result<Option<CheckpointBaselines>> {
        let Some(probe) = &self.probe else {
            return Ok(None);
        };
        let b = probe.measure(
            done,
            &self.model,
            &mut self.optimizer,
            &self.inputs.tokenized,
            self.inputs.pad,
        )?;
        tracing::info!(
            step = done,
            grad_variance = ?b.grad_variance,
            distance_from_init = ?b.distance_from_init,
            "baselines"
        );
        self.metrics.push(
            json!({
                "step": done,
                "grad_variance": b.grad_variance,
                "grad_norm_mean": b.grad_norm_mean,
                "distance_from_init": b.distance_from_init,
            })
            .to_string(),
        );
        Ok(Some(b))
    }

    /// Writes the checkpoint after step `step` with the metrics since the
    /// last one, and prunes old resume states.
    fn publish_checkpoint(
        &mut self,
        step: u64,
        baselines: Option<&CheckpointBaselines>,
        optimizer_state: &[(String, Tensor)],
    ) -> Result<()> {
        let done = step + 1;
        let state = ResumeState {
            step: done,
            epoch: self.plan.epoch_of(step),
            training_hash: self.spec.training_hash(),
            inputs_digest: self.inputs.digest.clone(),
            weight_dtype: premem_model::weights::dtype_name(self.at.kind).to_string(),
            layout: self.optimizer.layout(),
            premem_version: env!("CARGO_PKG_VERSION").to_string(),
            init_digest: self.init_digest.clone(),
        };
        let records = checkpoint::Records {
            metrics: &self.metrics,
            baselines,
        };
        let c = &self.spec.checkpoint;
        checkpoint::save(
            &self.store,
            self.at.rank,
            &self.model,
            &self.inputs.tokenizer,
            optimizer_state,
            &state,
            &records,
            c.max_shard_bytes,
        )?;
        if let Some(keep) = c.keep_resume_states {
            checkpoint::prune_resume_states(&self.store, keep)?;
        }
        tracing::info!(
            step = done,
            url = self.store.store().url(),
            "checkpoint published"
        );
        if let Some(observer) = self.observer {
            observer.checkpoint(done);
        }
        self.metrics.clear();
        Ok(())
    }

    /// Ends the run on every rank: none returns before rank 0 has published
    /// the last checkpoint.
    fn finish(mut self) -> Result<TrainSummary> {
        if self.at.world > 1 {
            let mut barrier = Tensor::zeros([1], (Kind::Float, self.at.device));
            self.collective.all_reduce_sum(&mut barrier)?;
        }
        self.progress.finish_and_clear();
        let seconds = self.stepping_since.elapsed().as_secs_f64();
        self.summary.tokens_per_s =
            self.tokens_done as f64 * self.at.world as f64 / seconds.max(1e-9);
        if let Some(observer) = self.observer {
            observer.finished(&self.model);
        }
        Ok(self.summary)
    }
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
