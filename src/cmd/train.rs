//! `premem train`: finetuning as a job spec says, in this process.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::process::stop_flag;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The job spec (see examples/*.toml).
    #[arg(long)]
    config: PathBuf,
    /// Continue from the newest complete checkpoint in run.output.
    #[arg(long)]
    resume: bool,
    /// No progress bar (log lines instead).
    #[arg(long)]
    no_progress: bool,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let spec = premem_core::JobSpec::from_file(&args.config)?;
    crate::fit::check_single_process(&spec)?;
    // First signal: finish the step, checkpoint, stop. A second one exits
    // at once (code 130).
    let stop = stop_flag()?;
    let options = premem_trainer::TrainOptions {
        resume: args.resume,
        progress: !args.no_progress,
        stop: Some(stop),
        lock_owner: None,
    };
    let summary = premem_trainer::train(&spec, &options, &mut premem_trainer::SingleProcess)?;
    if let Some(from) = summary.resumed_from {
        println!("resumed from step {from}");
    }
    for (step, accuracy) in &summary.monitor {
        println!(
            "step {step:>6}: greedy train accuracy {:.1}%",
            accuracy * 100.0
        );
    }
    println!(
        "{}, {:.0} tokens/s; output {}",
        summary.outcome(),
        summary.tokens_per_s,
        summary.output
    );
    if summary.interrupted {
        bail!(
            "interrupted at step {}: checkpoint written, continue with --resume",
            summary.steps
        );
    }
    Ok(())
}
