use std::time::{Duration, Instant};

use premem_core::Split;

use super::*;
use premem_core::testing::JobToml;

/// The job of these tests: two ranks, tasks of two examples.
fn spec_toml() -> JobToml {
    JobToml::default().with(
        r#"
[run]
name = "job"
output = "runs/job"
[train]
schedule = { type = "constant" }
[eval]
task_examples = 2
threshold = { perplexity = 1.5 }
max_attempts = 2
[cluster]
trainers = 2
"#,
    )
}

fn job(train: usize, test: usize, total_steps: u64) -> Job {
    let spec = spec_toml().spec();
    Job::new(
        spec,
        "{}".into(),
        Examples {
            train: (0..train).map(|i| format!("tr{i}")).collect(),
            test: (0..test).map(|i| format!("te{i}")).collect(),
        },
        (total_steps, 1),
    )
}

fn state_with(job: Job) -> State {
    let mut state = State::new(Timing {
        lease_ttl: Duration::from_secs(10),
        rank_ttl: Duration::from_secs(30),
    });
    assert!(state.insert_job(job).unwrap());
    state
}

/// Publishes the checkpoint of `step` of the job "job" now.
fn checkpoint(state: &mut State, step: u64) -> Vec<TaskKey> {
    state.checkpoint_published("job", step, Instant::now())
}

fn rows(ids: &[String], accuracy: f64, perplexity: f64) -> Vec<Row> {
    ids.iter()
        .map(|id| Row {
            id: id.clone(),
            accuracy,
            perplexity,
            distinct: None,
        })
        .collect()
}

#[test]
fn task_ids_round_trip_and_name_their_files() {
    let key = TaskKey {
        step: 64,
        split: Split::Test,
        index: 3,
    };
    assert_eq!(key.id("a/b"), "a/b/step-00000064/test-0003");
    assert_eq!(parse_task_id(&key.id("a/b")), Some(("a/b", key)));
    assert_eq!(key.result_file(), "results/step-00000064/test-0003.parquet");
    assert_eq!(parse_task_id("job/step-00000064/dev-0003"), None);
    assert_eq!(parse_task_id("nonsense"), None);
    // A split of more than 10,000 tasks: five digits, still one spelling.
    let big = TaskKey {
        index: 12345,
        ..key
    };
    assert_eq!(big.id("j"), "j/step-00000064/test-12345");
    assert_eq!(parse_task_id(&big.id("j")), Some(("j", big)));
    assert_eq!(parse_task_id("j/step-00000064/test-03"), None);
    assert_eq!(parse_task_id("j/step-00000064/test-00003"), None);
}

#[test]
fn a_checkpoint_becomes_fixed_size_tasks_train_first() {
    let mut state = state_with(job(5, 3, 10));
    let added = checkpoint(&mut state, 4);
    // 5 train examples in tasks of 2: 3 tasks; 3 test examples: 2 tasks.
    assert_eq!(added.len(), 5);
    assert!(checkpoint(&mut state, 4).is_empty());
    let now = Instant::now();
    let first = state.lease("e1", now).unwrap();
    assert_eq!((first.key.split, first.key.index), (Split::Train, 0));
    assert_eq!(first.examples, vec!["tr0", "tr1"]);
    let mut seen = vec![first.key];
    while let Some(l) = state.lease("e1", now) {
        seen.push(l.key);
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[3].split, Split::Test);
}

#[test]
fn a_completion_counts_once_and_expired_leases_are_ignored() {
    let mut state = state_with(job(2, 0, 10));
    checkpoint(&mut state, 4);
    let t0 = Instant::now();
    let first = state.lease("e1", t0).unwrap();
    let id = first.key.id("job");
    // The lease runs out; the task goes to another evaluator.
    assert_eq!(state.expire_leases(t0 + Duration::from_secs(11)), 1);
    assert!(
        !state
            .renew(&first.lease, &id, t0 + Duration::from_secs(11))
            .unwrap()
    );
    let second = state.lease("e2", t0 + Duration::from_secs(11)).unwrap();
    assert_eq!(second.key, first.key);
    let r = rows(&first.examples, 1.0, 2.0);
    let late = t0 + Duration::from_secs(12);
    assert_eq!(
        state.complete(&first.lease, &id, r.clone(), late).unwrap(),
        Completed::Expired
    );
    assert_eq!(
        state.complete(&second.lease, &id, r.clone(), late).unwrap(),
        Completed::Accepted
    );
    assert_eq!(
        state.complete(&second.lease, &id, r, late).unwrap(),
        Completed::Duplicate
    );
    assert_eq!(state.rows_accepted, 2);
    assert!(state.lease("e3", late).is_none());
}

#[test]
fn renewal_keeps_a_lease_alive() {
    let mut state = state_with(job(2, 0, 10));
    checkpoint(&mut state, 4);
    let t0 = Instant::now();
    let l = state.lease("e1", t0).unwrap();
    let id = l.key.id("job");
    assert!(
        state
            .renew(&l.lease, &id, t0 + Duration::from_secs(8))
            .unwrap()
    );
    assert_eq!(state.expire_leases(t0 + Duration::from_secs(12)), 0);
    assert_eq!(state.expire_leases(t0 + Duration::from_secs(19)), 1);
}

#[test]
fn an_evaluator_holding_a_lease_is_not_forgotten() {
    let mut state = state_with(job(2, 0, 10));
    checkpoint(&mut state, 4);
    let t0 = Instant::now();
    state.lease("busy", t0).unwrap();
    state.lease("idle", t0);
    // Ten lease TTLs (10 s) of silence: the idle one leaves the fleet.
    let late = t0 + Duration::from_secs(100);
    assert_eq!(state.forget_evaluators(late), 1);
    assert_eq!(state.evaluators.keys().collect::<Vec<_>>(), ["busy"]);
    // Once its lease has run out, so does the busy one.
    assert_eq!(state.expire_leases(late), 1);
    assert_eq!(state.forget_evaluators(late), 1);
    assert!(state.evaluators.is_empty());
}

#[test]
fn rows_must_match_the_task_exactly() {
    let mut state = state_with(job(2, 0, 10));
    checkpoint(&mut state, 4);
    let l = state.lease("e1", Instant::now()).unwrap();
    let id = l.key.id("job");
    let mut r = rows(&l.examples, 0.5, 2.0);
    assert!(state.check_rows(&id, &r).is_ok());
    r[1].id = "intruder".into();
    assert!(
        matches!(state.check_rows(&id, &r), Err(Refusal::Invalid(m)) if m.contains("intruder"))
    );
    let r = rows(&l.examples[..1], 0.5, 2.0);
    assert!(
        matches!(state.check_rows(&id, &r), Err(Refusal::Invalid(m)) if m.contains("has 2 examples"))
    );
    let mut r = rows(&l.examples, 0.5, 2.0);
    r[0].perplexity = 0.5;
    assert!(matches!(
        state.check_rows(&id, &r),
        Err(Refusal::Invalid(_))
    ));
    let mut r = rows(&l.examples, 0.5, 2.0);
    r[1] = r[0].clone();
    assert!(
        matches!(state.check_rows(&id, &r), Err(Refusal::Invalid(m)) if m.contains("two rows"))
    );
    assert!(matches!(
        state.check_rows("job/step-00000099/train-0000", &rows(&l.examples, 0.5, 2.0)),
        Err(Refusal::NotFound(_))
    ));
}

/// P-M accuracy by hand, p = 1.5, two examples:
///
/// | step | tr0 acc, ppl | tr1 acc, ppl | masked tr0, tr1 | PM tr0, tr1 | PM   |
/// |------|--------------|--------------|-----------------|-------------|------|
/// | 4    | 0.6, 3.0     | 0.2, 1.2     | 0.6, 0.0        | 0.6, 0.0    | 0.3  |
/// | 8    | 0.4, 1.1     | 1.0, 2.0     | 0.0, 1.0        | 0.4, 1.0    | 0.7  |
///
/// Step 8's results arrive first; P-M waits for step 4.
#[test]
fn pm_accuracy_folds_checkpoints_in_order_as_results_arrive() {
    let mut state = state_with(job(2, 0, 10));
    let now = Instant::now();
    for step in [4, 8] {
        checkpoint(&mut state, step);
    }
    let a = state.lease("e", now).unwrap();
    let b = state.lease("e", now).unwrap();
    assert_eq!((a.key.step, b.key.step), (4, 8));
    let row = |id: &str, accuracy, perplexity| Row {
        id: id.into(),
        accuracy,
        perplexity,
        distinct: None,
    };
    let step8 = vec![row("tr0", 0.4, 1.1), row("tr1", 1.0, 2.0)];
    state
        .complete(&b.lease, &b.key.id("job"), step8, now)
        .unwrap();
    assert!(state.job("job").unwrap().pm_by_step.is_empty());
    let step4 = vec![row("tr0", 0.6, 3.0), row("tr1", 0.2, 1.2)];
    state
        .complete(&a.lease, &a.key.id("job"), step4, now)
        .unwrap();
    let job = state.job("job").unwrap();
    let pm: Vec<(u64, f64)> = job
        .pm_by_step
        .iter()
        .map(|(s, p)| (*s, p.pm.unwrap()))
        .collect();
    assert_eq!(pm.len(), 2);
    assert!(
        (pm[0].1 - 0.3).abs() < 1e-12 && (pm[1].1 - 0.7).abs() < 1e-12,
        "{pm:?}"
    );
    assert!(!job.complete(), "training has not finished");
}

#[test]
fn ranks_form_a_generation_and_a_rejoin_starts_the_next() {
    let mut state = state_with(job(2, 0, 10));
    let now = Instant::now();
    let r0 = state
        .register("job", 0, "", "127.0.0.1:1".into(), vec![], now)
        .unwrap();
    assert_eq!(r0.generation, 1);
    assert_eq!(
        state.rendezvous("job", 0, "", 1, None, now).unwrap(),
        Rendezvous::Waiting
    );
    state
        .register("job", 1, "", "127.0.0.1:2".into(), vec![], now)
        .unwrap();
    assert_eq!(
        state.rendezvous("job", 1, "", 1, None, now).unwrap(),
        Rendezvous::Ready {
            ring_addresses: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            nccl_id: vec![]
        }
    );
    assert_eq!(
        state.heartbeat("job", 0, "", 1, 3, now).unwrap(),
        (Action::Continue, 1)
    );
    // Rank 1 dies and comes back: generation 2, rank 0 is told to regroup.
    let again = state
        .register("job", 1, "", "127.0.0.1:3".into(), vec![], now)
        .unwrap();
    assert_eq!(again.generation, 2);
    assert_eq!(
        state.heartbeat("job", 0, "", 1, 4, now).unwrap(),
        (Action::Regroup, 2)
    );
    assert!(matches!(
        state.rendezvous("job", 0, "", 1, None, now),
        Err(Refusal::Precondition(_))
    ));
    state
        .register("job", 0, "", "127.0.0.1:4".into(), vec![], now)
        .unwrap();
    assert!(matches!(
        state.rendezvous("job", 0, "", 2, None, now).unwrap(),
        Rendezvous::Ready { .. }
    ));
}

#[test]
fn a_silent_rank_regroups_the_job() {
    let mut state = state_with(job(2, 0, 10));
    let t0 = Instant::now();
    state
        .register("job", 0, "", "127.0.0.1:1".into(), vec![], t0)
        .unwrap();
    state
        .register("job", 1, "", "127.0.0.1:2".into(), vec![], t0)
        .unwrap();
    let later = t0 + Duration::from_secs(20);
    state.heartbeat("job", 0, "", 1, 5, later).unwrap();
    state.heartbeat("job", 1, "", 1, 5, later).unwrap();
    assert!(
        state
            .expire_ranks(later + Duration::from_secs(10))
            .is_empty()
    );
    state
        .heartbeat("job", 0, "", 1, 6, later + Duration::from_secs(25))
        .unwrap();
    assert_eq!(
        state.expire_ranks(later + Duration::from_secs(31)),
        vec!["job"]
    );
    assert_eq!(
        state
            .heartbeat("job", 0, "", 1, 6, later + Duration::from_secs(31))
            .unwrap()
            .0,
        Action::Regroup
    );
}

#[test]
fn out_of_range_ranks_and_unknown_jobs_are_refused() {
    let mut state = state_with(job(2, 0, 10));
    let now = Instant::now();
    assert!(matches!(
        state.register("job", 2, "", "127.0.0.1:1".into(), vec![], now),
        Err(Refusal::Invalid(m)) if m.contains("rank 2 out of range")
    ));
    assert!(matches!(
        state.heartbeat("job", 7, "", 1, 0, now),
        Err(Refusal::Invalid(_))
    ));
    assert!(matches!(
        state.register("nope", 0, "", "127.0.0.1:1".into(), vec![], now),
        Err(Refusal::NotFound(_))
    ));
    assert!(state.job("job").unwrap().group.members.is_empty());
}

#[test]
fn a_task_failing_too_often_fails_the_job() {
    let mut state = state_with(job(2, 0, 10));
    checkpoint(&mut state, 4);
    let now = Instant::now();
    let l = state.lease("e", now).unwrap();
    state.fail(&l.lease, &l.key.id("job"), "boom", now).unwrap();
    assert_eq!(state.job("job").unwrap().phase, Phase::Active);
    let l = state.lease("e", now).unwrap();
    state
        .fail(&l.lease, &l.key.id("job"), "boom again", now)
        .unwrap();
    assert!(
        matches!(&state.job("job").unwrap().phase, Phase::Failed(m) if m.contains("boom again"))
    );
    assert!(state.lease("e", now).is_none());
}

#[test]
fn a_job_is_complete_when_trained_and_every_task_is_done() {
    let mut state = state_with(job(2, 1, 8));
    let now = Instant::now();
    checkpoint(&mut state, 8);
    assert!(
        state.job("job").unwrap().trained,
        "the final step's checkpoint ends training"
    );
    while let Some(l) = state.lease("e", now) {
        let r = rows(&l.examples, 1.0, 1.0);
        state.complete(&l.lease, &l.key.id("job"), r, now).unwrap();
    }
    let job = state.job("job").unwrap();
    assert!(job.complete());
    assert_eq!(job.test[&8].accuracy, 1.0);
    // Memorized everywhere: P-M accuracy 0 although accuracy is 1.
    assert_eq!(job.pm_by_step[&8].pm, Some(0.0));
}

#[test]
fn nccl_ranks_meet_once_rank_0_sent_its_id() {
    let mut state = state_with(job(2, 0, 10));
    let now = Instant::now();
    state
        .register("job", 0, "", "127.0.0.1:1".into(), vec![], now)
        .unwrap();
    state
        .register("job", 1, "", "127.0.0.1:2".into(), vec![], now)
        .unwrap();
    // Rank 1 is early: rank 0 has not sent its id yet.
    assert_eq!(
        state.rendezvous("job", 1, "", 1, Some(&[]), now).unwrap(),
        Rendezvous::Waiting
    );
    assert!(matches!(
        state.rendezvous("job", 0, "", 1, Some(&[]), now),
        Err(Refusal::Invalid(_))
    ));
    let ready = state
        .rendezvous("job", 0, "", 1, Some(&[7; 128]), now)
        .unwrap();
    assert!(matches!(ready, Rendezvous::Ready { ref nccl_id, .. } if nccl_id == &vec![7; 128]));
    assert_eq!(
        state.rendezvous("job", 1, "", 1, Some(&[]), now).unwrap(),
        ready
    );
    // A new generation needs a new id.
    state
        .register("job", 1, "", "127.0.0.1:3".into(), vec![], now)
        .unwrap();
    state
        .register("job", 0, "", "127.0.0.1:4".into(), vec![], now)
        .unwrap();
    assert_eq!(
        state.rendezvous("job", 1, "", 2, Some(&[]), now).unwrap(),
        Rendezvous::Waiting
    );
}

/// A job named `name` of world size `trainers`.
fn named_job(name: &str, trainers: usize) -> Job {
    let mut job = job(4, 2, 8);
    job.name = name.into();
    job.spec.run.name = name.into();
    job.spec.run.output = format!("runs/{name}");
    job.spec.cluster.trainers = trainers;
    job
}

fn run(job: &str, rank: u32) -> Assignment {
    Assignment::Run {
        job: job.into(),
        rank,
    }
}

#[test]
fn pool_packs_jobs_onto_idle_trainers_in_submission_order() {
    let now = Instant::now();
    let mut state = state_with(named_job("a", 2));
    state.insert_job(named_job("b", 1)).unwrap();
    state.insert_job(named_job("c", 2)).unwrap();
    // One idle trainer: "a" (2 ranks) does not fit, "b" (1 rank) does.
    assert_eq!(state.assign("t0", now).unwrap(), run("b", 0));
    // t1 alone cannot start "a" or "c" either.
    assert_eq!(state.assign("t1", now).unwrap(), Assignment::Wait);
    // t2 makes two idle trainers: "a" starts; t1 gets its other rank
    // before "c" is considered.
    assert_eq!(state.assign("t2", now).unwrap(), run("a", 0));
    assert_eq!(state.assign("t1", now).unwrap(), run("a", 1));
    assert_eq!(state.assign("t3", now).unwrap(), Assignment::Wait);
    // Asking again while the job runs gives the same rank back.
    assert_eq!(state.assign("t2", now).unwrap(), run("a", 0));
    assert_eq!(state.assign("t0", now).unwrap(), run("b", 0));
    // "b" trained: t0 is free, and with t3 idle "c" starts.
    state.trainer_finished("b", 0, 1, 8).unwrap();
    assert_eq!(state.assign("t0", now).unwrap(), run("c", 0));
    assert_eq!(state.assign("t3", now).unwrap(), run("c", 1));
    assert_eq!(state.jobs["b"].assigned.len(), 0);
    assert_eq!(state.jobs["c"].assigned.len(), 2);
}

#[test]
fn a_silent_pool_trainer_loses_its_rank_to_the_next_idle_one() {
    let t0 = Instant::now();
    let mut state = state_with(named_job("a", 2));
    assert_eq!(state.assign("x", t0).unwrap(), Assignment::Wait);
    assert_eq!(state.assign("y", t0).unwrap(), run("a", 0));
    assert_eq!(state.assign("x", t0).unwrap(), run("a", 1));
    state
        .register("a", 0, "y", "127.0.0.1:1".into(), vec![], t0)
        .unwrap();
    state
        .register("a", 1, "x", "127.0.0.1:2".into(), vec![], t0)
        .unwrap();
    // A trainer started for the job cannot take a pool trainer's rank.
    let refused = state
        .register("a", 1, "", "127.0.0.1:3".into(), vec![], t0)
        .unwrap_err();
    assert!(
        matches!(&refused, Refusal::Precondition(m) if m.contains("assigned to pool trainer 'x'")),
        "{refused:?}"
    );
    // y keeps heartbeating; x goes silent past the rank TTL (30 s).
    let later = t0 + Duration::from_secs(31);
    state.heartbeat("a", 0, "y", 1, 3, later).unwrap();
    assert_eq!(state.expire_pool(later), vec!["x".to_string()]);
    assert_eq!(
        state.jobs["a"].assigned.keys().copied().collect::<Vec<_>>(),
        vec![0]
    );
    // The next trainer that asks gets rank 1, though it alone is idle.
    assert_eq!(state.assign("z", later).unwrap(), run("a", 1));
    // x comes back: its heartbeat is told to regroup, its registration is
    // refused, and asking again gives it nothing to do.
    let (action, _) = state.heartbeat("a", 1, "x", 1, 3, later).unwrap();
    assert_eq!(action, Action::Regroup);
    assert!(
        state
            .register("a", 1, "x", "127.0.0.1:4".into(), vec![], later)
            .is_err()
    );
    assert_eq!(state.assign("x", later).unwrap(), Assignment::Wait);
}

#[test]
fn after_a_restart_running_pool_trainers_reclaim_their_ranks_first() {
    let now = Instant::now();
    let mut state = state_with(named_job("a", 2));
    state.assign_after = Some(now + Duration::from_secs(30));
    // An idle trainer gets nothing during the grace period...
    assert_eq!(state.assign("idle", now).unwrap(), Assignment::Wait);
    // ...while the trainers that ran "a" re-adopt their ranks by heartbeat.
    state.heartbeat("a", 0, "p", 1, 5, now).unwrap();
    state.heartbeat("a", 1, "q", 1, 5, now).unwrap();
    assert_eq!(state.assign("p", now).unwrap(), run("a", 0));
    let later = now + Duration::from_secs(31);
    assert_eq!(state.assign("idle", later).unwrap(), Assignment::Wait);
    assert_eq!(state.jobs["a"].assigned.len(), 2);
}

#[test]
fn jobs_with_dedicated_trainers_and_cancelled_jobs_get_no_pool_trainers() {
    let now = Instant::now();
    let mut state = state_with(named_job("a", 1));
    state.insert_job(named_job("b", 1)).unwrap();
    state
        .register("a", 0, "", "127.0.0.1:1".into(), vec![], now)
        .unwrap();
    assert!(state.jobs["a"].dedicated);
    assert_eq!(state.assign("t", now).unwrap(), run("b", 0));
    state.cancel("b").unwrap();
    assert_eq!(state.assign("t", now).unwrap(), Assignment::Wait);
    assert!(state.jobs["b"].assigned.is_empty());
}

#[test]
fn tasks_are_leased_in_the_order_their_checkpoints_appeared() {
    let now = Instant::now();
    let mut state = state_with(named_job("a", 1));
    state.insert_job(named_job("b", 1)).unwrap();
    // "b" publishes first, though "a" was submitted first.
    state.checkpoint_published("b", 4, now);
    let later = now + Duration::from_millis(2);
    state.checkpoint_published("a", 4, later);
    let first = state.lease("e", now).unwrap();
    assert_eq!((first.job.as_str(), first.key.step), ("b", 4));
    // Every task of b's checkpoint goes before a's.
    let mut jobs = vec![first.job];
    while let Some(leased) = state.lease("e", now) {
        jobs.push(leased.job);
    }
    let switch = jobs.iter().position(|j| j == "a").unwrap();
    assert!(jobs[..switch].iter().all(|j| j == "b"));
    assert!(jobs[switch..].iter().all(|j| j == "a"), "{jobs:?}");
}

/// Leases and completes every pending task with the same rows' values.
fn complete_pending(state: &mut State, accuracy: f64, perplexity: f64, now: Instant) {
    while let Some(l) = state.lease("e", now) {
        let r = rows(&l.examples, accuracy, perplexity);
        assert_eq!(
            state.complete(&l.lease, &l.key.id("job"), r, now).unwrap(),
            Completed::Accepted
        );
    }
}

fn job_with_advice(advice: &str, total_steps: u64) -> Job {
    let spec = spec_toml().with(&format!("[advice]\n{advice}")).spec();
    let mut job = job(2, 2, total_steps);
    job.spec = spec;
    job
}

/// P-M that does not grow from one checkpoint to the next (stall over one
/// checkpoint, any train gain): the rule fires at the second checkpoint.
const STALL: &str = "stall_checkpoints = 1\npm_gain = 0.5\ntrain_gain = 0.0\n";

#[test]
fn a_stalled_pm_with_stop_when_memorized_finishes_the_run_early() {
    let mut state = state_with(job_with_advice(
        &format!("{STALL}stop_when = \"memorized\""),
        20,
    ));
    let now = Instant::now();
    for (rank, ring) in [(0, "127.0.0.1:1"), (1, "127.0.0.1:2")] {
        state
            .register("job", rank, "", ring.into(), vec![], now)
            .unwrap();
    }
    checkpoint(&mut state, 4);
    complete_pending(&mut state, 0.5, 2.0, now);
    assert!(state.job("job").unwrap().early_stop.is_none());
    assert_eq!(
        state.heartbeat("job", 0, "", 1, 6, now).unwrap(),
        (Action::Continue, 1)
    );
    checkpoint(&mut state, 8);
    complete_pending(&mut state, 0.5, 2.0, now);
    let job = state.job("job").unwrap();
    assert_eq!(job.advice.findings.len(), 1, "{:?}", job.advice);
    let reason = job.early_stop.clone().expect("the rule fired");
    assert!(
        reason.contains("stop_when = \"memorized\"") && reason.contains("P-M stalled"),
        "{reason}"
    );
    for rank in [0, 1] {
        assert_eq!(
            state.heartbeat("job", rank, "", 1, 9, now).unwrap(),
            (Action::Finish, 1)
        );
    }
    // The ranks stop after step 9 and report it: the run ends there.
    checkpoint(&mut state, 9);
    state.trainer_finished("job", 0, 1, 9).unwrap();
    state.trainer_finished("job", 1, 1, 9).unwrap();
    assert_eq!(state.job("job").unwrap().total_steps, 9);
    complete_pending(&mut state, 0.5, 2.0, now);
    assert!(state.job("job").unwrap().complete());
    // A finish at another step than the stop's is still refused.
    assert!(state.trainer_finished("job", 0, 1, 20).is_err());
}

#[test]
fn without_stop_when_the_advice_only_warns() {
    let mut state = state_with(job_with_advice(STALL, 20));
    let now = Instant::now();
    for (rank, ring) in [(0, "127.0.0.1:1"), (1, "127.0.0.1:2")] {
        state
            .register("job", rank, "", ring.into(), vec![], now)
            .unwrap();
    }
    for step in [4, 8] {
        checkpoint(&mut state, step);
        complete_pending(&mut state, 0.5, 2.0, now);
    }
    let job = state.job("job").unwrap();
    assert_eq!(job.advice.findings[0].rule(), "pm-stalled");
    assert_eq!(job.advice.keep.as_ref().map(|k| k.step), Some(4));
    assert!(job.early_stop.is_none());
    let views = job.checkpoint_views();
    assert_eq!(views.len(), 2);
    assert_eq!(
        (views[1].test_accuracy, views[1].test_perplexity),
        (Some(0.5), Some(2.0))
    );
    assert_eq!(
        state.heartbeat("job", 0, "", 1, 9, now).unwrap(),
        (Action::Continue, 1)
    );
}

/// The job's counts, the checkpoints' progress and the queue's indexes
/// equal what a scan of every task finds.
fn assert_indexes_match_a_scan(state: &State) {
    let mut pending_active = 0;
    let mut leased = 0;
    let mut held: BTreeMap<String, usize> = BTreeMap::new();
    for job in state.jobs.values() {
        let (mut p, mut l, mut d) = (0, 0, 0);
        let mut progress: BTreeMap<(u64, Split), (u32, u32)> = BTreeMap::new();
        for (key, task) in &job.tasks {
            let entry = progress.entry((key.step, key.split)).or_default();
            entry.0 += 1;
            match &task.state {
                TaskState::Pending => p += 1,
                TaskState::Leased { evaluator, .. } => {
                    l += 1;
                    *held.entry(evaluator.clone()).or_default() += 1;
                }
                TaskState::Done => {
                    d += 1;
                    entry.1 += 1;
                }
            }
        }
        assert_eq!(
            (job.pending_tasks(), job.leased_tasks(), job.done_tasks()),
            (p, l, d),
            "job {}",
            job.name
        );
        for ((step, split), (tasks, done)) in progress {
            let c = job.checkpoints()[&step].progress(split);
            assert_eq!(
                (c.tasks, c.done),
                (tasks, done),
                "{} {step} {split:?}",
                job.name
            );
        }
        if job.phase == Phase::Active {
            pending_active += p;
        }
        leased += l;
    }
    assert_eq!(state.queue.pending(), pending_active);
    assert_eq!(state.queue.leased(), leased);
    for (evaluator, n) in held {
        assert_eq!(state.queue.held_by(&evaluator), n, "{evaluator}");
    }
}

#[test]
fn the_indexes_follow_every_transition_of_a_random_history() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let t0 = Instant::now();
    let mut state = state_with(named_job("a", 1));
    state.insert_job(named_job("b", 1)).unwrap();
    state.insert_job(named_job("c", 1)).unwrap();
    let mut held: Vec<Leased> = vec![];
    for i in 0..2000u64 {
        let now = t0 + Duration::from_millis(i * 50);
        let job = ["a", "b", "c"][rng.random_range(0..3)];
        if i == 1500 {
            state.cancel("c").unwrap();
        }
        match rng.random_range(0..10) {
            0 => {
                state.checkpoint_published(job, rng.random_range(1..6) * 4, now);
            }
            1 | 2 => held.extend(state.lease(&format!("e{}", i % 5), now)),
            3 => {
                state.expire_leases(now);
            }
            4 if !held.is_empty() => {
                let l = held.swap_remove(rng.random_range(0..held.len()));
                state.renew(&l.lease, &l.key.id(&l.job), now).unwrap();
                held.push(l);
            }
            5 if !held.is_empty() => {
                let l = held.swap_remove(rng.random_range(0..held.len()));
                state.fail(&l.lease, &l.key.id(&l.job), "x", now).unwrap();
            }
            _ if !held.is_empty() => {
                let l = held.swap_remove(rng.random_range(0..held.len()));
                let r = rows(&l.examples, 0.5, 2.0);
                let id = l.key.id(&l.job);
                state.complete(&l.lease, &id, r, now).unwrap();
            }
            _ => {}
        }
        assert_indexes_match_a_scan(&state);
    }
    // The history did exercise the rules.
    let done: usize = state.jobs.values().map(|j| j.done_tasks()).sum();
    assert!(done > 20, "{done} done");
    assert!(state.jobs["c"].phase != Phase::Active);
}

#[test]
fn a_test_completion_folds_only_its_checkpoint_and_p_m_waits_for_earlier_train_tasks() {
    let mut state = state_with(job(2, 2, 8));
    let now = Instant::now();
    checkpoint(&mut state, 4);
    checkpoint(&mut state, 8);
    let mut leased = vec![];
    while let Some(l) = state.lease("e", now) {
        leased.push(l);
    }
    // Finish everything of step 8 first: its test split folds, its P-M
    // waits for step 4's train task.
    leased.sort_by_key(|l| std::cmp::Reverse(l.key));
    for l in leased {
        let id = l.key.id("job");
        state
            .complete(&l.lease, &id, rows(&l.examples, 1.0, 2.0), now)
            .unwrap();
        let job = state.job("job").unwrap();
        if l.key.step == 8 {
            assert!(job.pm_by_step.is_empty());
            let heatmap = &job.checkpoints()[&4].train_accuracy;
            assert!(heatmap.len() == 2 && heatmap.iter().all(|a| a.is_nan()));
        }
        if l.key
            == (TaskKey {
                step: 8,
                split: Split::Test,
                index: 0,
            })
        {
            assert!(job.test.contains_key(&8) && !job.test.contains_key(&4));
        }
    }
    let job = state.job("job").unwrap();
    assert_eq!(
        job.pm_by_step.keys().copied().collect::<Vec<_>>(),
        vec![4, 8]
    );
    // The folded tasks keep no rows; their checkpoints, the accuracies.
    assert!(job.tasks.values().all(|t| t.rows.is_empty()));
    for checkpoint in job.checkpoints().values() {
        assert_eq!(checkpoint.train_accuracy, vec![1.0, 1.0]);
    }
    assert_eq!(
        job.task_examples(TaskKey {
            step: 4,
            split: Split::Test,
            index: 0
        }),
        ["te0", "te1"]
    );
}
