//! **Advice.** After every completion the job's advice
//! ([`premem_core::science::advice`]) is computed again from its folded checkpoints;
//! when `[advice] stop_when` names a rule that fired while the job still
//! trains, the job asks its ranks to finish early (a normal checkpointed
//! stop, [`super::Action::Finish`]) and says why.

use premem_core::science::advice::{CheckpointView, StopWhen, advise};

use super::{Job, Phase};

impl Job {
    /// The checkpoints as the advice sees them: every step with a folded
    /// P-M or test split, in step order.
    pub fn checkpoint_views(&self) -> Vec<CheckpointView> {
        let steps: std::collections::BTreeSet<u64> = self
            .pm_by_step
            .keys()
            .chain(self.test.keys())
            .copied()
            .collect();
        steps.into_iter().map(|step| self.view_at(step)).collect()
    }

    /// Checkpoint `step` as folded so far (`None` where a split is not).
    pub fn view_at(&self, step: u64) -> CheckpointView {
        let pm = self.pm_by_step.get(&step);
        let test = self.test.get(&step);
        CheckpointView {
            step,
            pm: pm.and_then(|p| p.pm),
            train_accuracy: pm.map(|p| p.train_accuracy),
            test_accuracy: test.map(|t| t.accuracy),
            test_perplexity: test.map(|t| t.perplexity),
            distinct_fraction: test.and_then(|t| t.distinct),
        }
    }

    /// Recomputes the advice, and asks for the early stop when its rule
    /// fired while the job trains.
    pub(super) fn refresh_advice(&mut self) {
        let spec = &self.spec.advice;
        self.advice = advise(spec, &self.checkpoint_views());
        if self.early_stop.is_some()
            || self.trained
            || self.phase != Phase::Active
            || spec.stop_when == StopWhen::Never
        {
            return;
        }
        if let Some(finding) = self.advice.stop_reason(spec.stop_when) {
            let reason = format!(
                "stopped early by [advice] stop_when = \"{}\": {}",
                stop_when_name(spec.stop_when),
                finding.text()
            );
            tracing::info!(job = self.name, reason, "early stop");
            self.early_stop = Some(reason);
        }
    }
}

/// The TOML spelling of a `stop_when`.
pub fn stop_when_name(when: StopWhen) -> &'static str {
    match when {
        StopWhen::Never => "never",
        StopWhen::Memorized => "memorized",
        StopWhen::OverMemorized => "over-memorized",
    }
}
