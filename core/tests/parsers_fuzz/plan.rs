//! The model shape the memory plan reads from a config.json, and the plan
//! of a job on it: `premem plan`, the CLI's fit check and the coordinator's
//! `SubmitJob` all run these on a user's files.

use std::path::Path;

use premem_core::spec::ByteSize;
use premem_core::spec::JobSpec;
use premem_core::spec::plan::{JobPlan, ModelShape, PlanSettings, WeightKind};
use proptest::prelude::*;
use serde_json::Value;

use crate::{CASES, mutate, mutations, repo_file};

fn config(name: &str) -> Value {
    serde_json::from_str(&repo_file(name)).expect("the example config parses")
}

/// The plan of the synthetic job on `shape`, in both kinds, rendered.
fn plan(shape: &ModelShape) {
    let text = repo_file("examples/synth.toml");
    let job = JobSpec::from_toml(&text, Path::new("synth.toml")).expect("the example parses");
    for kind in [WeightKind::Bf16, WeightKind::Fp32] {
        let settings = PlanSettings::for_job(&job, kind);
        let plan = JobPlan::new(shape, settings, Some(ByteSize(80 << 30)));
        let _ = plan.render();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn shape_of_any_text(text in any::<String>()) {
        if let Ok(shape) = ModelShape::from_config_json(&text, Path::new("config.json")) {
            plan(&shape);
        }
    }

    #[test]
    fn shape_of_configs_mutated(
        name in prop::sample::select(vec!["examples/configs/llama-3-8b.json",
                                          "examples/configs/gemma-2-9b.json",
                                          "examples/tiny-llama.json"]),
        changes in mutations(),
    ) {
        let text = mutate(config(name), &changes).to_string();
        if let Ok(shape) = ModelShape::from_config_json(&text, Path::new("config.json")) {
            plan(&shape);
        }
    }
}

/// The cases `shape_of_configs_mutated` found, one field each (they
/// overflowed the plan's arithmetic): refused with the field named, or
/// planned.
#[test]
fn plan_of_huge_sizes() {
    for (field, value) in [
        ("hidden_size", 176_611_747_696_083_u64),
        ("vocab_size", u64::MAX / 2),
        ("num_hidden_layers", u64::MAX / 2),
        ("intermediate_size", u64::MAX / 2),
        ("num_attention_heads", u64::MAX / 2),
    ] {
        let mut config = config("examples/configs/llama-3-8b.json");
        config[field] = Value::from(value);
        match ModelShape::from_config_json(&config.to_string(), Path::new("config.json")) {
            Ok(shape) => plan(&shape),
            Err(e) => assert!(e.to_string().contains(field), "{field}: {e}"),
        }
    }
}
