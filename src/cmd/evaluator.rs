//! `premem evaluator`: a worker that leases evaluation tasks.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::client::ConnectArgs;
use crate::device::{DType, parse_device};
use crate::process::{host_name, stop_flag};

#[derive(clap::Args)]
pub struct EvaluatorArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// A name for logs and metrics (default: host-pid).
    #[arg(long)]
    name: Option<String>,
    /// Local checkpoint cache.
    #[arg(long, default_value = "premem-cache")]
    cache_dir: PathBuf,
    /// Bound of the checkpoint cache, in GB.
    #[arg(long, default_value_t = 20.0)]
    cache_gb: f64,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long, value_enum, default_value_t = DType::Auto)]
    dtype: DType,
    /// Exit after this many seconds without work (default: never).
    #[arg(long)]
    idle_exit: Option<f64>,
    /// Fault injection for tests: hold each leased task this many seconds
    /// before evaluating it.
    #[arg(long, hide = true)]
    debug_hold_task: Option<f64>,
}

pub fn run(args: EvaluatorArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let kind = args.dtype.explicit(device);
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", host_name(), std::process::id()));
    let options = premem_evaluator::worker::WorkerOptions {
        coordinator: args.connect.config()?,
        name,
        cache_dir: args.cache_dir.clone(),
        cache_bytes: (args.cache_gb * 1e9) as u64,
        device,
        kind,
        stop: stop_flag()?,
        idle_exit: args.idle_exit.map(Duration::from_secs_f64),
        hold_task: args.debug_hold_task.map(Duration::from_secs_f64),
    };
    let summary = premem_evaluator::worker::run_worker(&options)?;
    println!("{summary:?}");
    Ok(())
}
