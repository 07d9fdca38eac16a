//! Property tests for every parser of premem-core: job and sweep specs,
//! datasets (JSONL and Parquet), GSM8K and MATH answers, manifests, run
//! records, result files and the model shape of the memory plan. Each feeds arbitrary bytes, then inputs that
//! get deeper (valid files with values replaced, removed or added), and
//! asserts only that the call returns: a value or an error, never a panic.
//!
//! The case count is proptest's: the default below per test, or
//! `PROPTEST_CASES` from the environment, which takes precedence over a
//! test's own count (proptest >= 1.2), so `make fuzz` runs these same tests
//! much longer.

mod answers;
mod datasets;
mod files;
mod plan;
mod specs;
mod strategies;

pub use strategies::*;

/// Cases per test under `cargo test` (the whole file in a few seconds).
pub const CASES: u32 = 64;

/// Runs an async reader (store, manifests) to its end.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}
