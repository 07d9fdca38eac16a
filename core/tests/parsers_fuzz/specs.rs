//! Job specs (TOML and JSON) and sweep specs.

use std::path::Path;

use premem_core::spec::JobSpec;
use premem_core::spec::sweep::SweepSpec;
use proptest::prelude::*;
use serde_json::Value;

use crate::{CASES, line_picks, mutate, mutations, repo_file, substitute_lines, to_toml};

const JOBS: [&str; 3] = [
    "examples/synth.toml",
    "examples/gsm8k-llama3-8b.toml",
    "examples/math-gemma2-9b.toml",
];

fn job_text() -> impl Strategy<Value = String> {
    prop::sample::select(JOBS.to_vec()).prop_map(repo_file)
}

/// A job spec that parses, as JSON with every field (defaults filled in).
fn job_json(text: &str) -> Value {
    let spec = JobSpec::from_toml(text, Path::new("job.toml")).expect("example job parses");
    serde_json::to_value(spec).expect("a spec serialises")
}

/// A spec that parsed must survive the trip the coordinator makes it take:
/// to JSON and back, with the same JSON. (Compared as JSON: a non-finite
/// float, which validation lets through in `train.max_grad_norm`, is `null`
/// in JSON, so `inf` comes back as unset.)
fn check_parsed(spec: Result<JobSpec, premem_core::spec::SpecError>) {
    if let Ok(spec) = spec {
        let _ = spec.training_hash();
        let json = serde_json::to_value(&spec).expect("a parsed spec serialises");
        let back = JobSpec::from_json(&json.to_string(), Path::new("job.json"));
        let back = back.map(|b| serde_json::to_value(b).expect("a parsed spec serialises"));
        assert_eq!(back.ok().as_ref(), Some(&json), "json round trip of {json}");
    }
}

fn sweep_text() -> String {
    // The base job inline: a sweep naming a job file would read it.
    repo_file("examples/synth-sweep.toml")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn job_toml_of_any_text(text in any::<String>()) {
        check_parsed(JobSpec::from_toml(&text, Path::new("job.toml")));
    }

    #[test]
    fn job_json_of_any_text(text in any::<String>()) {
        check_parsed(JobSpec::from_json(&text, Path::new("job.json")));
    }

    #[test]
    fn job_toml_with_values_replaced(text in job_text(), picks in line_picks()) {
        let text = substitute_lines(&text, &picks);
        check_parsed(JobSpec::from_toml(&text, Path::new("job.toml")));
    }

    #[test]
    fn job_trees_mutated(text in job_text(), changes in mutations()) {
        let tree = mutate(job_json(&text), &changes);
        check_parsed(JobSpec::from_json(&tree.to_string(), Path::new("job.json")));
        if let Some(toml) = to_toml(&tree) {
            check_parsed(JobSpec::from_toml(&toml, Path::new("job.toml")));
        }
    }

    #[test]
    fn sweep_of_any_text(text in any::<String>()) {
        let _ = SweepSpec::from_toml(&text, Path::new("sweep.toml"));
    }

    #[test]
    fn sweep_with_values_replaced(picks in line_picks()) {
        let text = substitute_lines(&sweep_text(), &picks);
        if let Ok(sweep) = SweepSpec::from_toml(&text, Path::new("sweep.toml")) {
            let _ = sweep.expand();
        }
    }

    #[test]
    fn sweep_trees_mutated(changes in mutations()) {
        let tree: Value = toml::from_str(&sweep_text()).expect("example sweep parses");
        let tree = mutate(tree, &changes);
        // A `sweep.job` path is read: keep it off the file system.
        if tree["sweep"].get("job").is_some() {
            return Ok(());
        }
        if let Some(text) = to_toml(&tree)
            && let Ok(sweep) = SweepSpec::from_toml(&text, Path::new("sweep.toml"))
        {
            let _ = sweep.expand();
        }
    }
}
