//! Data: datasets and answer checking, prompt templates, the sampling
//! settings, the data order of a run, evaluation result rows and the
//! synthetic task. Imports only `storage` and the crate's leaves.

pub mod answer;
pub mod dataset;
pub mod order;
mod parquet_guard;
pub mod results;
pub mod sampling;
pub mod synth;
pub mod template;
