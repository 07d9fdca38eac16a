//! Property tests of the curation spec's parser: arbitrary text, the
//! example spec with values replaced or removed, and its tree mutated. The
//! parse returns a spec or an error, never panics; a spec that parsed
//! answers every question the driver asks of it. Cases: 64, or
//! `PROPTEST_CASES` (`make fuzz`).

#[path = "../../core/tests/parsers_fuzz/strategies.rs"]
mod strategies;

use std::path::Path;

use premem_curation::{CurationSpec, Strategy as Pick};
use proptest::prelude::*;
use serde_json::Value;
use strategies::{line_picks, mutate, mutations, repo_file, substitute_lines, to_toml};

fn example() -> String {
    repo_file("examples/synth-curation.toml")
}

/// Parses `text`; a spec that parsed is asked what the driver asks.
fn check(text: &str) {
    let Ok(spec) = CurationSpec::from_toml(text, Path::new("curation.toml")) else {
        return;
    };
    // A `curation.job` path is read from the file system: keep off it.
    if spec.curation.job.is_none() {
        let _ = spec.base_job(Path::new("curation.toml"));
    }
    for iteration in 0..=spec.curation.iterations.saturating_add(1).min(64) {
        let _ = spec.new_examples_after(iteration);
        for strategy in Pick::ALL {
            let _ = spec.iteration_dir(strategy, iteration);
            let _ = spec.run_name(strategy, iteration);
        }
    }
    let _ = (spec.state_path(), spec.ifd_fraction());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_text(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn values_replaced(picks in line_picks()) {
        check(&substitute_lines(&example(), &picks));
    }

    #[test]
    fn trees_mutated(changes in mutations()) {
        let tree: Value = toml::from_str(&example()).expect("the example parses");
        if let Some(text) = to_toml(&mutate(tree, &changes)) {
            check(&text);
        }
    }
}
