//! Runs built in memory for the report's unit tests.

use std::collections::BTreeMap;

use premem_core::data::results::ExampleResult;
use premem_core::spec::record::RunRecord;
use premem_core::testing::JobToml;

use crate::load::RunData;

/// A run with a minimal spec and no checkpoints or results.
pub(crate) fn run(name: &str, git_revision: Option<&str>) -> RunData {
    let spec = JobToml::default()
        .without("model")
        .with(&format!(
            "[run]\nname = {name:?}\noutput = \"runs/{name}\"\n\
             [model]\nbase = \"models/tiny\"\n\
             [data.train]\npath = \"data/train.jsonl\"\nformat = \"gsm8k\""
        ))
        .spec();
    RunData {
        early_stop: None,
        name: name.into(),
        url: format!("file:///runs/{name}"),
        record: RunRecord {
            name: name.into(),
            training_hash: spec.training_hash(),
            inputs_digest: "d".repeat(32),
            premem_version: "9.8.7-test".into(),
            spec,
            git_revision: git_revision.map(Into::into),
            checksums: BTreeMap::from([
                ("data/train.jsonl".to_string(), "ab".repeat(32)),
                ("models/tiny/model.safetensors".to_string(), "cd".repeat(32)),
            ]),
        },
        published: vec![],
        rows: BTreeMap::new(),
        baselines: BTreeMap::new(),
        notes: vec![],
    }
}

/// A result row of example `id` without a preamble: `accuracy` of 8
/// samples and the target's perplexity.
pub(crate) fn row(
    id: &str,
    split: &str,
    step: u64,
    accuracy: f64,
    perplexity: f64,
) -> ExampleResult {
    ExampleResult {
        id: id.into(),
        split: split.into(),
        checkpoint_step: step,
        preamble: String::new(),
        n_correct: (accuracy * 8.0).round() as u32,
        samples: 8,
        accuracy,
        target_nll: perplexity.ln() * 10.0,
        target_tokens: 10,
        target_perplexity: perplexity,
        mean_sample_tokens: 10.0,
        frac_equal_target: 0.0,
        sample_confidences: vec![-0.5; 8],
        sample_texts: vec![],
        distinct_samples: None,
    }
}
