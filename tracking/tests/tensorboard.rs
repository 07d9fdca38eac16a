//! Event files as TensorBoard reads them: written here, loaded by
//! TensorBoard's own `EventAccumulator` (tests/read_events.py in the venv
//! `make test-tools` installs).

use std::collections::BTreeMap;

use premem_tracking::tensorboard::{Scalar, event_file, file_name, read_scalars};

const CREATED: f64 = 1_700_000_000.25;

/// `train/loss` at steps 1..=20, the last one 0.0 (which must still be
/// written as a value).
fn train_loss() -> Vec<(i64, f64)> {
    (1..=20)
        .map(|step| (step, if step == 20 { 0.0 } else { 1.0 / step as f64 }))
        .collect()
}

fn eval_accuracy() -> Vec<(i64, f64)> {
    vec![(5, 0.125), (10, 0.4), (20, 0.75)]
}

fn scalars(tag: &str, points: &[(i64, f64)]) -> Vec<Scalar> {
    points
        .iter()
        .map(|&(step, value)| Scalar {
            tag: tag.to_string(),
            step,
            value,
            wall_time: CREATED + step as f64,
        })
        .collect()
}

/// What TensorBoard reads from `dir`: `{tag: [[step, value], ...]}`.
fn tensorboard_scalars(dir: &std::path::Path) -> BTreeMap<String, Vec<(i64, f64)>> {
    serde_json::from_value(premem_tracking::testing::read_events(dir)).expect("tag → points")
}

fn assert_points(tag: &str, read: &[(i64, f64)], written: &[(i64, f64)]) {
    let steps = |points: &[(i64, f64)]| points.iter().map(|p| p.0).collect::<Vec<_>>();
    assert_eq!(steps(read), steps(written), "steps of {tag}");
    for (&(step, got), &(_, want)) in read.iter().zip(written) {
        let tolerance = 1e-6 * want.abs().max(1e-30);
        assert!(
            (got - want).abs() <= tolerance,
            "{tag} at step {step}: TensorBoard read {got}, wrote {want}"
        );
    }
}

#[test]
fn tensorboard_reads_the_scalars_of_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (
            file_name(CREATED, "train"),
            scalars("train/loss", &train_loss()),
        ),
        (
            file_name(CREATED + 1.0, "eval"),
            scalars("eval/pm_accuracy", &eval_accuracy()),
        ),
    ];
    for (name, scalars) in &files {
        let bytes = event_file(scalars, CREATED);
        assert_eq!(read_scalars(&bytes).unwrap().len(), scalars.len());
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }

    let read = tensorboard_scalars(dir.path());

    let tags: Vec<&str> = read.keys().map(String::as_str).collect();
    assert_eq!(tags, ["eval/pm_accuracy", "train/loss"]);
    assert_points("train/loss", &read["train/loss"], &train_loss());
    assert_points(
        "eval/pm_accuracy",
        &read["eval/pm_accuracy"],
        &eval_accuracy(),
    );
}
