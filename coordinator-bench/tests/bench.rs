//! The load benchmark (`premem-coordinator-bench`) as tests:
//! small runs with the simulated evaluators in client processes of the
//! benchmark's own binary. Each run checks inside that every task was
//! accepted exactly once, that every job ends DONE and that its P-M
//! accuracy equals an independent computation; the big runs are in
//! `benches/README.md`.

use std::path::PathBuf;
use std::time::Duration;

use premem_coordinator_bench::{self as bench, Behaviour, BenchOptions};

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_premem-coordinator-bench"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_evaluators_in_two_processes_complete_two_jobs_exactly_once() {
    let mut options = BenchOptions::new(8, 64, exe());
    options.jobs = 2;
    options.client_processes = 2;
    options.restart = true;
    let stats = bench::run(options).await.unwrap_or_else(|e| panic!("{e}"));
    println!("{}\n{stats}", bench::RunStats::header());
    assert_eq!((stats.tasks, stats.accepted, stats.jobs), (64, 64, 2));
    assert_eq!(stats.duplicate + stats.expired, 0);
    // One empty lease per evaluator ends its loop.
    assert_eq!(stats.lease_calls, 64 + 8);
    assert!(stats.restart_seconds.is_some_and(|s| s > 0.0));
    assert!(!stats.memory.is_empty() && stats.memory[0].rss > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_with_deaths_and_expiries_stays_exactly_once() {
    let mut options = BenchOptions::new(12, 120, exe());
    options.lease_ttl = Duration::from_millis(600);
    options.memory_every = Duration::from_millis(200);
    options.behaviour = Behaviour {
        work_ms: (0, 400),
        deaths: 0.1,
        expiries: 0.1,
        soak_seconds: Some(3.0),
        seed: 7,
    };
    let stats = bench::run(options).await.unwrap_or_else(|e| panic!("{e}"));
    println!("{}\n{stats}", bench::RunStats::header());
    println!("{}", bench::exactly_once_line(&stats));
    assert_eq!(stats.accepted, 120);
    // The soak did what it is for: evaluators died, leases ran out and
    // were renewed, and every late completion was refused (checked in run).
    assert!(stats.deaths > 0 && stats.late > 0, "{stats:?}");
    assert!(stats.renewals > 0, "{stats:?}");
    assert_eq!(stats.duplicate + stats.expired, stats.late);
    // A test's allocator does not count its heap: the table says so.
    let table = stats.memory_table(1.0);
    assert!(table.contains("after the warm-up (1 s): RSS"), "{table}");
    assert!(
        !table.contains(", heap") && table.contains(" - "),
        "{table}"
    );
}

#[tokio::test]
async fn bad_options_are_refused_with_their_name() {
    let mut options = BenchOptions::new(2, 10, exe());
    options.client_processes = 3;
    let e = bench::run(options).await.unwrap_err().to_string();
    assert!(e.contains("3 client processes for 2 evaluators"), "{e}");
    let mut options = BenchOptions::new(2, 10, exe());
    options.behaviour.deaths = 0.8;
    options.behaviour.expiries = 0.5;
    let e = bench::run(options).await.unwrap_err().to_string();
    assert!(e.contains("deaths and expiries"), "{e}");
    let e = bench::run(BenchOptions::new(0, 10, exe()))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("evaluators must be positive"), "{e}");
}
