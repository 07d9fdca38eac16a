//! `premem curate`: the curation loop (paper Algorithm 1) and its baselines.
//! Each iteration of each strategy is a full run (train on D + D', evaluate
//! every checkpoint, P-M accuracy) submitted to a coordinator; between
//! iterations the strategy chooses parents and new examples are drawn from
//! the candidate pool or made by the generator command. The state file
//! records every finished iteration, so the command resumes where it
//! stopped, and the runs themselves survive a coordinator restart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use premem_core::dataset::{DatasetFormat, DatasetSpec};
use premem_core::{Dataset, Example, JobSpec};
use premem_curation::{
    CandidatePool, Chosen, CurationSpec, CurationState, IterationRecord, ParentScores, Strategy,
    choose_parents, draw, generate, generator_parents, write_outputs,
};
use premem_proto::ClientConfig;
use premem_proto::v1;
use premem_report::{ReportOptions, analyze, load};

use crate::client::{ConnectArgs, Jobs, state_name};
use crate::local_cluster::LocalCluster;
use crate::process::stop_flag;

#[derive(clap::Args)]
pub struct CurateArgs {
    /// The curation file (see examples/synth-curation.toml).
    config: PathBuf,
    /// Where the local coordinator keeps its state and the processes their
    /// logs (default: premem-run/<curation name>).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Submit the runs to the coordinator of --coordinator (a running
    /// cluster with pool trainers) instead of starting a local one.
    #[arg(long)]
    remote: bool,
    #[command(flatten)]
    connect: ConnectArgs,
    /// Checkpoint cache of the local evaluators.
    #[arg(long, default_value = "premem-cache")]
    cache_dir: PathBuf,
    /// Device of the IFD scoring model (strategy `ifd`): cpu, cuda, auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

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
/// evaluated) and the first |D| test examples.
fn iteration_job(spec: &CurationSpec, job: &JobSpec, s: Strategy, i: u32) -> Result<JobSpec> {
    let mut run = job.clone();
    let d = Dataset::load(&job.data.train)?.len();
    run.eval.limit = Some(d);
    if i == 1 {
        let (name, output) = base_run(spec);
        run.run.name = name;
        run.run.output = output.to_string_lossy().into_owned();
        return Ok(run);
    }
    let (train, name, output) = iteration_paths(spec, s, i);
    if !train.is_file() {
        bail!(
            "{}: the data of iteration {i} of '{}' is missing (it is written when iteration {} ends); delete {} to start over",
            train.display(),
            s.name(),
            i - 1,
            spec.state_path().display()
        );
    }
    run.run.name = name;
    run.run.output = output.to_string_lossy().into_owned();
    run.data.train = DatasetSpec {
        path: train.to_string_lossy().into_owned(),
        format: DatasetFormat::Gsm8k,
        fields: None,
        answer_style: Some(job.data.train.answer_style()),
    };
    Ok(run)
}

/// What an evaluated run says: per-example P-M accuracy at its last
/// checkpoint, and the run's P-M and test accuracy there.
struct RunOutcome {
    pm: BTreeMap<String, f64>,
    pm_accuracy: Option<f64>,
    test_accuracy: Option<f64>,
    first_step: Option<u64>,
}

fn outcome_of(job: &JobSpec) -> Result<RunOutcome> {
    let runs = load(&job.run.output).with_context(|| format!("reading run {}", job.run.output))?;
    let options = ReportOptions {
        threshold: Some(job.eval.threshold),
        ..ReportOptions::default()
    };
    let analysis = analyze(&runs, &options)?;
    let run = analysis.runs.first().context("the run has no analysis")?;
    let last = run
        .checkpoints
        .iter()
        .rev()
        .find(|c| c.pm.is_some())
        .with_context(|| format!("run {}: no checkpoint has P-M accuracy", job.run.output))?;
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

/// IFD scores of D from the shared base run's first checkpoint (a briefly
/// trained model), computed once and kept in `<output>/ifd-scores.json`.
fn ifd_scores(
    spec: &CurationSpec,
    base: &JobSpec,
    train: &[Example],
    first_step: u64,
    device: &str,
) -> Result<BTreeMap<String, f64>> {
    let file = spec.output_dir().join("ifd-scores.json");
    if let Ok(bytes) = std::fs::read(&file) {
        return serde_json::from_slice(&bytes).with_context(|| format!("{}", file.display()));
    }
    let dir = Path::new(&base.run.output).join(premem_core::checkpoint::step_prefix(
        premem_core::checkpoint::Area::Weights,
        first_step,
    ));
    eprintln!(
        "IFD scores of {} examples from {}",
        train.len(),
        dir.display()
    );
    let device = crate::device::parse_device(device)?;
    let model = premem_model::CausalLm::load(&dir, device, premem_model::default_kind(device))?;
    let tokenizer = premem_model::Tokenizer::from_dir(&dir)?;
    let eos = *model
        .config()
        .eos_token_ids
        .first()
        .context("the checkpoint's config has no eos_token_id")?;
    let pad = model.config().pad_token_id.unwrap_or(eos);
    let refs: Vec<&Example> = train.iter().collect();
    let scores = premem_evaluator::ifd::ifd_scores(
        &model,
        &tokenizer,
        &base.prompt,
        eos,
        pad,
        &refs,
        base.eval.batch_size,
        base.train.max_length,
    )?;
    let map: BTreeMap<String, f64> = train.iter().map(|e| e.id.clone()).zip(scores).collect();
    premem_core::files::write_atomic(&file, &serde_json::to_vec_pretty(&map)?)
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(map)
}

pub fn run(args: CurateArgs) -> Result<()> {
    let spec = CurationSpec::from_file(&args.config)?;
    let job = spec.base_job(&args.config)?;
    let state_path = spec.state_path();
    let mut state = CurationState::load_or_new(&state_path, &spec, &job)?;
    let train = Dataset::load(&job.data.train)?;
    let train_ids: BTreeSet<&str> = train.examples.iter().map(|e| e.id.as_str()).collect();
    let pool = match &spec.source.pool {
        Some(pool) => {
            let pool = CandidatePool::load(pool, train_ids.iter())?;
            for note in &pool.notes {
                eprintln!("note: {note}");
            }
            Some(pool)
        }
        None => None,
    };
    eprintln!(
        "curation '{}': {} iteration(s) of {} on {} train examples; state in {}",
        spec.curation.name,
        spec.curation.iterations,
        spec.curation
            .strategies
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", "),
        train.len(),
        state_path.display()
    );
    if state.is_done() {
        eprintln!("every iteration is done; writing the report");
    } else {
        run_iterations(&args, &spec, &job, &mut state, &train, pool.as_ref())?;
    }
    let written = write_outputs(&state, &spec.output_dir())?;
    for file in &written {
        println!("wrote {}", file.display());
    }
    Ok(())
}

/// Runs the iterations the state does not have yet, on a local cluster or
/// the remote one, recording each in the state file as it ends.
fn run_iterations(
    args: &CurateArgs,
    spec: &CurationSpec,
    job: &JobSpec,
    state: &mut CurationState,
    train: &Dataset,
    pool: Option<&CandidatePool>,
) -> Result<()> {
    let stop = stop_flag()?;
    let (mut jobs, mut local) = connect(args, spec)?;
    let outcome = (|| -> Result<()> {
        loop {
            let pending: Vec<(Strategy, u32)> = spec
                .curation
                .strategies
                .iter()
                .filter_map(|&s| state.next_iteration(s).map(|i| (s, i)))
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            let mut tick = || local.as_mut().map_or(Ok(()), |c| c.supervise());
            run_round(&mut jobs, spec, job, &pending, &stop, &mut tick)?;
            for &(s, i) in &pending {
                let run = iteration_job(spec, job, s, i)?;
                let record =
                    finish_iteration(spec, job, state, train, pool, s, i, &run, &args.device)?;
                println!(
                    "{} iteration {i}: {} train examples, test {}, P-M {}; {} parent(s), {} new example(s)",
                    s.name(),
                    record.train_examples,
                    record
                        .test_accuracy
                        .map_or("-".into(), |v| format!("{:.1}%", v * 100.0)),
                    record
                        .pm_accuracy
                        .map_or("-".into(), |v| format!("{:.1}%", v * 100.0)),
                    record.chosen.len(),
                    record.added.len()
                );
                state.push(s, record)?;
                state.save(&spec.state_path())?;
            }
        }
    })();
    if let Some(cluster) = local {
        cluster.stop();
    }
    outcome
}

/// The coordinator of `--coordinator`, or a local cluster started for the
/// curation (returned too, to be stopped at the end).
fn connect(args: &CurateArgs, spec: &CurationSpec) -> Result<(Jobs, Option<LocalCluster>)> {
    if args.remote {
        return Ok((Jobs::connect(&args.connect.config()?)?, None));
    }
    let workdir = args
        .workdir
        .clone()
        .unwrap_or_else(|| PathBuf::from("premem-run").join(&spec.curation.name));
    let mut cluster = LocalCluster::start(&workdir, None)?;
    let connected = Jobs::connect(&ClientConfig::new(&cluster.address, &cluster.token));
    let workers = cluster
        .add_pool_trainers(spec.curation.trainers)
        .and_then(|()| cluster.add_evaluators(spec.curation.evaluators, &args.cache_dir));
    match (connected, workers) {
        (Ok(jobs), Ok(())) => {
            eprintln!(
                "coordinator at {}, {} pool trainer(s), {} evaluator(s); logs in {}",
                cluster.address,
                spec.curation.trainers,
                spec.curation.evaluators,
                cluster.logs.display()
            );
            Ok((jobs, Some(cluster)))
        }
        (Err(e), _) | (_, Err(e)) => {
            cluster.stop();
            Err(e)
        }
    }
}

/// Submits the runs of the pending iterations (one run per distinct name:
/// iteration 1 is shared) and waits until they all ended; a run that did
/// not finish is an error.
fn run_round(
    jobs: &mut Jobs,
    spec: &CurationSpec,
    job: &JobSpec,
    pending: &[(Strategy, u32)],
    stop: &std::sync::atomic::AtomicBool,
    tick: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let mut specs: Vec<JobSpec> = vec![];
    for &(s, i) in pending {
        let run = iteration_job(spec, job, s, i)?;
        if !specs.iter().any(|j| j.run.name == run.run.name) {
            jobs.submit(&run)?;
            specs.push(run);
        }
    }
    let round = pending.iter().map(|(_, i)| *i).min().unwrap_or(1);
    let statuses = jobs.wait(&format!("iter {round}"), &specs, stop, tick)?;
    for run in &specs {
        let status = &statuses[&run.run.name];
        if v1::JobState::try_from(status.state) != Ok(v1::JobState::Done) {
            bail!(
                "run '{}' ended {}: {} (its logs are with the coordinator's workers)",
                run.run.name,
                state_name(status),
                status.message
            );
        }
    }
    Ok(())
}

/// Measures iteration `i` of strategy `s` (its run is done) and, unless it
/// is the last, chooses parents and writes the next iteration's data.
#[allow(clippy::too_many_arguments)]
fn finish_iteration(
    spec: &CurationSpec,
    base_job: &JobSpec,
    state: &CurationState,
    train: &Dataset,
    pool: Option<&CandidatePool>,
    s: Strategy,
    i: u32,
    run: &JobSpec,
    device: &str,
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
    let wanted = spec.new_examples_after(i);
    if i >= spec.curation.iterations || wanted == 0 {
        return Ok(record);
    }
    let ifd = if s == Strategy::Ifd {
        let base = iteration_job(spec, base_job, s, 1)?;
        let first = outcome_of(&base)?
            .first_step
            .context("the base run has no checkpoint for IFD scores")?;
        Some(ifd_scores(spec, &base, &train.examples, first, device)?)
    } else {
        None
    };
    let scores = ParentScores {
        pm: outcome.pm.clone(),
        ifd,
    };
    let chosen: Vec<Chosen> = choose_parents(s, &train.examples, &scores, spec)?;
    let used = state.used(s);
    let new: Vec<Example> = if let Some(pool) = pool {
        let drawn = draw(pool, &chosen, &used, wanted, spec.curation.seed, i);
        record.notes.extend(drawn.shortfall);
        drawn.examples
    } else if let Some(generator) = &spec.source.generator {
        let parents = generator_parents(&chosen, &train.examples, spec.curation.seed, i)?;
        let generated = generate(generator, &parents, wanted, spec.curation.seed, i)?;
        record.failures = generated.failures;
        generated.examples
    } else {
        bail!("the curation has neither a candidate pool nor a generator");
    };
    let existing: BTreeSet<&str> = current.examples.iter().map(|e| e.id.as_str()).collect();
    if let Some(clash) = new.iter().find(|e| existing.contains(e.id.as_str())) {
        bail!(
            "{} iteration {i}: new example id '{}' is already in the training data; give new examples new ids",
            s.name(),
            clash.id
        );
    }
    if new.is_empty() {
        record.notes.push(format!(
            "no new example after iteration {i}: {} parent(s) had no unused candidate",
            chosen.len()
        ));
    }
    record.added = new.iter().map(|e| e.id.clone()).collect();
    record.chosen = chosen;
    let (next, _, _) = iteration_paths(spec, s, i + 1);
    std::fs::create_dir_all(next.parent().expect("a file in a directory"))?;
    let mut examples = current.examples.clone();
    examples.extend(new);
    let tmp = next.with_extension("jsonl.tmp");
    Dataset::write_gsm8k_jsonl(&examples, &tmp)?;
    std::fs::rename(&tmp, &next).with_context(|| format!("writing {}", next.display()))?;
    Ok(record)
}
