//! A job's plan: the settings that size its memory, one rank's bytes under
//! each sharding, the evaluator's bytes, what `auto` picks, and — when the
//! job does not fit — the nearest settings that would.

use super::{
    ByteSize, HEADROOM_FRACTION, ModelShape, ModelStates, Stage, UPDATE_SCRATCH_ELEMENTS,
    WeightKind, activation_bytes, logits_bytes,
};
use crate::spec::{ActivationCheckpointing, JobSpec, Sharding};

/// The settings of a job that size its memory on one kind of device.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanSettings {
    pub world_size: u64,
    pub sharding: Sharding,
    pub checkpointing: ActivationCheckpointing,
    /// Examples per forward/backward (`train.micro_batch_size`).
    pub micro_batch_size: u64,
    /// Examples one rank takes of a global batch.
    pub rank_batch: u64,
    /// Tokens per example at most (`train.max_length`): the plan assumes
    /// every sequence is this long.
    pub max_length: u64,
    pub kind: WeightKind,
    /// `train.loss_chunk_tokens`: the loss's logits exist for this many
    /// tokens at a time (`None`: the whole micro-batch's).
    pub loss_chunk_tokens: Option<u64>,
    /// The evaluator's load; `None` when checkpoints are not evaluated.
    pub eval: Option<EvalLoad>,
}

/// What sizes an evaluator's generation batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalLoad {
    /// Prompts per batch (`eval.batch_size`).
    pub batch_size: u64,
    /// K samples per prompt.
    pub samples: u64,
    /// Prompt tokens at most (the job's `train.max_length`) plus new tokens.
    pub sequence: u64,
    /// Tokens per example of the perplexity pass (`train.max_length`): its
    /// logits cover a whole batch of examples at once, or with
    /// `train.loss_chunk_tokens` a chunk of that many tokens.
    pub scored: u64,
    pub chunk_tokens: Option<u64>,
}

impl EvalLoad {
    /// Tokens whose logits the perplexity pass holds at once.
    pub fn scored_tokens(&self) -> u64 {
        let batch = self.batch_size.saturating_mul(self.scored);
        self.chunk_tokens.map_or(batch, |chunk| chunk.min(batch))
    }
}

impl PlanSettings {
    /// The job's own settings, for weights in `kind` (see
    /// [`WeightKind::for_precision`]).
    pub fn for_job(spec: &JobSpec, kind: WeightKind) -> PlanSettings {
        let t = &spec.train;
        let world = spec.cluster.trainers as u64;
        let e = &spec.eval;
        PlanSettings {
            world_size: world,
            sharding: t.sharding,
            checkpointing: t.activation_checkpointing,
            micro_batch_size: t.micro_batch_size as u64,
            rank_batch: t.batch_size as u64 / world.max(1),
            max_length: t.max_length as u64,
            kind,
            loss_chunk_tokens: t.loss_chunk_tokens.map(|n| n as u64),
            eval: e.enabled.then(|| EvalLoad {
                batch_size: e.batch_size as u64,
                samples: e.sampling.samples as u64,
                sequence: t.max_length as u64 + e.sampling.max_new_tokens.max(0) as u64,
                scored: t.max_length as u64,
                chunk_tokens: t.loss_chunk_tokens.map(|n| n as u64),
            }),
        }
    }

    /// Tokens of one micro-batch: a rank's share of the batch, in
    /// micro-batches of at most `micro_batch_size`, every example padded to
    /// `max_length`.
    pub fn micro_batch_tokens(&self) -> u64 {
        self.micro_batch_size
            .min(self.rank_batch.max(1))
            .saturating_mul(self.max_length)
    }
}

/// One trainer rank's bytes under one sharding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RankPlan {
    pub stage: Stage,
    pub states: ModelStates,
    /// Under the job's activation checkpointing.
    pub activations: u64,
    /// Under the other setting, for comparison.
    pub activations_other: u64,
    /// A loss chunk's fp32 logits and their gradient (what is counted).
    pub logits_chunk: u64,
    /// The whole micro-batch's, as an unchunked loss would hold them.
    pub logits_full: u64,
    pub scratch: u64,
}

impl RankPlan {
    pub fn new(shape: &ModelShape, settings: &PlanSettings, stage: Stage) -> RankPlan {
        let params = shape.parameters();
        let tokens = settings.micro_batch_tokens();
        let acts = |c| activation_bytes(shape, settings.kind, tokens, settings.max_length, c);
        let other = match settings.checkpointing {
            ActivationCheckpointing::None => ActivationCheckpointing::Layers,
            ActivationCheckpointing::Layers => ActivationCheckpointing::None,
        };
        RankPlan {
            stage,
            states: ModelStates::new(params, settings.kind, stage, settings.world_size),
            activations: acts(settings.checkpointing),
            activations_other: acts(other),
            logits_chunk: logits_bytes(
                shape,
                settings.loss_chunk_tokens.map_or(tokens, |c| tokens.min(c)),
            ),
            logits_full: logits_bytes(shape, tokens),
            scratch: 4 * UPDATE_SCRATCH_ELEMENTS.min(params),
        }
    }

    pub fn total(&self) -> u64 {
        self.states
            .total()
            .saturating_add(self.activations)
            .saturating_add(self.logits_chunk)
            .saturating_add(self.scratch)
    }
}

/// One evaluator's bytes: the sampler's weights, its KV cache for a batch
/// of prompts times K samples, and the logits of a step (or of a loss chunk
/// of the perplexity pass, whichever is larger).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvaluatorPlan {
    pub weights: u64,
    pub kv_cache: u64,
    pub logits: u64,
}

impl EvaluatorPlan {
    pub fn new(shape: &ModelShape, kind: WeightKind, load: &EvalLoad) -> EvaluatorPlan {
        let rows = load.batch_size.saturating_mul(load.samples);
        let a = kind.bytes();
        EvaluatorPlan {
            weights: shape.parameters() * a,
            kv_cache: (shape.num_layers * 2 * shape.kv_dim() * a)
                .saturating_mul(rows)
                .saturating_mul(load.sequence),
            logits: logits_bytes(shape, rows.max(load.scored_tokens())),
        }
    }

    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.kv_cache)
            .saturating_add(self.logits)
    }
}

/// The plan of a job on GPUs of `gpu_memory` (none: nothing to check).
#[derive(Clone, Debug, PartialEq)]
pub struct JobPlan {
    pub parameters: u64,
    pub settings: PlanSettings,
    pub gpu_memory: Option<ByteSize>,
    /// One per stage, least sharding first.
    pub ranks: [RankPlan; 3],
    pub evaluator: Option<EvaluatorPlan>,
}

/// A job that does not fit: the whole plan, rendered, with the settings that
/// would fit.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct DoesNotFit(pub String);

impl JobPlan {
    pub fn new(shape: &ModelShape, settings: PlanSettings, gpu_memory: Option<ByteSize>) -> Self {
        let ranks = Stage::ALL.map(|stage| RankPlan::new(shape, &settings, stage));
        let evaluator = settings
            .eval
            .map(|load| EvaluatorPlan::new(shape, settings.kind, &load));
        JobPlan {
            parameters: shape.parameters(),
            settings,
            gpu_memory,
            ranks,
            evaluator,
        }
    }

    /// The bytes a plan may use: the GPU's less [`HEADROOM_FRACTION`].
    pub fn usable(&self) -> Option<u64> {
        self.gpu_memory
            .map(|m| (m.0 as f64 * (1.0 - HEADROOM_FRACTION)) as u64)
    }

    pub(super) fn fits(&self, bytes: u64) -> bool {
        self.usable().is_none_or(|usable| bytes <= usable)
    }

    pub fn rank(&self, stage: Stage) -> &RankPlan {
        &self.ranks[stage as usize]
    }

    /// The sharding the job trains with: the one it names, or for `auto`
    /// the least that fits (zero2 when none does). Whether it fits is
    /// [`JobPlan::check`]'s question.
    pub fn stage(&self) -> Stage {
        Stage::of(self.settings.sharding).unwrap_or_else(|| {
            Stage::ALL
                .into_iter()
                .find(|s| self.fits(self.rank(*s).total()))
                .unwrap_or(Stage::Zero2)
        })
    }
}
