//! Every check of a curation spec, in one place: the `[curation]` values,
//! the base job (an inline `[job]` or a job file is checked as it is
//! parsed), the strategies' settings and the source; and,
//! once the base job is loaded, whether it can serve a curation.

use std::collections::BTreeSet;

use premem_core::spec::JobSpec;

use super::{CurationSection, CurationSpec, NewExamples, SourceSpec, Strategy};

impl CurationSpec {
    /// Checks every value; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        check_section(&self.curation)?;
        self.check_job_source()?;
        self.check_strategy_settings()?;
        check_source(&self.source)
    }

    /// Exactly one of `curation.job` and `[job]`; an inline job is valid.
    fn check_job_source(&self) -> Result<(), String> {
        match (&self.curation.job, &self.job) {
            (Some(_), Some(_)) => Err(
                "give the base job either as curation.job (a path) or as a [job] table, not both"
                    .into(),
            ),
            (None, None) => Err(
                "curation.job: give the base job spec (a path), or an inline [job] table".into(),
            ),
            (Some(path), None) if path.trim().is_empty() => {
                Err("curation.job must not be empty".into())
            }
            // An inline [job] was checked as it was parsed.
            (None, Some(_)) | (Some(_), None) => Ok(()),
        }
    }

    /// `[ifd]` and `[heuristic]`, each read only when its strategy is listed.
    fn check_strategy_settings(&self) -> Result<(), String> {
        let strategies = &self.curation.strategies;
        if strategies.contains(&Strategy::Ifd) {
            match &self.ifd {
                None => {
                    return Err(
                        "[ifd]: the strategy \"ifd\" needs `fraction` (paper: 0.5 GSM8K, 0.75 MATH)"
                            .into(),
                    );
                }
                Some(ifd) if !fraction_ok(ifd.fraction) => {
                    return Err(format!(
                        "ifd.fraction must be in (0, 1], got {}",
                        ifd.fraction
                    ));
                }
                Some(_) => {}
            }
        }
        if strategies.contains(&Strategy::Heuristic) {
            match &self.heuristic {
                None => {
                    return Err(
                        "[heuristic]: the strategy \"heuristic\" needs `key` (lines or level) and \
                         `fraction` (paper: 0.5 GSM8K, 0.75 MATH)"
                            .into(),
                    );
                }
                Some(h) if !fraction_ok(h.fraction) => {
                    return Err(format!(
                        "heuristic.fraction must be in (0, 1], got {}",
                        h.fraction
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// What a curation needs of its (valid) base job: a test split (test
    /// accuracy is what curation compares), evaluation on, no `eval.limit`
    /// (the P-M accuracy of every train example is needed), and a trainer
    /// pool large enough for it. `where_` names the job in messages.
    pub(super) fn check_base_job(&self, job: &JobSpec, where_: &str) -> Result<(), String> {
        if job.data.test.is_none() {
            return Err(format!(
                "{where_}: the base job needs data.test (curation compares test accuracy)"
            ));
        }
        if !job.eval.enabled {
            return Err(format!(
                "{where_}: eval.enabled is false; curation needs the evaluation of every run"
            ));
        }
        if let Some(limit) = job.eval.limit {
            return Err(format!(
                "{where_}: eval.limit = {limit}; curation needs the P-M accuracy of every train \
                 example (remove the limit)"
            ));
        }
        if self.curation.trainers < job.cluster.trainers {
            return Err(format!(
                "curation.trainers ({}) is fewer than the base job's cluster.trainers ({}): no run could start",
                self.curation.trainers, job.cluster.trainers
            ));
        }
        Ok(())
    }
}

/// The `[curation]` values.
fn check_section(c: &CurationSection) -> Result<(), String> {
    if c.name.trim().is_empty() {
        return Err("curation.name must not be empty".into());
    }
    if c.output.trim().is_empty() {
        return Err("curation.output must not be empty".into());
    }
    if let Ok(url) = url::Url::parse(&c.output)
        && url.scheme().len() > 1
    {
        return Err(format!(
            "curation.output = \"{}\": must be a local directory (data files of each iteration \
             go there and the trainers read them), not a URL",
            c.output
        ));
    }
    if c.iterations == 0 {
        return Err("curation.iterations must be at least 1".into());
    }
    if !(c.threshold > 0.0 && c.threshold <= 1.0) {
        return Err(format!(
            "curation.threshold must be in (0, 1], got {}",
            c.threshold
        ));
    }
    check_new_examples(c)?;
    check_strategies(&c.strategies)?;
    if c.trainers == 0 || c.evaluators == 0 {
        return Err("curation.trainers and curation.evaluators must be at least 1".into());
    }
    Ok(())
}

/// `new_examples`: at least one, and a list has one number per iteration
/// that adds examples.
fn check_new_examples(c: &CurationSection) -> Result<(), String> {
    match &c.new_examples {
        NewExamples::Each(0) => Err("curation.new_examples must be at least 1".into()),
        NewExamples::Each(_) => Ok(()),
        NewExamples::PerIteration(list) => {
            let adding = c.iterations as usize - 1;
            if list.len() != adding {
                return Err(format!(
                    "curation.new_examples: a list needs one number per iteration that adds \
                     examples, iterations - 1 = {adding} (the last iteration's run is only \
                     measured), got {} numbers",
                    list.len()
                ));
            }
            if list.contains(&0) {
                return Err(format!(
                    "curation.new_examples: every number must be at least 1, got {list:?}"
                ));
            }
            Ok(())
        }
    }
}

/// At least one strategy, none twice.
fn check_strategies(strategies: &[Strategy]) -> Result<(), String> {
    if strategies.is_empty() {
        return Err("curation.strategies must name at least one of pm, iid, ifd, heuristic".into());
    }
    let mut seen = BTreeSet::new();
    for s in strategies {
        if !seen.insert(*s) {
            return Err(format!("curation.strategies lists \"{s}\" twice"));
        }
    }
    Ok(())
}

/// Exactly one of `pool` and `generator`, each with what it needs.
fn check_source(s: &SourceSpec) -> Result<(), String> {
    match (&s.pool, &s.generator) {
        (Some(_), Some(_)) => Err("[source]: give either `pool` or `generator`, not both".into()),
        (None, None) => Err(
            "[source]: give `pool` (a candidate dataset keyed by parent_id) or `generator` \
             (a command)"
                .into(),
        ),
        (Some(pool), None) if pool.path.trim().is_empty() => {
            Err("source.pool.path must not be empty".into())
        }
        (None, Some(g)) => {
            if g.command.first().is_none_or(|p| p.trim().is_empty()) {
                return Err("source.generator.command must name a program".into());
            }
            if g.attempts == 0 {
                return Err("source.generator.attempts must be at least 1".into());
            }
            if g.timeout_s == 0 {
                return Err("source.generator.timeout_s must be at least 1".into());
            }
            Ok(())
        }
        (Some(_), None) => Ok(()),
    }
}

fn fraction_ok(f: f64) -> bool {
    f > 0.0 && f <= 1.0
}
