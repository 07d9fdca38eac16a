//! The coordinator load benchmark (`premem_coordinator::bench`): a small run
//! as a test, and the big one on demand:
//!
//! ```text
//! cargo test --release -p premem-coordinator --test bench -- --ignored --nocapture
//! ```

use premem_coordinator::bench::{BenchOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_evaluators_complete_64_tasks_exactly_once() {
    let report = run(BenchOptions {
        evaluators: 8,
        tasks: 64,
        examples_per_task: 4,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    println!("{report}");
    assert_eq!((report.reference.accepted, report.load.accepted), (64, 64));
    assert_eq!(report.load.duplicate + report.load.expired, 0);
    // One empty lease per evaluator ends its loop.
    assert_eq!(report.reference.lease_calls, 64 + 1);
    assert_eq!(report.load.lease_calls, 64 + 8);
}

/// 256 evaluators, 4096 tasks: build with `--release` (see the module docs).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "load benchmark: run with --release -- --ignored --nocapture"]
async fn bench_256_evaluators_4096_tasks() {
    let report = run(BenchOptions {
        evaluators: 256,
        tasks: 4096,
        examples_per_task: 4,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    println!("{report}");
    assert_eq!(report.load.accepted, 4096);
}
