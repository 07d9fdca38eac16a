//! What a token holder cannot make the coordinator believe (issue 18): a
//! real server and real clients, forging the calls of trainer ranks that
//! are not members, and re-registering a live rank over and over.

mod common;

use std::time::Duration;

use common::*;
use premem_coordinator::{Timing, start};
use premem_proto::v1::{self, JobState, TrainerAction};
use tonic::Code;

/// Finding 4: a TrainerFinished, heartbeat, rendezvous or checkpoint report
/// that does not present the member secret of its rank and generation is
/// refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_calls_of_non_members_are_refused_and_change_nothing() {
    let fixture = Fixture::new();
    let running = start(fixture.options()).await.unwrap();
    let mut client = connect(&running);
    submit(&mut client, fixture.spec_json()).await;
    let (r0, r1) = register_both(&mut client).await;
    assert_ne!(r0.member_secret, r1.member_secret);
    heartbeat(&mut client, 0, &r0, 5).await;

    let finished = |rank, generation, secret: &str| v1::TrainerFinishedRequest {
        job: JOB.into(),
        rank,
        generation,
        step: 8,
        member_secret: secret.into(),
    };
    for (rank, generation, secret, why) in [
        (1, 1, "", "no member secret"),
        (1, 1, r0.member_secret.as_str(), "not the member secret"),
        (1, 7, r1.member_secret.as_str(), "generation 7"),
        (0, 1, "00ff", "not the member secret"),
    ] {
        let forged = client
            .trainer_finished(finished(rank, generation, secret))
            .await;
        assert_refused(forged, Code::PermissionDenied, why);
    }
    let outside = client.trainer_finished(finished(2, 1, "")).await;
    assert_refused(outside, Code::InvalidArgument, "rank 2");
    let forged_heartbeat = client
        .trainer_heartbeat(v1::TrainerHeartbeatRequest {
            job: JOB.into(),
            rank: 1,
            generation: 99,
            step: 8,
            ..Default::default()
        })
        .await;
    assert_refused(forged_heartbeat, Code::PermissionDenied, "generation 99");
    let forged_report = client
        .report_checkpoint(v1::ReportCheckpointRequest {
            job: JOB.into(),
            rank: 0,
            generation: 1,
            step: 8,
            member_secret: r1.member_secret.clone(),
        })
        .await;
    assert_refused(forged_report, Code::PermissionDenied, "rank 0");
    let forged_rendezvous = client
        .rendezvous(v1::RendezvousRequest {
            job: JOB.into(),
            rank: 1,
            generation: 1,
            ..Default::default()
        })
        .await;
    assert_refused(forged_rendezvous, Code::PermissionDenied, "rank 1");

    // Before the fix the forged TrainerFinished marked the job trained
    // ("evaluating, step 8/8" before rank 1 trained a step) and the forged
    // heartbeat moved the group to generation 99.
    let s = status(&mut client).await;
    assert_eq!(
        (s.state(), s.step, s.generation, s.ranks_alive),
        (JobState::Training, 0, 1, 2),
        "{s:?}"
    );
    // The members' own calls go on.
    assert_eq!(
        heartbeat(&mut client, 1, &r1, 5).await,
        (TrainerAction::Continue, 1)
    );
    running.stop().await.unwrap();
}

/// Finding 5: re-registering a live rank over and over no longer starts a
/// generation each time; the member itself may, and a new process takes a
/// rank once its member has been silent for the rank TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_registering_a_live_rank_is_refused_until_its_member_is_silent() {
    let fixture = Fixture::new();
    let mut options = fixture.options();
    options.timing = Timing {
        lease_ttl: Duration::from_secs(60),
        rank_ttl: Duration::from_millis(1500),
    };
    // Only this test's calls change the group (no scan expires a rank).
    options.scan_interval = Duration::from_secs(3600);
    let running = start(options).await.unwrap();
    let mut client = connect(&running);
    submit(&mut client, fixture.spec_json()).await;
    let (r0, r1) = register_both(&mut client).await;
    for i in 0..30 {
        let again = register(&mut client, JOB, 1, &format!("127.0.0.1:{}", 8000 + i)).await;
        assert_refused(again, Code::Unavailable, "live member of generation 1");
        // A member's stale secret is no better than none.
        let stale = register_as(&mut client, JOB, 1, "127.0.0.1:7999", Some(&r0)).await;
        assert_refused(stale, Code::Unavailable, "live member");
    }
    assert_eq!(
        heartbeat(&mut client, 0, &r0, 3).await,
        (TrainerAction::Continue, 1)
    );
    let s = status(&mut client).await;
    assert_eq!((s.generation, s.ranks_alive), (1, 2), "{s:?}");
    // The rendezvous still hands out the real ring.
    let ring = client
        .rendezvous(v1::RendezvousRequest {
            job: JOB.into(),
            rank: 1,
            generation: 1,
            member_secret: r1.member_secret.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ring.ring_addresses, ["127.0.0.1:7000", "127.0.0.1:7001"]);

    // Rank 0 keeps beating; rank 1 falls silent, and a new process for
    // rank 1 is taken once it has been silent for the rank TTL.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(450)).await;
        heartbeat(&mut client, 0, &r0, 3).await;
    }
    let replacement = register(&mut client, JOB, 1, "127.0.0.1:7101")
        .await
        .unwrap();
    assert_eq!(replacement.generation, 2);
    // The old generation's member learns it was superseded.
    let superseded = client
        .rendezvous(v1::RendezvousRequest {
            job: JOB.into(),
            rank: 0,
            generation: 1,
            member_secret: r0.member_secret.clone(),
            ..Default::default()
        })
        .await;
    assert_refused(superseded, Code::FailedPrecondition, "superseded");
    running.stop().await.unwrap();
}

/// Finding 14: after a restart, a trained job's ranks are not shown as
/// alive forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trained_job_has_no_live_ranks_after_a_restart() {
    let fixture = Fixture::new();
    let running = start(fixture.options()).await.unwrap();
    let mut client = connect(&running);
    submit(&mut client, fixture.spec_json()).await;
    let (r0, r1) = register_both(&mut client).await;
    fixture.publish(8);
    for (rank, member) in [(0, &r0), (1, &r1)] {
        client
            .trainer_finished(v1::TrainerFinishedRequest {
                job: JOB.into(),
                rank,
                generation: 1,
                step: 8,
                member_secret: member.member_secret.clone(),
            })
            .await
            .unwrap();
    }
    let s = wait_for_tasks(&mut client, 3).await;
    assert_eq!((s.state(), s.ranks_alive), (JobState::Evaluating, 0));
    running.stop().await.unwrap();

    let running = start(fixture.options()).await.unwrap();
    let mut client = connect(&running);
    let s = wait_for_tasks(&mut client, 3).await;
    // Before the fix: "ranks 2/2", for as long as the job lived.
    assert_eq!(
        (s.state(), s.ranks_alive),
        (JobState::Evaluating, 0),
        "{s:?}"
    );
    running.stop().await.unwrap();
}

const SUBMIT: &str = "submit-token-0123456789";
const READ: &str = "read-token-0123456789";
const TRAINER: &str = "trainer-token-0123456789";
const EVALUATOR: &str = "evaluator-token-0123456789";

/// Finding 8, roles: each role token reaches its own calls only; the
/// cluster token all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_token_reaches_its_own_calls_only() {
    use premem_proto::Role;
    let fixture = Fixture::new();
    let mut options = fixture.options();
    options.role_tokens = vec![
        (SUBMIT.into(), Role::Submit),
        (READ.into(), Role::Read),
        (TRAINER.into(), Role::Trainer),
        (EVALUATOR.into(), Role::Evaluator),
    ];
    options.metrics_listen = Some("127.0.0.1:0".into());
    let running = start(options).await.unwrap();
    let (mut submitter, mut reader) = (connect_as(&running, SUBMIT), connect_as(&running, READ));
    let (mut trainer, mut evaluator) = (
        connect_as(&running, TRAINER),
        connect_as(&running, EVALUATOR),
    );
    let spec_json = fixture.spec_json();
    let submit = |spec_json: &str| v1::SubmitJobRequest {
        spec_json: spec_json.into(),
    };
    for client in [&mut reader, &mut trainer, &mut evaluator] {
        let refused = client.submit_job(submit(&spec_json)).await;
        assert_refused(refused, Code::PermissionDenied, "SubmitJob needs");
    }
    submitter.submit_job(submit(&spec_json)).await.unwrap();
    assert_eq!(status(&mut reader).await.state(), JobState::Waiting);
    assert_eq!(status(&mut submitter).await.state(), JobState::Waiting);
    for client in [&mut trainer, &mut evaluator] {
        let refused = client
            .get_status(v1::GetStatusRequest { job: JOB.into() })
            .await;
        assert_refused(refused, Code::PermissionDenied, "the read role");
    }
    for client in [&mut submitter, &mut reader, &mut evaluator] {
        let refused = register(client, JOB, 0, "127.0.0.1:7000").await;
        assert_refused(refused, Code::PermissionDenied, "RegisterTrainer needs");
    }
    let r0 = register(&mut trainer, JOB, 0, "127.0.0.1:7000")
        .await
        .unwrap();
    let lease = |client: &mut premem_proto::Client| {
        let mut client = client.clone();
        async move {
            client
                .lease_task(v1::LeaseTaskRequest {
                    evaluator: "e".into(),
                })
                .await
        }
    };
    for client in [&mut submitter, &mut reader, &mut trainer] {
        assert_refused(
            lease(client).await,
            Code::PermissionDenied,
            "LeaseTask needs",
        );
    }
    assert!(lease(&mut evaluator).await.is_ok());
    let cancel = v1::CancelJobRequest { job: JOB.into() };
    for client in [&mut reader, &mut trainer, &mut evaluator] {
        let refused = client.cancel_job(cancel.clone()).await;
        assert_refused(refused, Code::PermissionDenied, "CancelJob needs");
    }
    // The cluster token holds every role.
    let mut cluster = connect(&running);
    assert_eq!(
        heartbeat(&mut cluster, 0, &r0, 1).await,
        (TrainerAction::Continue, 1)
    );
    cluster.cancel_job(cancel).await.unwrap();

    let metrics = running.metrics_address.unwrap();
    let scrape = |token| http_get_as(metrics, "/metrics", token);
    assert!(scrape(Some(READ)).await.contains("premem_"));
    assert!(scrape(Some(TRAINER)).await.starts_with("HTTP/1.0 403"));
    assert!(
        scrape(Some("nobody-knows-this"))
            .await
            .starts_with("HTTP/1.0 401")
    );
    running.stop().await.unwrap();
}

/// Finding 8, prefixes: with `--allow-prefix`, a job naming a location
/// outside the prefixes is refused before anything is opened, with the
/// same answer whether or not the location exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_prefixes_confine_jobs_and_disclose_nothing_outside() {
    let fixture = Fixture::new();
    let mut options = fixture.options();
    let root = fixture.dir.path().display().to_string();
    options.allow_prefixes = premem_coordinator::AllowedPrefixes::new(vec![root.clone()]).unwrap();
    let running = start(options).await.unwrap();
    let mut client = connect(&running);
    let mut spec = fixture.spec(2);
    spec["model"]["config"] = fixture.path("tiny.json").into();
    spec["model"]["tokenizer"] = fixture.path("tokenizer.json").into();
    let submit = |spec: serde_json::Value| v1::SubmitJobRequest {
        spec_json: spec.to_string(),
    };
    let exists = std::env::current_exe().unwrap().display().to_string();
    for (setting, pointer, location) in [
        ("run.output", "/run/output", "/".to_string()),
        ("run.output", "/run/output", format!("{root}/../elsewhere")),
        ("data.train.path", "/data/train/path", exists.clone()),
        (
            "data.train.path",
            "/data/train/path",
            format!("{exists}.missing"),
        ),
        ("model.config", "/model/config", "tiny.json".to_string()),
    ] {
        let mut bad = spec.clone();
        *bad.pointer_mut(pointer).unwrap() = location.clone().into();
        let refused = client.submit_job(submit(bad)).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "{location}: {refused:?}"
        );
        let message = refused.message();
        assert!(message.contains(setting), "{message}");
        for disclosure in ["exist", "No such file", "not found", "regular file"] {
            assert!(!message.contains(disclosure), "{message}");
        }
    }
    assert!(
        client
            .submit_job(submit(spec))
            .await
            .unwrap()
            .into_inner()
            .created
    );
    running.stop().await.unwrap();
}
