//! premem-evaluator: what an evaluator does with one task — for each example
//! of a checkpoint's train or test split, K samples checked against the
//! answer and the perplexity of the target trace — and where results go.
//!
//! - [`evaluate`]: the per-task core ([`Evaluator::evaluate`]);
//! - [`checkpoint`]: a checkpoint location (model directory or published
//!   store URL) made local;
//! - [`run`]: every checkpoint of a run into the run's result files;
//! - [`results`]: result rows to and from Parquet (from `premem-core`).

pub mod checkpoint;
pub mod error;
pub mod evaluate;
pub mod run;

pub use error::{EvalError, Result};
pub use evaluate::{EvalSettings, Evaluator, ExampleResult, Split, select};
/// Result rows to and from Parquet (they live in `premem-core`, which the
/// report reads without libtorch).
pub use premem_core::results;
