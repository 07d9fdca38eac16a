//! premem-evaluator: what an evaluator does with one task — for each example
//! of a checkpoint's train or test split, K samples checked against the
//! answer and the perplexity of the target trace — and where results go.
//!
//! - [`evaluate`]: the per-task core ([`Evaluator::evaluate`]);
//! - [`checkpoint`]: a checkpoint location (model directory or published
//!   store URL) made local;
//! - [`results`]: result rows to and from Parquet.

pub mod checkpoint;
pub mod error;
pub mod evaluate;
pub mod results;

pub use error::{EvalError, Result};
pub use evaluate::{EvalSettings, Evaluator, ExampleResult, Split, select};
