//! What the coordinator publishes beside its replies: a checkpoint's
//! TensorBoard events as soon as it is folded, and, at a stop, whatever the
//! last completions made publishable.

mod common;

use common::*;
use premem_coordinator::start;
use premem_tracking::tensorboard::read_scalars;

/// The scalars of the run's event files whose names end with `suffix`.
fn events(fixture: &Fixture, suffix: &str) -> Vec<(String, i64, f64)> {
    let dir = fixture.run_dir().join("tensorboard");
    let mut found = vec![];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(suffix) {
            let scalars = read_scalars(&std::fs::read(&path).unwrap()).unwrap();
            found.extend(scalars.into_iter().map(|s| (s.tag, s.step, s.value)));
        }
    }
    found
}

/// Every task of the checkpoint of step 4 completes and the coordinator
/// stops at once: the last round before it ends still writes the
/// checkpoint's events, with the values the status reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_publishes_the_last_folded_checkpoint() {
    let fixture = Fixture::new();
    let running = start(fixture.options()).await.unwrap();
    let mut client = connect(&running);
    submit(&mut client, fixture.spec_json()).await;
    fixture.publish(4);
    wait_for_tasks(&mut client, 3).await;
    evaluate(&fixture, &mut client, 3).await;
    let status = status(&mut client).await;
    running.stop().await.unwrap();
    let checkpoint = &status.checkpoints[0];
    let eval = events(&fixture, "eval-step-00000004");
    let value = |tag: &str| {
        eval.iter()
            .find(|(t, step, _)| t == tag && *step == 4)
            .map(|e| e.2)
            .unwrap_or_else(|| panic!("no {tag} in {eval:?}"))
    };
    let close = |a: f64, b: Option<f64>| (a - b.unwrap()).abs() < 1e-6;
    assert!(close(value("eval/pm_accuracy"), checkpoint.pm_accuracy));
    assert!(close(value("eval/test_accuracy"), checkpoint.test_accuracy));
    assert!(close(
        value("eval/test_perplexity"),
        checkpoint.test_perplexity
    ));
    assert_eq!(value("advice/pm_stalled"), 0.0);
}
