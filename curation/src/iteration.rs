//! The steps of the curation loop between runs: the job an iteration trains
//! ([`iteration_job`]), what its finished run says ([`outcome_of`]), and
//! what comes after it ([`Curation::finish_iteration`]: choose parents, draw
//! or generate new examples, write the next iteration's train file). The
//! `premem curate` command runs the jobs on a cluster and calls these.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use premem_core::data::dataset::{DatasetFormat, DatasetSpec};
use premem_core::{Dataset, Example, JobSpec};
use premem_report::{ReportOptions, analyze, load};

use crate::{
    CandidatePool, Chosen, CurationError, CurationSpec, CurationState, IterationRecord,
    ParentScores, Strategy, choose_parents, draw, generate, generator_parents,
};

type Result<T, E = CurationError> = std::result::Result<T, E>;

/// Iteration 1 trains on D alone for every strategy: one shared run.
fn base_run(spec: &CurationSpec) -> (String, PathBuf) {
    (
        format!("{}-base-1", spec.curation.name),
        spec.output_dir().join("base").join("run"),
    )
}

/// The train file and run of iteration `i` of a strategy.
fn iteration_paths(spec: &CurationSpec, s: Strategy, i: u32) -> (PathBuf, String, PathBuf) {
    let dir = spec.iteration_dir(s, i);
    (
        dir.join("train.jsonl"),
        spec.run_name(s, i),
        dir.join("run"),
    )
}

/// The job of iteration `i` of strategy `s`.
/// Every iteration evaluates the first |D| examples of its train file
/// (D itself: P-M accuracy is about D; the added examples are not
/// evaluated) and the first `eval.test_limit` test examples (default |D|). With
/// `measure_last_checkpoint_only`, a run whose P-M no strategy reads
/// checkpoints only at its last step (no epoch, interval or listed steps).
pub fn iteration_job(spec: &CurationSpec, job: &JobSpec, s: Strategy, i: u32) -> Result<JobSpec> {
    let mut run = job.clone();
    run.run.group = Some(format!("curation/{}", spec.curation.name));
    let d = Dataset::load(&job.data.train)?.len();
    run.eval.limit = Some(d);
    run.eval.test_limit = job.eval.test_limit.or(Some(d));
    if i == 1 {
        let (name, output) = base_run(spec);
        run.run.name = name;
        run.run.output = output.to_string_lossy().into_owned();
        return Ok(run);
    }
    let (train, name, output) = iteration_paths(spec, s, i);
    if !train.is_file() {
        return Err(CurationError::Iteration(format!(
            "{}: the data of iteration {i} of '{}' is missing (it is written when iteration {} ends); delete {} to start over",
            train.display(),
            s.name(),
            i - 1,
            spec.state_path().display()
        )));
    }
    run.run.name = name;
    run.run.output = output.to_string_lossy().into_owned();
    let read = s == Strategy::Pm && i < spec.curation.iterations;
    if spec.curation.measure_last_checkpoint_only && !read {
        run.checkpoint.every_epoch = false;
        run.checkpoint.every_steps = None;
        run.checkpoint.steps.clear();
    }
    run.data.train = DatasetSpec {
        path: train.to_string_lossy().into_owned(),
        format: DatasetFormat::Gsm8k,
        fields: None,
        answer_style: Some(job.data.train.answer_style()),
        drop_empty_answers: job.data.train.drop_empty_answers,
    };
    Ok(run)
}

/// What an evaluated run says: per-example P-M accuracy at its last
/// checkpoint, and the run's P-M and test accuracy there.
pub struct RunOutcome {
    pub pm: BTreeMap<String, f64>,
    pub pm_accuracy: Option<f64>,
    pub test_accuracy: Option<f64>,
    /// The run's first published checkpoint.
    pub first_step: Option<u64>,
}

/// Reads the results of `job`'s finished run.
pub fn outcome_of(job: &JobSpec) -> Result<RunOutcome> {
    let runs = load(&job.run.output).map_err(|source| CurationError::Run {
        run: job.run.output.clone(),
        source,
    })?;
    let options = ReportOptions {
        threshold: Some(job.eval.threshold),
        ..ReportOptions::default()
    };
    let analysis = analyze(&runs, &options).map_err(|source| CurationError::Run {
        run: job.run.output.clone(),
        source,
    })?;
    let run = analysis
        .runs
        .first()
        .ok_or_else(|| CurationError::Iteration("the run has no analysis".into()))?;
    let last = run
        .checkpoints
        .iter()
        .rev()
        .find(|c| c.pm.is_some())
        .ok_or_else(|| {
            CurationError::Iteration(format!(
                "run {}: no checkpoint has P-M accuracy",
                job.run.output
            ))
        })?;
    let pm = run
        .examples
        .iter()
        .filter(|e| e.step == last.step)
        .map(|e| (e.id.clone(), e.pm))
        .collect();
    Ok(RunOutcome {
        pm,
        pm_accuracy: last.pm,
        test_accuracy: last.test_accuracy,
        first_step: runs.first().and_then(|r| r.published.first().copied()),
    })
}

/// IFD scores of D (strategy `ifd`) from the checkpoint at a step of the
/// shared base run: the caller has the model.
pub type IfdScores<'a> = dyn FnMut(&JobSpec, u64) -> Result<BTreeMap<String, f64>> + 'a;

/// A curation under way: its spec, base job and train set D, its candidate
/// pool, and where it stands.
pub struct Curation<'a> {
    pub spec: &'a CurationSpec,
    pub job: &'a JobSpec,
    pub state: &'a CurationState,
    pub train: &'a Dataset,
    pub pool: Option<&'a CandidatePool>,
}

impl Curation<'_> {
    /// Measures iteration `i` of strategy `s` (its run `run` is done) and,
    /// unless it is the last, chooses parents and writes the next
    /// iteration's data.
    pub fn finish_iteration(
        &self,
        s: Strategy,
        i: u32,
        run: &JobSpec,
        ifd: &mut IfdScores<'_>,
    ) -> Result<IterationRecord> {
        let outcome = outcome_of(run)?;
        let current = Dataset::load(&run.data.train)?;
        let mut record = IterationRecord {
            iteration: i,
            run: run.run.name.clone(),
            train_examples: current.len(),
            test_accuracy: outcome.test_accuracy,
            pm_accuracy: outcome.pm_accuracy,
            chosen: vec![],
            added: vec![],
            notes: vec![],
            failures: vec![],
        };
        let wanted = self.spec.new_examples_after(i);
        if i >= self.spec.curation.iterations || wanted == 0 {
            return Ok(record);
        }
        let scores = ParentScores {
            pm: outcome.pm.clone(),
            ifd: self.ifd_scores(s, ifd)?,
        };
        let chosen = choose_parents(s, &self.train.examples, &scores, self.spec)?;
        let new = self.new_examples(s, i, &chosen, wanted, &mut record)?;
        check_new_ids(s, i, &current, &new)?;
        if new.is_empty() {
            record.notes.push(format!(
                "no new example after iteration {i}: {} parent(s) had no unused candidate",
                chosen.len()
            ));
        }
        record.added = new.iter().map(|e| e.id.clone()).collect();
        record.chosen = chosen;
        let (next, _, _) = iteration_paths(self.spec, s, i + 1);
        write_train_file(&next, current.examples.into_iter().chain(new).collect())?;
        Ok(record)
    }

    /// The IFD scores strategy `ifd` chooses by, from the shared base run's
    /// first checkpoint; none for the other strategies.
    fn ifd_scores(
        &self,
        s: Strategy,
        ifd: &mut IfdScores<'_>,
    ) -> Result<Option<BTreeMap<String, f64>>> {
        if s != Strategy::Ifd {
            return Ok(None);
        }
        let base = iteration_job(self.spec, self.job, s, 1)?;
        let first = outcome_of(&base)?.first_step.ok_or_else(|| {
            CurationError::Iteration("the base run has no checkpoint for IFD scores".into())
        })?;
        ifd(&base, first).map(Some)
    }

    /// `wanted` new examples derived from the chosen parents: drawn from the
    /// pool (a shortfall is noted in `record`) or made by the generator (its
    /// failed tries are recorded).
    fn new_examples(
        &self,
        s: Strategy,
        i: u32,
        chosen: &[Chosen],
        wanted: usize,
        record: &mut IterationRecord,
    ) -> Result<Vec<Example>> {
        let seed = self.spec.curation.seed;
        if let Some(pool) = self.pool {
            let drawn = draw(pool, chosen, &self.state.used(s), wanted, seed, i);
            record.notes.extend(drawn.shortfall);
            Ok(drawn.examples)
        } else if let Some(generator) = &self.spec.source.generator {
            let parents = generator_parents(chosen, &self.train.examples, seed, i)?;
            let generated = generate(generator, &parents, wanted, seed, i)?;
            record.failures = generated.failures;
            Ok(generated.examples)
        } else {
            Err(CurationError::Iteration(
                "the curation has neither a candidate pool nor a generator".into(),
            ))
        }
    }
}

/// New examples need new ids: one already in the training data is an error.
fn check_new_ids(s: Strategy, i: u32, current: &Dataset, new: &[Example]) -> Result<()> {
    let existing: BTreeSet<&str> = current.examples.iter().map(|e| e.id.as_str()).collect();
    match new.iter().find(|e| existing.contains(e.id.as_str())) {
        Some(clash) => Err(CurationError::Iteration(format!(
            "{} iteration {i}: new example id '{}' is already in the training data; give new examples new ids",
            s.name(),
            clash.id
        ))),
        None => Ok(()),
    }
}

/// Writes the next iteration's train file whole or not at all.
fn write_train_file(path: &std::path::Path, examples: Vec<Example>) -> Result<()> {
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).map_err(|source| CurationError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let tmp = path.with_extension("jsonl.tmp");
    Dataset::write_gsm8k_jsonl(&examples, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|source| CurationError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A curation of 3 iterations of pm and iid on two synthetic problems,
    /// its train file and its iteration-2/3 data in a temporary directory.
    fn spec_in(dir: &std::path::Path, last_only: bool) -> (CurationSpec, JobSpec) {
        let data = premem_core::data::synth::generate(&premem_core::data::synth::SynthConfig {
            train: 2,
            test: 2,
            ..Default::default()
        })
        .unwrap();
        let train = dir.join("train.jsonl");
        Dataset::write_gsm8k_jsonl(&data.train, &train).unwrap();
        let mut spec =
            CurationSpec::from_toml(crate::spec::tests::POOL_SPEC, &dir.join("cur.toml")).unwrap();
        spec.curation.output = dir.join("out").to_string_lossy().into_owned();
        spec.curation.measure_last_checkpoint_only = last_only;
        let mut job = crate::state::tests::job();
        job.data.train.path = train.to_string_lossy().into_owned();
        job.checkpoint.every_steps = Some(5);
        job.checkpoint.steps = vec![1, 3];
        for s in [Strategy::Pm, Strategy::Iid] {
            for i in [2, 3] {
                let (file, _, _) = iteration_paths(&spec, s, i);
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                Dataset::write_gsm8k_jsonl(&data.train, &file).unwrap();
            }
        }
        (spec, job)
    }

    /// With `measure_last_checkpoint_only`, only the runs whose P-M
    /// accuracy chooses parents (the base run, pm before the last iteration)
    /// keep the base job's checkpoints; without it, every run does.
    #[test]
    fn only_runs_that_choose_parents_keep_every_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let every = |last_only: bool, s: Strategy, i: u32| {
            let (spec, job) = spec_in(dir.path(), last_only);
            let run = iteration_job(&spec, &job, s, i).unwrap();
            assert_eq!(run.eval.limit, Some(2));
            // Without a test_limit of its own, the test split is cut to |D| too.
            assert_eq!(run.eval.test_limit, Some(2));
            let c = run.checkpoint;
            (c.every_steps, c.every_epoch, c.steps)
        };
        let kept = (Some(5), true, vec![1, 3]);
        let last = (None, false, vec![]);
        assert_eq!(every(true, Strategy::Iid, 1), kept);
        assert_eq!(every(true, Strategy::Pm, 2), kept);
        assert_eq!(every(true, Strategy::Pm, 3), last);
        assert_eq!(every(true, Strategy::Iid, 2), last);
        for (s, i) in [(Strategy::Pm, 3), (Strategy::Iid, 2), (Strategy::Iid, 3)] {
            assert_eq!(every(false, s, i), kept);
        }
    }
}
