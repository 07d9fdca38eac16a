//! One optimizer step, the unit the run loop, the distributed runtime and the
//! benchmark share.
//!
//! For each micro-batch of this rank's share of the global batch: forward and
//! backward of (summed NLL of its completion tokens / completion tokens of the
//! whole global batch), so gradients add up to the global mean whatever the
//! split. Then the gradients are gathered into the optimizer's flat buffer,
//! summed across ranks (all-reduced, or reduce-scattered under zero2),
//! clipped, and applied (sharded: each rank updates its range and the
//! weights are all-gathered, within "update").

use std::time::Instant;

use premem_model::CausalLm;
use tch::{Device, Kind, Tensor};

use crate::collective::Collective;
use crate::error::{Result, TrainError};
use crate::optim::Optimizer;
use premem_model::batch::{Batch, LossOptions, LossPhase, nll_backward};

#[derive(Clone, Copy, Debug)]
pub struct StepOutput {
    /// Mean NLL per completion token over the global batch.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens this rank processed (padding excluded).
    pub tokens: usize,
}

pub struct StepSettings {
    /// The step being trained, 1-based (for messages).
    pub step: u64,
    /// Completion tokens in the global batch (all ranks).
    pub global_loss_tokens: usize,
    pub lr: f64,
    pub max_grad_norm: Option<f64>,
    /// Activation checkpointing and the chunked loss.
    pub loss: LossOptions,
}

/// The stages of a step, in order.
pub const STAGES: [&str; 7] = [
    "forward",
    "loss",
    "backward",
    "gather",
    "all_reduce",
    "clip",
    "update",
];

/// Seconds spent in each of [`STAGES`], summed over the steps it timed; the
/// device is synchronised at each stage boundary (benchmarks only: the
/// synchronisations cost time on CUDA).
pub struct StageClock {
    device: Device,
    last: Instant,
    pub seconds: [f64; STAGES.len()],
}

impl StageClock {
    pub fn new(device: Device) -> StageClock {
        StageClock {
            device,
            last: Instant::now(),
            seconds: [0.0; STAGES.len()],
        }
    }

    fn sync(&self) {
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
    }

    /// Ends stage `STAGES[stage]`; an index past the stages only starts
    /// the next one.
    fn lap(&mut self, stage: usize) {
        self.sync();
        let now = Instant::now();
        if let Some(seconds) = self.seconds.get_mut(stage) {
            *seconds += (now - self.last).as_secs_f64();
        }
        self.last = now;
    }

    /// `(stage, seconds)` pairs.
    pub fn stages(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        STAGES.iter().copied().zip(self.seconds.iter().copied())
    }
}

pub fn train_step(
    model: &CausalLm,
    optimizer: &mut Optimizer,
    micro_batches: impl IntoIterator<Item = Batch>,
    settings: &StepSettings,
    collective: &mut dyn Collective,
) -> Result<StepOutput> {
    train_step_timed(model, optimizer, micro_batches, settings, collective, None)
}

/// [`train_step`], with the time of each stage added to `clock` when given.
/// Clearing the gradient bucket counts as part of "gather".
pub fn train_step_timed(
    model: &CausalLm,
    optimizer: &mut Optimizer,
    micro_batches: impl IntoIterator<Item = Batch>,
    settings: &StepSettings,
    collective: &mut dyn Collective,
    mut clock: Option<&mut StageClock>,
) -> Result<StepOutput> {
    let mut lap = |stage: usize| {
        if let Some(clock) = clock.as_deref_mut() {
            clock.lap(stage);
        }
    };
    lap(usize::MAX);
    optimizer.zero_grads();
    lap(3);
    let scale = settings.global_loss_tokens.max(1) as f64;
    let mut loss_sum = Tensor::zeros([1], (Kind::Float, model.device()));
    let mut tokens = 0usize;
    for batch in micro_batches {
        let nll = nll_backward(model, &batch, scale, settings.loss, |phase| {
            lap(match phase {
                LossPhase::Forward => 0,
                LossPhase::Loss => 1,
                LossPhase::Backward => 2,
            })
        })?;
        loss_sum += nll;
        tokens += batch.tokens;
    }
    optimizer.gather_grads();
    lap(3);
    optimizer.reduce_grads(collective)?;
    collective.all_reduce_sum(&mut loss_sum)?;
    lap(4);
    let grad_norm = optimizer.clip_grad_norm(settings.max_grad_norm, collective)?;
    lap(5);
    // Both are sums over every rank: all ranks stop here together.
    let loss = loss_sum.double_value(&[0]) / scale;
    if !(loss.is_finite() && grad_norm.is_finite()) {
        return Err(TrainError::Diverged {
            step: settings.step,
            loss,
            grad_norm,
        });
    }
    optimizer.step(settings.lr, collective)?;
    lap(6);
    Ok(StepOutput {
        loss,
        grad_norm,
        tokens,
    })
}
