//! The settings that would fit a job that does not: the nearest changes
//! first (the sharding, then activation checkpointing, then a smaller
//! micro-batch), more ranks, and a smaller evaluation batch.

use super::job::{DoesNotFit, JobPlan, PlanSettings};
use super::{ModelShape, Stage};
use crate::spec::{ActivationCheckpointing, Sharding};

/// The least sharding under which a rank with `settings` fits, if any.
fn fitting_stage(shape: &ModelShape, plan: &JobPlan, settings: PlanSettings) -> Option<Stage> {
    let settings = PlanSettings {
        sharding: Sharding::Auto,
        ..settings
    };
    let trial = JobPlan::new(shape, settings, plan.gpu_memory);
    let usable = trial.usable()?;
    let stage = trial.stage();
    (trial.rank(stage).total() <= usable).then_some(stage)
}

/// Divisors of `n` from `n` down.
fn divisors_down(n: u64) -> impl Iterator<Item = u64> {
    (1..=n).rev().filter(move |d| n.is_multiple_of(*d))
}

/// The nearest training settings that fit: one line, or none.
fn training_alternative(shape: &ModelShape, plan: &JobPlan) -> Option<String> {
    let s = &plan.settings;
    let batch = s.rank_batch * s.world_size;
    for checkpointing in [s.checkpointing, ActivationCheckpointing::Layers] {
        for loss_chunk_tokens in [s.loss_chunk_tokens, Some(SUGGESTED_LOSS_CHUNK)] {
            for micro in divisors_down(batch).filter(|m| *m <= s.micro_batch_size) {
                let trial = PlanSettings {
                    checkpointing,
                    loss_chunk_tokens,
                    micro_batch_size: micro,
                    ..s.clone()
                };
                if let Some(stage) = fitting_stage(shape, plan, trial) {
                    return Some(describe(stage, checkpointing, loss_chunk_tokens, micro));
                }
            }
        }
    }
    None
}

/// The chunk of the chunked loss a refusal suggests.
const SUGGESTED_LOSS_CHUNK: u64 = 1024;

/// The `[train]` settings of a fitting alternative, as a user writes them.
fn describe(
    stage: Stage,
    checkpointing: ActivationCheckpointing,
    loss_chunk_tokens: Option<u64>,
    micro: u64,
) -> String {
    let checkpointing = match checkpointing {
        ActivationCheckpointing::None => "none",
        ActivationCheckpointing::Layers => "layers",
    };
    let chunk = loss_chunk_tokens
        .map(|c| format!(", train.loss_chunk_tokens = {c}"))
        .unwrap_or_default();
    format!(
        "train.sharding = \"{}\" (or \"auto\"), train.activation_checkpointing = \"{checkpointing}\"{chunk}, train.micro_batch_size = {micro}",
        stage.name()
    )
}

/// The fewest ranks (a divisor of the batch, at most 1024) that fit with
/// the job's other settings.
fn world_alternative(shape: &ModelShape, plan: &JobPlan) -> Option<String> {
    let s = &plan.settings;
    let batch = s.rank_batch * s.world_size;
    (s.world_size + 1..=batch.min(1024))
        .filter(|w| batch.is_multiple_of(*w))
        .find_map(|world| {
            let trial = PlanSettings {
                world_size: world,
                rank_batch: batch / world,
                ..s.clone()
            };
            let stage = fitting_stage(shape, plan, trial)?;
            Some(format!(
                "cluster.trainers = {world} (sharding \"{}\")",
                stage.name()
            ))
        })
}

/// The largest evaluation batch that fits, when the evaluator does not.
fn eval_alternative(shape: &ModelShape, plan: &JobPlan) -> Option<String> {
    let (usable, load) = (plan.usable()?, plan.settings.eval?);
    let evaluator = plan.evaluator?;
    if evaluator.total() <= usable {
        return None;
    }
    let fitting = (1..load.batch_size).rev().find(|b| {
        let trial = super::job::EvaluatorPlan::new(
            shape,
            plan.settings.kind,
            &super::job::EvalLoad {
                batch_size: *b,
                ..load
            },
        );
        trial.total() <= usable
    });
    Some(match fitting {
        Some(b) => format!("eval.batch_size = {b}"),
        None => "the evaluator does not fit even with eval.batch_size = 1".into(),
    })
}

/// "settings that would fit" lines for a refusal.
pub fn alternatives(shape: &ModelShape, plan: &JobPlan) -> String {
    let rank_fits = plan
        .usable()
        .is_some_and(|u| plan.rank(plan.stage()).total() <= u);
    let mut lines = vec![];
    if !rank_fits {
        lines.extend(training_alternative(shape, plan));
        lines.extend(world_alternative(shape, plan));
        if lines.is_empty() {
            lines.push(
                "no sharding, checkpointing or micro-batch size fits: use GPUs with more memory"
                    .into(),
            );
        }
    }
    lines.extend(eval_alternative(shape, plan));
    let mut out = String::from("settings that would fit:\n");
    for line in lines {
        out += &format!("  - {line}\n");
    }
    out
}

impl JobPlan {
    /// The stage to train with when the rank and the evaluator fit.
    pub fn check(&self, shape: &ModelShape, job: &str) -> Result<Stage, DoesNotFit> {
        let stage = self.stage();
        let rank_fits = self.fits(self.rank(stage).total());
        let eval_fits = self.evaluator.is_none_or(|e| self.fits(e.total()));
        if rank_fits && eval_fits {
            return Ok(stage);
        }
        let mut text = format!("job '{job}' does not fit in {}:\n", self.budget());
        text += &self.render();
        text += &alternatives(shape, self);
        Err(DoesNotFit(text))
    }
}
