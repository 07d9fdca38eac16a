//! `premem trainer`: one trainer rank of a job, or a pool trainer that the
//! coordinator assigns ranks of queued jobs.

use std::time::Duration;

use anyhow::Result;

use crate::client::ConnectArgs;
use crate::process::{host_name, stop_flag};

#[derive(clap::Args)]
pub struct TrainerArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Run this job (its run name) as --rank. Without --job the trainer joins
    /// the pool: the coordinator assigns it ranks of queued jobs, one after
    /// another (sweeps, curation).
    #[arg(long, requires = "rank")]
    job: Option<String>,
    /// This process's rank in --job, 0..cluster.trainers.
    #[arg(long, env = "PREMEM_RANK", requires = "job")]
    rank: Option<u32>,
    /// A pool trainer's name, unique in the cluster and the same when the
    /// process restarts, so that it gets its rank back (default: the host
    /// name, which is the pod name on Kubernetes).
    #[arg(long, conflicts_with = "job")]
    name: Option<String>,
    /// A pool trainer exits after this many seconds without an assignment
    /// (default: never).
    #[arg(long, conflicts_with = "job")]
    idle_exit: Option<f64>,
    /// Host the ring listener binds (an address the other ranks reach).
    #[arg(long, default_value = "127.0.0.1")]
    bind_host: String,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 2.0)]
    heartbeat: f64,
    /// Seconds to wait for the ring's neighbours to connect after a
    /// rendezvous, before the group regroups.
    #[arg(long, default_value_t = 60.0, value_parser = positive_seconds)]
    ring_timeout: f64,
    /// No progress bar on rank 0 (log lines instead).
    #[arg(long)]
    no_progress: bool,
    /// This process's index among the trainer ranks of its host (0..GPUs):
    /// with train.device auto or cuda it trains on cuda:LOCAL_RANK. `premem
    /// run` sets it for each rank; on Kubernetes, a pod with several GPUs
    /// sets it for each of its trainers.
    #[arg(long, env = "PREMEM_LOCAL_RANK", conflicts_with = "local_ranks")]
    local_rank: Option<usize>,
    /// Start this many pool trainers, one per GPU of the host (local ranks
    /// 0..N, named <name>-<local rank>), pass SIGTERM on to them and wait for
    /// all: the launcher of a pod that holds every GPU of a node.
    #[arg(long, conflicts_with = "job", value_parser = clap::value_parser!(u16).range(1..))]
    local_ranks: Option<u16>,
}

pub fn run(args: TrainerArgs) -> Result<()> {
    if let Some(ranks) = args.local_ranks {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let name = args.name.clone().unwrap_or_else(host_name);
        return crate::host_ranks::run(&argv, &name, ranks as usize);
    }
    let mut options = premem_trainer::node::NodeOptions {
        coordinator: args.connect.config()?,
        job: String::new(),
        rank: 0,
        trainer: String::new(),
        bind_host: args.bind_host.clone(),
        progress: !args.no_progress,
        stop: Some(stop_flag()?),
        heartbeat: Duration::from_secs_f64(args.heartbeat),
        connect_timeout: Duration::from_secs(600),
        ring_timeout: Duration::from_secs_f64(args.ring_timeout),
        local_rank: args.local_rank,
    };
    let (Some(job), Some(rank)) = (args.job.clone(), args.rank) else {
        options.trainer = args.name.clone().unwrap_or_else(host_name);
        options.progress = false;
        let name = options.trainer.clone();
        let summary = premem_trainer::node::run_pool(&premem_trainer::node::PoolOptions {
            node: options,
            idle_exit: args.idle_exit.map(Duration::from_secs_f64),
        })?;
        println!(
            "pool trainer '{name}': {} assignment(s) ended, {} failed",
            summary.runs.len(),
            summary.failures
        );
        return Ok(());
    };
    options.job = job;
    options.rank = rank;
    let summary = premem_trainer::node::run_node(&options)?;
    println!("rank {rank}: {}", summary.outcome());
    Ok(())
}

/// A number of seconds above 0.
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() => Ok(s),
        _ => Err(format!("'{text}': expected a number of seconds above 0")),
    }
}
