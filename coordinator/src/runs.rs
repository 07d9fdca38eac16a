//! The jobs' runs in their object stores: building a job from its spec (the
//! examples it evaluates, the steps it plans), finding its published
//! checkpoints, and adopting result files already there. The run stores
//! stay the truth for checkpoints and results: a checkpoint is published
//! exactly when its manifest is there, a task is done exactly when its
//! result file is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use premem_core::data::dataset::DatasetError;
use premem_core::data::order::subset;
use premem_core::data::results::results_prefix;
use premem_core::spec::JobSpec;
use premem_core::spec::record::read_run_record;
use premem_core::storage::checkpoint::{Area, MANIFEST, published_steps, step_prefix};
use premem_core::{Dataset, Store, StoreError};

use futures::StreamExt;

use crate::state::{Examples, Job, Row, State, TaskKey, TaskState};

/// The largest dataset file the coordinator reads (it keeps the ids and
/// the step count; the trainers read the examples).
pub const MAX_DATASET_BYTES: u64 = 1 << 30;

/// The job's dataset files are regular files of at most
/// [`MAX_DATASET_BYTES`]: checked before one is opened, so a FIFO cannot
/// block the call nor `/dev/zero` fill the coordinator's memory.
fn check_dataset_files(spec: &JobSpec) -> Result<(), DatasetError> {
    for data in std::iter::once(&spec.data.train).chain(&spec.data.test) {
        let path = std::path::Path::new(&data.path);
        let size = premem_core::data::dataset::regular_file_size(path)?;
        if size > MAX_DATASET_BYTES {
            return Err(DatasetError::Invalid {
                path: path.into(),
                message: format!(
                    "{size} bytes: the coordinator reads datasets of at most {} GiB",
                    MAX_DATASET_BYTES >> 30
                ),
            });
        }
    }
    Ok(())
}

/// The most bytes a model's `config.json` may have (published ones have a
/// few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The job's model config (`model.config`, or `model.base`'s
/// `config.json`), where this host has it: a regular file of at most
/// [`MAX_CONFIG_BYTES`] that is a model config, checked at submit rather
/// than first read by a trainer (issue 39, item 11: `/etc/passwd` was
/// accepted). A file this host lacks is left to the trainers' hosts, and an
/// object-store URL to the trainers.
fn check_model_config(spec: &JobSpec) -> Result<(), DatasetError> {
    let file = match (&spec.model.config, &spec.model.base) {
        (Some(config), _) => std::path::PathBuf::from(config),
        (None, Some(base)) => std::path::Path::new(base).join("config.json"),
        (None, None) => return Ok(()),
    };
    if file.to_string_lossy().contains("://") || !file.exists() {
        return Ok(());
    }
    let invalid = |message: String| DatasetError::Invalid {
        path: file.clone(),
        message,
    };
    let size = premem_core::data::dataset::regular_file_size(&file)?;
    if size > MAX_CONFIG_BYTES {
        return Err(invalid(format!(
            "{size} bytes: a model config has at most {MAX_CONFIG_BYTES}"
        )));
    }
    premem_core::arch::ModelConfig::from_file(&file)
        .map(|_| ())
        .map_err(|e| invalid(format!("not a model config: {e}")))
}

/// Builds a job from its spec, validated where it came in, and the JSON it
/// came as: the train subset and test examples the evaluation covers, and
/// the planned steps. Reads the datasets.
pub fn build_job(spec: JobSpec, spec_json: String) -> Result<Job, DatasetError> {
    check_dataset_files(&spec)?;
    check_model_config(&spec)?;
    let train = Dataset::load(&spec.data.train)?;
    let limit = spec.eval.limit.unwrap_or(usize::MAX);
    let train_ids: Vec<String> = subset(train.len(), spec.data.fraction, spec.run.seed)
        .iter()
        .take(limit)
        .map(|&i| train.examples[i].id.clone())
        .collect();
    let test_ids: Vec<String> = match &spec.data.test {
        Some(test) => Dataset::load(test)?
            .examples
            .into_iter()
            .take(spec.eval.test_limit().unwrap_or(usize::MAX))
            .map(|e| e.id)
            .collect(),
        None => vec![],
    };
    let plan = spec.data_plan(train.len());
    spec.checkpoint
        .check_steps(plan.total_steps)
        .map_err(|message| DatasetError::Invalid {
            path: train.path.clone(),
            message,
        })?;
    let examples = Examples {
        train: train_ids,
        test: test_ids,
    };
    Ok(Job::new(
        spec,
        spec_json,
        examples,
        (plan.total_steps, plan.steps_per_epoch),
    ))
}

/// The run stores of the jobs, opened once each (on S3, one client and its
/// connections per run rather than one per request).
#[derive(Clone, Default)]
pub struct RunStores(Arc<Mutex<HashMap<String, Store>>>);

impl RunStores {
    pub fn get(&self, location: &str) -> Result<Store, StoreError> {
        let mut stores = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = stores.get(location) {
            return Ok(store.clone());
        }
        let store = Store::open(location)?;
        stores.insert(location.to_string(), store.clone());
        Ok(store)
    }
}

/// A task of a job whose result file may already be in the job's run.
#[derive(Clone, Debug)]
pub struct RunTask {
    pub job: String,
    /// The run's location (`run.output`).
    pub run: String,
    pub key: TaskKey,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// How checkpoints were found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Found {
    /// A listing of the run's checkpoints: every published one.
    Listing,
    /// A trainer's report of one.
    Report,
}

/// Notes the published checkpoints `steps` of `job` (its tasks are added
/// once each, in the order found); returns how many checkpoints were new
/// and their tasks. A listing that holds the final step ends the job's
/// scanning. Steps off the job's schedule ([`Job::scheduled`]) are skipped.
fn add_published(
    state: &Mutex<State>,
    job: &str,
    run: &str,
    steps: Vec<u64>,
    found: Found,
) -> (usize, Vec<RunTask>) {
    let mut state = lock(state);
    let Some(j) = state.jobs.get_mut(job).filter(|j| j.watches_checkpoints()) else {
        return (0, vec![]);
    };
    let steps: Vec<u64> = steps.into_iter().filter(|&s| j.scheduled(s)).collect();
    if found == Found::Listing && steps.iter().any(|&step| step >= j.total_steps) {
        j.final_listed = true;
    }
    let mut added = 0;
    let mut tasks = vec![];
    for step in steps {
        let keys = state.checkpoint_published(job, step, Instant::now());
        if !keys.is_empty() {
            added += 1;
        }
        tasks.extend(keys.into_iter().map(|key| RunTask {
            job: job.to_string(),
            run: run.to_string(),
            key,
        }));
    }
    (added, tasks)
}

/// Finds newly published checkpoints of every job that watches them and
/// adds their tasks; returns how many checkpoints were added.
pub async fn scan_checkpoints(state: &Mutex<State>, runs: &RunStores) -> usize {
    let watched: Vec<(String, String)> = lock(state)
        .jobs
        .values()
        .filter(|j| j.watches_checkpoints())
        .map(|j| (j.name.clone(), j.spec.run.output.clone()))
        .collect();
    let mut added = 0;
    let mut new_tasks = vec![];
    for (name, output) in watched {
        let steps = match runs.get(&output) {
            Ok(run) => published_steps(&run, Area::Weights).await,
            Err(e) => Err(e),
        };
        let steps = match steps {
            Ok(steps) => steps,
            Err(e) => {
                tracing::warn!(job = name, error = %e, "cannot list checkpoints");
                continue;
            }
        };
        if !steps.is_empty() && !owns_run(state, runs, &name, &output).await {
            continue;
        }
        let (checkpoints, tasks) = add_published(state, &name, &output, steps, Found::Listing);
        added += checkpoints;
        new_tasks.extend(tasks);
    }
    adopt_new_results(state, runs, new_tasks).await;
    added
}

/// Whether the checkpoints listed in `output` are job `name`'s: its
/// `run.json` has the job's training hash (checked once per coordinator
/// start). A run of another spec there fails the job rather than have it
/// take that run's checkpoints as its own (issue 39, item 5: a second
/// `premem run` with the same output and another `lr` reported the first
/// run's P-M table as its result). `false` also while the store cannot say
/// (logged; the next scan asks again). A run with no record yet is taken.
async fn owns_run(state: &Mutex<State>, runs: &RunStores, name: &str, output: &str) -> bool {
    let hash = match lock(state).jobs.get(name) {
        Some(job) if job.run_owned => return true,
        Some(job) => job.spec.training_hash(),
        None => return false,
    };
    let record = match runs.get(output) {
        Ok(run) => read_run_record(&run).await,
        Err(e) => Err(e),
    };
    let record = match record {
        Ok(record) => record,
        // No record, nothing to compare (a trainer writes it before any
        // checkpoint; the evaluators refuse a run without it): asked again.
        Err(StoreError::NotFound { .. }) => return true,
        Err(e) => {
            tracing::warn!(job = name, error = %e, "cannot read the run's record");
            return false;
        }
    };
    let mut state = lock(state);
    if record.training_hash == hash {
        if let Some(job) = state.jobs.get_mut(name) {
            job.run_owned = true;
        }
        return true;
    }
    let why = format!(
        "run.output '{output}' holds run '{}', trained from another spec (training hash differs): its checkpoints are not this job's; give the job its own run.output",
        record.name
    );
    tracing::error!(job = name, why, "job failed");
    state.fail_job(name, why);
    false
}

/// A trainer reported publishing the checkpoint of `step` in `run`: once its
/// manifest is there, its tasks are added at once, without waiting for the
/// next listing. The report saves the scanner's wait, not its work: the
/// listing stays the truth (after a restart, or for a report that never
/// arrived), and a checkpoint added either way is added once. Returns the
/// new tasks, whose result files may already exist; `None` when the
/// manifest is not (yet) in the store.
pub async fn checkpoint_reported(
    state: &Mutex<State>,
    runs: &RunStores,
    job: &str,
    run: &str,
    step: u64,
) -> Result<Option<Vec<RunTask>>, StoreError> {
    let manifest = format!("{}/{MANIFEST}", step_prefix(Area::Weights, step));
    if !runs.get(run)?.exists(&manifest).await? {
        return Ok(None);
    }
    Ok(Some(
        add_published(state, job, run, vec![step], Found::Report).1,
    ))
}

/// Adopts the result files of new tasks: a run submitted again to a
/// coordinator that has no record of it (a new state location) keeps the
/// results it already has.
pub async fn adopt_new_results(state: &Mutex<State>, runs: &RunStores, tasks: Vec<RunTask>) {
    if tasks.is_empty() {
        return;
    }
    let adopted = adopt_results(state, runs, tasks).await;
    if adopted > 0 {
        tracing::info!(tasks = adopted, "results already in the run stores adopted");
    }
}

/// Marks done every task whose result file is in its run's store (after a
/// restart: the tasks an earlier coordinator saw finish).
pub async fn adopt_all_results(state: &Mutex<State>, runs: &RunStores) {
    let tasks: Vec<RunTask> = lock(state)
        .jobs
        .values()
        .flat_map(|job| {
            job.tasks.keys().map(|key| RunTask {
                job: job.name.clone(),
                run: job.spec.run.output.clone(),
                key: *key,
            })
        })
        .collect();
    let found = adopt_results(state, runs, tasks).await;
    tracing::info!(tasks = found, "results found in the run stores");
}

/// Result files read at once while adopting (an object store's GETs are
/// latency-bound: a restart's reads overlap).
const ADOPT_READS: usize = 32;

/// Marks done each task whose result file is already in its run's store
/// (written before this coordinator knew the task: an earlier life of it,
/// or another coordinator) and matches the task's examples; returns how
/// many. Unreadable or mismatched files are left to be evaluated again.
/// Each checkpoint's results are listed once, so only files that exist
/// are read, [`ADOPT_READS`] at a time; each adoption takes the lock once.
async fn adopt_results(state: &Mutex<State>, runs: &RunStores, tasks: Vec<RunTask>) -> usize {
    let tasks: Vec<RunTask> = {
        let state = lock(state);
        tasks
            .into_iter()
            .filter(|task| {
                state
                    .jobs
                    .get(&task.job)
                    .and_then(|j| j.tasks.get(&task.key))
                    .is_some_and(|t| !matches!(t.state, TaskState::Done))
            })
            .collect()
    };
    let tasks = with_result_files(runs, tasks).await;
    // Each read is a task of its own, so that parsing runs on every worker.
    let reads = futures::stream::iter(tasks.into_iter().map(|task| {
        let run = runs.get(&task.run);
        tokio::spawn(async move {
            let rows = match run {
                Ok(run) => result_rows(&run, task.key).await,
                Err(e) => Err(e.to_string()),
            };
            (task, rows)
        })
    }))
    .buffer_unordered(ADOPT_READS);
    futures::pin_mut!(reads);
    let mut found = 0;
    while let Some(read) = reads.next().await {
        let Ok((task, rows)) = read else {
            tracing::error!("reading a result file panicked: task evaluated again");
            continue;
        };
        let rows = match rows {
            Ok(Some(rows)) => rows,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = e, "unreadable result file: task evaluated again");
                continue;
            }
        };
        match lock(state).adopt_result(&task.job, task.key, rows) {
            Ok(()) => found += 1,
            Err(e) => {
                tracing::warn!(task = task.key.id(&task.job), refusal = ?e, "result file does not match its task: evaluated again");
            }
        }
    }
    found
}

/// The tasks whose result file a listing of their checkpoint's results
/// shows (one listing per run and checkpoint); where a listing fails, all
/// of that checkpoint's tasks, to be read one by one.
async fn with_result_files(runs: &RunStores, tasks: Vec<RunTask>) -> Vec<RunTask> {
    let mut by_checkpoint: BTreeMap<(String, u64), Vec<RunTask>> = BTreeMap::new();
    for task in tasks {
        by_checkpoint
            .entry((task.run.clone(), task.key.step))
            .or_default()
            .push(task);
    }
    let mut kept = vec![];
    for ((run, step), tasks) in by_checkpoint {
        let prefix = results_prefix(step);
        let listed = match runs.get(&run) {
            Ok(store) => store.list_files(&prefix).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match listed {
            Ok(files) => {
                let files: BTreeSet<String> = files.into_iter().collect();
                kept.extend(tasks.into_iter().filter(|t| {
                    let file = t.key.result_file();
                    let name = file.rsplit('/').next().unwrap_or(&file);
                    files.contains(name)
                }));
            }
            Err(e) => {
                tracing::warn!(
                    run,
                    step,
                    error = e,
                    "cannot list the results: each result file read"
                );
                kept.extend(tasks);
            }
        }
    }
    kept
}

/// The largest result file the coordinator reads.
pub const MAX_RESULT_BYTES: usize = 256 << 20;

/// The rows without preamble of the result file of task `key` in `run`;
/// `Ok(None)` when there is no such file. Every row must be of the task's
/// checkpoint and split, with its accuracy its correct samples over its
/// samples: the file, not a caller, is what a task's rows are.
pub async fn result_rows(run: &Store, key: TaskKey) -> Result<Option<Vec<Row>>, String> {
    let file = key.result_file();
    let url = run.url_of(&file);
    let bytes = match run.get(&file).await {
        Ok(bytes) => bytes,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if bytes.len() > MAX_RESULT_BYTES {
        return Err(format!(
            "{url}: {} bytes, more than a result file holds",
            bytes.len()
        ));
    }
    let rows = premem_core::data::results::from_parquet(bytes, &url).map_err(|e| e.to_string())?;
    let mut kept = vec![];
    for r in rows {
        if r.checkpoint_step != key.step || r.split != key.split.name() {
            return Err(format!(
                "{url}: row '{}' is of step {} {}, the task of step {} {}",
                r.id,
                r.checkpoint_step,
                r.split,
                key.step,
                key.split.name()
            ));
        }
        let accuracy = f64::from(r.n_correct) / f64::from(r.samples.max(1));
        if r.samples == 0 || r.n_correct > r.samples || (r.accuracy - accuracy).abs() > 1e-12 {
            return Err(format!(
                "{url}: row '{}' has accuracy {} for {} correct of {} samples",
                r.id, r.accuracy, r.n_correct, r.samples
            ));
        }
        if let Some(d) = r.distinct_samples.filter(|&d| d == 0 || d > r.samples) {
            return Err(format!(
                "{url}: row '{}' has {d} distinct samples of {}",
                r.id, r.samples
            ));
        }
        if r.preamble.is_empty() {
            kept.push(Row {
                id: r.id,
                accuracy: r.accuracy,
                perplexity: r.target_perplexity,
                distinct: r
                    .distinct_samples
                    .map(|d| f64::from(d) / f64::from(r.samples)),
            });
        }
    }
    Ok(Some(kept))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use premem_core::testing::JobToml;

    use super::*;

    /// A spec over 6 train and 9 test problems written into `dir`, its
    /// `[eval]` and `[checkpoint]` tables' extra lines given.
    fn spec_over_data(dir: &Path, eval: &str, checkpoint: &str) -> JobSpec {
        let data = premem_core::data::synth::generate(&premem_core::data::synth::SynthConfig {
            train: 6,
            test: 9,
            pool_per_example: 0,
            ..Default::default()
        })
        .unwrap();
        let (train, test) = (dir.join("train.jsonl"), dir.join("test.jsonl"));
        Dataset::write_gsm8k_jsonl(&data.train, &train).unwrap();
        Dataset::write_gsm8k_jsonl(&data.test, &test).unwrap();
        let text = format!(
            "[run]\nname = \"job\"\noutput = \"{out}\"\n\n[model]\nconfig = \"tiny.json\"\ntokenizer = \"t.json\"\n\n\
             [data]\ntrain = {{ path = \"{train}\", format = \"gsm8k\" }}\ntest = {{ path = \"{test}\", format = \"gsm8k\" }}\n\n\
             [train]\nlr = 1e-4\nschedule = {{ type = \"constant\" }}\nbatch_size = 2\nmicro_batch_size = 1\nepochs = 2\n\n\
             [eval]\n{eval}\n\n[checkpoint]\n{checkpoint}\n",
            out = dir.join("run").display(),
            train = train.display(),
            test = test.display(),
        );
        JobSpec::from_toml(&text, Path::new("spec.toml")).unwrap()
    }

    /// `eval.limit` caps both splits, `eval.test_limit` the test split
    /// alone; a listed checkpoint step past the run's 6 steps is refused,
    /// naming the train file.
    #[test]
    fn the_job_takes_its_limits_and_checks_its_checkpoint_steps() {
        let dir = tempfile::tempdir().unwrap();
        let job = |eval: &str, checkpoint: &str| {
            build_job(spec_over_data(dir.path(), eval, checkpoint), String::new())
        };
        let all = job("", "").unwrap();
        assert_eq!((all.examples.train.len(), all.examples.test.len()), (6, 9));
        assert_eq!(all.total_steps, 6);
        let both = job("limit = 4", "").unwrap();
        assert_eq!(
            (both.examples.train.len(), both.examples.test.len()),
            (4, 4)
        );
        let test = job("limit = 4\ntest_limit = 7", "").unwrap();
        assert_eq!(
            (test.examples.train.len(), test.examples.test.len()),
            (4, 7)
        );
        assert!(job("", "steps = [2, 6]").is_ok());
        let Err(err) = job("", "steps = [2, 7]") else {
            panic!("a checkpoint step past the run was taken");
        };
        let err = err.to_string();
        assert!(
            err.contains("train.jsonl") && err.contains("lists step 7, but the run has 6 steps"),
            "{err}"
        );
    }

    fn job_toml(run: &Path) -> JobToml {
        JobToml::default().with(&format!(
                "[run]\nname = \"job\"\noutput = {:?}\n\
                 [train]\nschedule = {{ type = \"constant\" }}\nbatch_size = 2\nmicro_batch_size = 1\n\
                 [eval]\ntask_examples = 2\nthreshold = {{ perplexity = 1.5 }}",
                run.display().to_string()
            ))
    }

    fn state_with_job(run: &Path) -> Mutex<State> {
        let spec = job_toml(run).spec();
        let examples = Examples {
            train: vec!["t0".into(), "t1".into(), "t2".into()],
            test: vec![],
        };
        let mut state = State::new(Default::default());
        state
            .insert_job(Job::new(spec, "{}".into(), examples, (8, 4)))
            .unwrap();
        Mutex::new(state)
    }

    fn publish(run: &Path, step: u64) {
        let dir = run.join(step_prefix(Area::Weights, step));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(MANIFEST), b"{}").unwrap();
    }

    #[tokio::test]
    async fn a_reported_checkpoint_gets_its_tasks_once_its_manifest_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().display().to_string();
        let state = state_with_job(dir.path());
        let runs = RunStores::default();
        let reported = checkpoint_reported(&state, &runs, "job", &run, 4).await;
        assert!(reported.unwrap().is_none(), "not published yet");
        publish(dir.path(), 4);
        let tasks = checkpoint_reported(&state, &runs, "job", &run, 4)
            .await
            .unwrap()
            .unwrap();
        // 3 train examples in tasks of 2.
        assert_eq!(tasks.len(), 2);
        assert_eq!(lock(&state).jobs["job"].checkpoint_steps().count(), 1);
        // The listing finds nothing new; a second report adds nothing.
        assert_eq!(scan_checkpoints(&state, &runs).await, 0);
        let again = checkpoint_reported(&state, &runs, "job", &run, 4).await;
        assert!(again.unwrap().unwrap().is_empty());
        // A cancelled job takes no new checkpoint.
        lock(&state).cancel("job").unwrap();
        publish(dir.path(), 8);
        let cancelled = checkpoint_reported(&state, &runs, "job", &run, 8).await;
        assert!(cancelled.unwrap().unwrap().is_empty());
        assert!(!lock(&state).jobs["job"].trained);
    }

    #[tokio::test]
    async fn a_listing_that_holds_the_final_checkpoint_ends_the_scanning() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().display().to_string();
        let state = state_with_job(dir.path());
        let runs = RunStores::default();
        // The final step (8) reported while step 4's report was lost: the
        // job is trained, but only a listing can find step 4. Step 3 is
        // off the schedule (a checkpoint an interrupted trainer wrote to
        // resume from): never evaluated, reported or listed.
        publish(dir.path(), 3);
        let off = checkpoint_reported(&state, &runs, "job", &run, 3).await;
        assert!(off.unwrap().unwrap().is_empty());
        publish(dir.path(), 4);
        publish(dir.path(), 8);
        checkpoint_reported(&state, &runs, "job", &run, 8)
            .await
            .unwrap();
        assert!(lock(&state).jobs["job"].trained);
        assert!(lock(&state).jobs["job"].watches_checkpoints());
        assert_eq!(scan_checkpoints(&state, &runs).await, 1);
        let steps: Vec<u64> = lock(&state).jobs["job"].checkpoint_steps().collect();
        assert_eq!(steps, [4, 8]);
        // Every checkpoint is known: the scanner no longer lists this run.
        assert!(!lock(&state).jobs["job"].watches_checkpoints());
        publish(dir.path(), 12);
        assert_eq!(scan_checkpoints(&state, &runs).await, 0);
    }

    /// The record of a run of `spec` in `run` (`run.json`).
    fn write_record(run: &Path, spec: &JobSpec) {
        let record = serde_json::json!({
            "name": spec.run.name,
            "training_hash": spec.training_hash(),
            "inputs_digest": "0".repeat(32),
            "premem_version": "0",
            "spec": spec,
        });
        std::fs::write(run.join("run.json"), record.to_string()).unwrap();
    }

    /// A run output holding a run of another spec (issue 39, item 5): its
    /// checkpoints give the job no task, and the job fails naming that
    /// run; the job's own record lets them in.
    #[tokio::test]
    async fn checkpoints_of_another_specs_run_are_not_the_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_with_job(dir.path());
        let runs = RunStores::default();
        let own = lock(&state).jobs["job"].spec.clone();
        let other = job_toml(dir.path())
            .with("[run]\nname = \"first\"\n[train]\nlr = 5e-4")
            .spec();
        write_record(dir.path(), &other);
        publish(dir.path(), 4);
        assert_eq!(scan_checkpoints(&state, &runs).await, 0);
        {
            let state = lock(&state);
            let job = &state.jobs["job"];
            assert_eq!(job.checkpoint_steps().count(), 0);
            assert!(
                matches!(&job.phase, crate::state::Phase::Failed(m) if m.contains("holds run 'first', trained from another spec")),
                "{:?}",
                job.phase
            );
        }

        let state = state_with_job(dir.path());
        write_record(dir.path(), &own);
        assert_eq!(scan_checkpoints(&state, &runs).await, 1);
        assert!(lock(&state).jobs["job"].run_owned);
    }
}
