//! Training throughput on random tokens, for `premem bench train` and
//! `benches/train_throughput.py` (which runs the PyTorch + transformers loop on
//! the same config, batch and sequence length and prints the ratio).

use std::collections::BTreeMap;
use std::time::Instant;

use premem_core::spec::{OptimizerKind, Sharding};
use premem_model::{CausalLm, ModelConfig};
use tch::{Device, Kind, Tensor};

use premem_model::batch::{Batch, LossOptions, TokenizedExample};
use premem_trainer::SingleProcess;
use premem_trainer::error::Result;
use premem_trainer::optim::{AdamConfig, Optimizer, Partition};
use premem_trainer::step::{StageClock, StepSettings, train_step_timed};

#[derive(Clone, Debug)]
pub struct BenchSettings {
    pub batch_size: usize,
    pub micro_batch_size: usize,
    pub seq_len: usize,
    pub warmup_steps: usize,
    pub steps: usize,
    pub device: Device,
    pub kind: Kind,
    /// Time each stage of a step too.
    pub stages: bool,
    /// Activation checkpointing and the chunked loss.
    pub loss: LossOptions,
    /// How the optimizer's buffers are split (one rank: zero1/zero2 run
    /// their code paths over the whole range).
    pub sharding: Sharding,
    /// The memory plan's bytes for this setting, reported beside the
    /// measured peak.
    pub planned_bytes: Option<u64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    pub parameters: i64,
    pub tokens_per_step: usize,
    pub seconds_per_step: f64,
    pub tokens_per_s: f64,
    /// 6 * parameters * tokens/s (the usual training FLOP count, attention excluded).
    pub model_flops_per_s: f64,
    /// Seconds per step in each stage (with `stages`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<BTreeMap<&'static str, f64>>,
    /// Mean loss of the last step (compares shardings at one rank).
    pub final_loss: f64,
    /// The memory plan's bytes of one rank for this setting
    /// (`premem_core::spec::plan`), to compare with the measured peak.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planned_rank_bytes: Option<u64>,
}

pub fn bench_train(config: ModelConfig, settings: &BenchSettings) -> Result<BenchResult> {
    let vocab = config.vocab_size;
    let model = CausalLm::random(config, settings.device, settings.kind, 0);
    let variables = model.var_store().variables().into_iter().collect();
    let mut optimizer = Optimizer::new(
        variables,
        AdamConfig {
            kind: OptimizerKind::Adamw,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
        },
        Partition::new(settings.sharding, 0, 1)?,
    );
    let examples = random_examples(vocab, settings);
    let mut settings_step = StepSettings {
        step: 0,
        global_loss_tokens: examples.iter().map(|e| e.loss_tokens()).sum(),
        lr: 1e-5,
        max_grad_norm: Some(1.0),
        loss: settings.loss,
    };
    let sync = || {
        if let Device::Cuda(i) = settings.device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let mut timed = 0.0;
    let mut clock = StageClock::new(settings.device);
    let mut final_loss = f64::NAN;
    for step in 0..settings.warmup_steps + settings.steps {
        sync();
        let started = Instant::now();
        let micro_batches = examples.chunks(settings.micro_batch_size).map(|chunk| {
            let refs: Vec<&TokenizedExample> = chunk.iter().collect();
            Batch::collate(&refs, 0, settings.device)
        });
        let timing = settings.stages && step >= settings.warmup_steps;
        settings_step.step = step as u64 + 1;
        final_loss = train_step_timed(
            &model,
            &mut optimizer,
            micro_batches,
            &settings_step,
            &mut SingleProcess,
            timing.then_some(&mut clock),
        )?
        .loss;
        sync();
        if step >= settings.warmup_steps {
            timed += started.elapsed().as_secs_f64();
        }
    }
    let mut result = result(settings, optimizer.numel(), timed, &clock);
    result.final_loss = final_loss;
    Ok(result)
}

/// `batch_size` sequences of `seq_len` random tokens (seeded), the loss on
/// all but the first.
fn random_examples(vocab: i64, settings: &BenchSettings) -> Vec<TokenizedExample> {
    tch::manual_seed(1);
    (0..settings.batch_size)
        .map(|_| TokenizedExample {
            tokens: Vec::<i64>::try_from(Tensor::randint(
                vocab,
                [settings.seq_len as i64],
                (Kind::Int64, Device::Cpu),
            ))
            .expect("int64 tokens"),
            prompt_len: 1,
        })
        .collect()
}

/// The figures of `settings.steps` timed steps that took `timed` seconds.
fn result(
    settings: &BenchSettings,
    parameters: i64,
    timed: f64,
    clock: &StageClock,
) -> BenchResult {
    let per_step = |s: f64| s / settings.steps.max(1) as f64;
    let tokens_per_step = settings.batch_size * settings.seq_len;
    let seconds_per_step = per_step(timed);
    let tokens_per_s = tokens_per_step as f64 / seconds_per_step;
    BenchResult {
        parameters,
        tokens_per_step,
        seconds_per_step,
        tokens_per_s,
        model_flops_per_s: 6.0 * parameters as f64 * tokens_per_s,
        stages: settings
            .stages
            .then(|| clock.stages().map(|(k, s)| (k, per_step(s))).collect()),
        final_loss: f64::NAN,
        planned_rank_bytes: settings.planned_bytes,
    }
}
