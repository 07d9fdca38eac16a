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
use premem_core::{Dataset, Example, JobSpec};
use premem_curation::{
    CandidatePool, Curation, CurationError, CurationSpec, CurationState, Strategy, iteration_job,
    write_outputs,
};
use premem_evaluator::checkpoint::{DEFAULT_CACHE_DIR, LoadedModel, open_model_dir};
use premem_proto::ClientConfig;
use premem_proto::v1;

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
    let dir = Path::new(&base.run.output).join(premem_core::storage::checkpoint::step_prefix(
        premem_core::storage::checkpoint::Area::Weights,
        first_step,
    ));
    eprintln!(
        "IFD scores of {} examples from {}",
        train.len(),
        dir.display()
    );
    let device = crate::device::parse_device(device)?;
    let checkpoint = open_model_dir(&dir, Path::new(DEFAULT_CACHE_DIR))?;
    let loaded = LoadedModel::load(&checkpoint.dir, device, premem_model::default_kind(device))?;
    let refs: Vec<&Example> = train.iter().collect();
    let scores = premem_evaluator::ifd::ifd_scores(
        &loaded.model,
        &loaded.tokenizer,
        &base.prompt,
        loaded.eos,
        loaded.pad(),
        &refs,
        base.eval.batch_size,
        base.train.max_length,
    )?;
    let map: BTreeMap<String, f64> = train.iter().map(|e| e.id.clone()).zip(scores).collect();
    premem_core::storage::files::write_atomic(&file, &serde_json::to_vec_pretty(&map)?)
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
                let curation = Curation {
                    spec,
                    job,
                    state,
                    train,
                    pool,
                };
                let mut ifd = |base: &JobSpec, first_step: u64| {
                    ifd_scores(spec, base, &train.examples, first_step, &args.device)
                        .map_err(|e| CurationError::Scores(format!("{e:#}")))
                };
                let record = curation.finish_iteration(s, i, &run, &mut ifd)?;
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
    cluster.print_dashboard();
    let connected = Jobs::connect(&ClientConfig::new(&cluster.address, &cluster.tokens.submit));
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
