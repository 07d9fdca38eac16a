//! The state's answers in their wire form.

use std::time::Duration;

use premem_proto::v1;

use crate::state::{Action, Assignment, Completed, Job, Leased, Phase, Rendezvous};

/// The status of a job as the API reports it.
pub fn job_status(job: &Job) -> v1::JobStatus {
    let (state, message) = job_state(job);
    v1::JobStatus {
        job: job.name.clone(),
        state: state as i32,
        message,
        output: job.spec.run.output.clone(),
        step: job.step(),
        total_steps: job.total_steps,
        world_size: job.world_size(),
        ranks_alive: if job.group.running {
            job.group.members.len() as u32
        } else {
            0
        },
        generation: job.group.generation,
        tasks_pending: job.pending_tasks() as u32,
        tasks_leased: job.leased_tasks() as u32,
        tasks_done: job.done_tasks() as u32,
        checkpoints: checkpoint_statuses(job),
        advice: job.advice.lines(),
        stopped_early: job.early_stop.clone().unwrap_or_default(),
    }
}

/// Where the job is, and what it waits for or why it failed.
fn job_state(job: &Job) -> (v1::JobState, String) {
    use v1::JobState;
    match &job.phase {
        Phase::Cancelled => (JobState::Cancelled, "cancelled".to_string()),
        Phase::Failed(m) => (JobState::Failed, m.clone()),
        Phase::Active if job.complete() => (JobState::Done, String::new()),
        Phase::Active if job.trained => (
            JobState::Evaluating,
            format!(
                "{} evaluation tasks left",
                job.tasks_total() - job.done_tasks()
            ),
        ),
        Phase::Active if job.group.running => (JobState::Training, String::new()),
        Phase::Active => (
            JobState::Waiting,
            format!(
                "{} of {} trainer ranks registered (generation {})",
                job.group.members.len(),
                job.world_size(),
                job.group.generation
            ),
        ),
    }
}

fn checkpoint_statuses(job: &Job) -> Vec<v1::CheckpointStatus> {
    job.checkpoints()
        .iter()
        .map(|(&step, c)| {
            let pm = job.pm_by_step.get(&step);
            v1::CheckpointStatus {
                step,
                tasks_total: c.tasks(),
                tasks_done: c.done(),
                pm_accuracy: pm.and_then(|p| p.pm),
                train_accuracy: pm.map(|p| p.train_accuracy),
                memorized_fraction: pm.map(|p| p.memorized_fraction),
                test_accuracy: job.test.get(&step).map(|t| t.accuracy),
                test_perplexity: job.test.get(&step).map(|t| t.perplexity),
                distinct_fraction: job.test.get(&step).and_then(|t| t.distinct),
            }
        })
        .collect()
}

pub fn rendezvous(rendezvous: Rendezvous) -> v1::RendezvousReply {
    match rendezvous {
        Rendezvous::Waiting => v1::RendezvousReply::default(),
        Rendezvous::Ready {
            ring_addresses,
            nccl_id,
        } => v1::RendezvousReply {
            ready: true,
            ring_addresses,
            nccl_unique_id: nccl_id,
        },
    }
}

pub fn heartbeat(action: Action, generation: u64) -> v1::TrainerHeartbeatReply {
    let action = match action {
        Action::Continue => v1::TrainerAction::Continue,
        Action::Regroup => v1::TrainerAction::Regroup,
        Action::Stop => v1::TrainerAction::Stop,
        Action::Finish => v1::TrainerAction::Finish,
    };
    v1::TrainerHeartbeatReply {
        action: action as i32,
        generation,
    }
}

pub fn assignment(assignment: Assignment, retry_after: Duration) -> v1::AssignTrainerReply {
    match assignment {
        Assignment::Run { job, rank } => v1::AssignTrainerReply {
            assigned: true,
            job,
            rank,
            retry_after_ms: 0,
        },
        Assignment::Wait => v1::AssignTrainerReply {
            assigned: false,
            retry_after_ms: retry_after.as_millis() as u64,
            ..Default::default()
        },
    }
}

/// A leased task of `job`, or none (`retry_after`: when to ask again).
pub fn lease(
    leased: Option<(Leased, &Job)>,
    lease_ttl: Duration,
    retry_after: Duration,
) -> v1::LeaseTaskReply {
    let lease_ttl_ms = lease_ttl.as_millis() as u64;
    let Some((leased, job)) = leased else {
        return v1::LeaseTaskReply {
            task: None,
            lease_ttl_ms,
            retry_after_ms: retry_after.as_millis() as u64,
        };
    };
    let key = leased.key;
    let task = v1::Task {
        task_id: key.id(&leased.job),
        lease_id: leased.lease,
        job: leased.job,
        run: job.spec.run.output.clone(),
        step: key.step,
        split: key.split.name().to_string(),
        example_ids: leased.examples,
        result_file: key.result_file(),
    };
    v1::LeaseTaskReply {
        task: Some(task),
        lease_ttl_ms,
        retry_after_ms: 0,
    }
}

pub fn completion(completed: Completed) -> v1::CompleteTaskReply {
    let completion = match completed {
        Completed::Accepted => v1::Completion::Accepted,
        Completed::Duplicate => v1::Completion::Duplicate,
        Completed::Expired => v1::Completion::Expired,
    };
    v1::CompleteTaskReply {
        completion: completion as i32,
    }
}
