//! `premem submit`, `premem status`, `premem cancel`: a job on a running
//! coordinator.

use std::path::PathBuf;

use anyhow::Result;

use crate::client::{ConnectArgs, Jobs};
use crate::watch::print_status;

#[derive(clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The job spec (TOML).
    #[arg(long)]
    config: PathBuf,
}

#[derive(clap::Args)]
pub struct JobArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The job (its run name).
    #[arg(long)]
    job: String,
}

fn connect(connect: &ConnectArgs) -> Result<Jobs> {
    Ok(Jobs::connect(&connect.config()?)?.impatient())
}

pub fn submit(args: SubmitArgs) -> Result<()> {
    let spec = premem_core::JobSpec::from_file(&args.config)?;
    let created = connect(&args.connect)?.submit(&spec)?;
    println!(
        "job '{}' {}",
        spec.run.name,
        if created {
            "submitted"
        } else {
            "was already submitted"
        }
    );
    Ok(())
}

pub fn status(args: JobArgs) -> Result<()> {
    let mut jobs = connect(&args.connect)?;
    let status = jobs
        .status(&args.job)
        .map_err(|s| jobs.refused("asking for the status", &s))?;
    print_status(&status);
    Ok(())
}

pub fn cancel(args: JobArgs) -> Result<()> {
    let mut jobs = connect(&args.connect)?;
    jobs.cancel(&args.job)
        .map_err(|s| jobs.refused("cancelling the job", &s))?;
    println!("job '{}' cancelled", args.job);
    Ok(())
}
