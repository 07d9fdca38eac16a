//! One module per command: its arguments (clap) and what it does.

pub mod bench;
pub mod bench_evaluate;
pub mod coordinator;
pub mod curate;
pub mod curation_summary;
pub mod data;
pub mod doctor;
pub mod eval;
pub mod eval_run;
pub mod evaluator;
pub mod generate;
pub mod jobs;
pub mod model;
pub mod plan;
pub mod report;
pub mod run;
pub mod sweep;
pub mod train;
pub mod trainer;
