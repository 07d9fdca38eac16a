//! `premem plan`: the memory one trainer rank and one evaluator of a job
//! need, under each sharding, and whether it fits.

use std::path::PathBuf;

use anyhow::{Context, Result};
use premem_core::JobSpec;
use premem_core::spec::ByteSize;
use premem_core::spec::plan::{JobPlan, ModelShape, PlanSettings, WeightKind};
use premem_core::spec::{ActivationCheckpointing, Sharding};

#[derive(clap::Args)]
pub struct PlanArgs {
    /// The job spec (see examples/*.toml).
    job: PathBuf,
    /// Trainer ranks [default: the spec's cluster.trainers].
    #[arg(long)]
    world_size: Option<usize>,
    /// Memory of each GPU, e.g. 80GiB or 141GB [default: this host's CUDA
    /// devices, else the spec's train.gpu_memory; with neither the plan is
    /// printed without a fit check].
    #[arg(long)]
    gpu_memory: Option<ByteSize>,
    /// none, zero1, zero2, or auto: the least that fits [default: the spec's
    /// train.sharding].
    #[arg(long, value_enum)]
    sharding: Option<Sharding>,
    /// none or layers [default: the spec's train.activation_checkpointing].
    #[arg(long, value_enum)]
    activation_checkpointing: Option<ActivationCheckpointing>,
    /// Examples per forward/backward [default: the spec's
    /// train.micro_batch_size].
    #[arg(long)]
    micro_batch_size: Option<usize>,
    /// A config.json to size the model from, for a model.base that is not
    /// on this machine.
    #[arg(long)]
    model_config: Option<PathBuf>,
}

/// The spec with the flags applied, validated again as a whole (a world
/// size must still divide the batch, and so on).
fn spec_with_flags(args: &PlanArgs) -> Result<JobSpec> {
    let mut spec = JobSpec::from_file(&args.job)?;
    if let Some(world) = args.world_size {
        spec.cluster.trainers = world;
    }
    if let Some(sharding) = args.sharding {
        spec.train.sharding = sharding;
    }
    if let Some(checkpointing) = args.activation_checkpointing {
        spec.train.activation_checkpointing = checkpointing;
    }
    if let Some(micro) = args.micro_batch_size {
        spec.train.micro_batch_size = micro;
    }
    spec.check()
        .map_err(|m| anyhow::anyhow!("{} with the flags given: {m}", args.job.display()))?;
    Ok(spec)
}

pub fn run(args: PlanArgs) -> Result<()> {
    let spec = spec_with_flags(&args)?;
    let shape = match &args.model_config {
        Some(path) => ModelShape::from_file(path)?,
        None => ModelShape::for_model(&spec.model).with_context(|| {
            format!(
                "sizing the model of {} (give --model-config for a model that is elsewhere)",
                args.job.display()
            )
        })?,
    };
    let (cuda, local_memory) = crate::fit::local_target(&spec);
    let memory = args.gpu_memory.or(local_memory);
    // A memory given for a job on `auto` means planning for GPUs.
    let cuda = cuda || (memory.is_some() && spec.train.device != "cpu");
    let kind = WeightKind::for_precision(spec.train.precision, cuda);
    let plan = JobPlan::new(&shape, PlanSettings::for_job(&spec, kind), memory);
    if memory.is_none() || !cuda {
        print!("{}", plan.render());
        return Ok(());
    }
    let stage = plan.check(&shape, &spec.run.name)?;
    print!("{}", plan.render());
    println!("fits: train.sharding = \"{}\"", stage.name());
    Ok(())
}
