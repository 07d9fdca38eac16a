//! `premem eval-run`: every published checkpoint of a run into its result
//! files, skipping those already evaluated.

use anyhow::Result;
use premem_core::Split;
use premem_evaluator::run::{RunEvalOptions, evaluate_run};

use crate::cmd::eval::SamplingArgs;
use crate::device::parse_device;

#[derive(clap::Args)]
pub struct EvalRunArgs {
    /// The run: its output directory or URL (as in the job spec's
    /// run.output). Its run.json gives the data, prompt template and seed.
    #[arg(long)]
    run: String,
    /// Splits to evaluate (train: the examples the run trains on).
    #[arg(long, value_delimiter = ',', default_value = "train,test")]
    splits: Vec<Split>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Only the first N examples of each split.
    #[arg(long)]
    limit: Option<usize>,
    /// Only these checkpoint steps (comma-separated; default: all published).
    #[arg(long, value_delimiter = ',')]
    steps: Option<Vec<u64>>,
    /// Only the last of those checkpoints.
    #[arg(long)]
    last: bool,
    /// Sample as the run's own evaluation did: K, temperature, top-p, new
    /// tokens and kept texts from its spec's [eval] (run.json), so the rows
    /// without a preamble repeat the run's own; only --preamble is taken
    /// from here.
    #[arg(long, conflicts_with_all = ["samples", "temperature", "top_p", "max_new_tokens", "keep_samples"])]
    sampling_of_run: bool,
    /// Write only the rows with a preamble, for a run whose own evaluation
    /// has those without (its evaluators' files); use with
    /// --sampling-of-run. Rows sampled again in other batches can differ in
    /// the last bits, and the report refuses two rows of one example.
    #[arg(long, requires = "preambles")]
    preambles_only: bool,
    /// Evaluate again where results already exist (default: skip them).
    #[arg(long)]
    redo: bool,
}

pub fn run(args: EvalRunArgs) -> Result<()> {
    let sampling = &args.sampling;
    let device = parse_device(&sampling.device)?;
    let options = RunEvalOptions {
        splits: args.splits.clone(),
        sampling: sampling.sampling()?.clone(),
        sampling_of_run: args.sampling_of_run,
        preambles_only: args.preambles_only,
        batch_size: sampling.batch_size,
        limit: args.limit,
        steps: args.steps.clone(),
        last: args.last,
        redo: args.redo,
        cache_dir: sampling.cache_dir.clone(),
        device,
        kind: sampling.dtype.explicit(device),
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} {msg} [{bar:30}] {pos}/{len} examples",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let reports = evaluate_run(&args.run, &options, &|step, split, done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(format!("step {step} {}", split.name()));
    })?;
    bar.finish_and_clear();
    let (done, skipped): (Vec<_>, Vec<_>) = reports.iter().partition(|r| !r.skipped);
    for r in &done {
        println!(
            "step {:>8} {:<5} {} examples: accuracy {:.1}%",
            r.step,
            r.split.name(),
            r.examples,
            100.0 * r.accuracy.unwrap_or(f64::NAN)
        );
    }
    println!(
        "evaluated {} checkpoint splits of {}; {} already had results",
        done.len(),
        args.run,
        skipped.len()
    );
    Ok(())
}
