//! `premem trainer --local-ranks R`: one process per GPU of a host, started
//! and watched by this one — the launcher of a pod that holds all the GPUs
//! of a node (docs/deploy.md: one pod per node, so NCCL sees every GPU of
//! the node in one container and uses NVLink between them).

use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::stop_flag;

/// This command line's arguments for local rank `rank`: `--local-ranks`
/// and `--name` dropped (either form, `--flag v` or `--flag=v`), then
/// `--local-rank r --name <name>-<r>` added, so that each child is a pool
/// trainer of its own stable name (it gets its rank back after a restart).
pub fn child_args(argv: &[String], name: &str, rank: usize) -> Vec<String> {
    let mut out = vec![];
    let mut skip_value = false;
    for arg in argv {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let flag = arg.split('=').next().unwrap_or(arg);
        if flag == "--local-ranks" || flag == "--name" {
            skip_value = !arg.contains('=');
            continue;
        }
        out.push(arg.clone());
    }
    out.extend([
        "--local-rank".into(),
        rank.to_string(),
        "--name".into(),
        format!("{name}-{rank}"),
    ]);
    out
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: sending a signal to our own child.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

/// Starts `ranks` trainers (this binary, `argv` without its own name),
/// passes the first SIGTERM/SIGINT on to them (each checkpoints and stops),
/// and returns once all have exited: an error naming those that failed.
pub fn run(argv: &[String], name: &str, ranks: usize) -> Result<()> {
    let stop = stop_flag()?;
    let this = std::env::current_exe().context("finding this binary")?;
    let mut children = (0..ranks)
        .map(|rank| {
            Command::new(&this)
                .args(child_args(argv, name, rank))
                .spawn()
                .with_context(|| format!("starting local rank {rank}"))
        })
        .collect::<Result<Vec<Child>>>()?;
    let mut statuses = vec![None; ranks];
    let mut forwarded = false;
    while statuses.iter().any(Option::is_none) {
        if stop.load(Ordering::Relaxed) && !forwarded {
            children.iter().for_each(|c| signal(c, libc::SIGTERM));
            forwarded = true;
        }
        for (child, status) in children.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                *status = child.try_wait()?;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let failed: Vec<String> = statuses
        .iter()
        .enumerate()
        .filter_map(|(rank, s)| {
            s.filter(|s| !s.success())
                .map(|s| format!("{name}-{rank} ({s})"))
        })
        .collect();
    if !failed.is_empty() {
        bail!("local trainer(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_get_their_local_rank_and_name_and_not_the_launchers_flags() {
        let argv: Vec<String> = [
            "trainer",
            "--name",
            "pod-0",
            "--local-ranks=8",
            "--bind-host",
            "10.0.0.1",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            child_args(&argv, "pod-0", 3),
            [
                "trainer",
                "--bind-host",
                "10.0.0.1",
                "--local-rank",
                "3",
                "--name",
                "pod-0-3"
            ]
        );
        let spaced: Vec<String> = ["trainer", "--local-ranks", "2", "--name=x"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            child_args(&spaced, "x", 0),
            ["trainer", "--local-rank", "0", "--name", "x-0"]
        );
    }
}
