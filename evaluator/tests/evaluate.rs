//! The evaluator core: perplexity against transformers, results independent
//! of batch size, Parquet round trip, and bad input.

mod common;

use std::path::PathBuf;

use premem_core::data::answer::AnswerStyle;
use premem_core::{Example, PromptTemplate, SamplingSpec, Split};
use premem_evaluator::checkpoint::fetch;
use premem_evaluator::results::{read_parquet, write_parquet};
use premem_evaluator::{EvalSettings, Evaluator, select};
use premem_model::{CausalLm, Tokenizer};
use tch::{Device, Kind};

fn fixture(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../model/fixtures")
        .join(family)
}

fn example(id: &str, query: &str, target: &str) -> Example {
    Example {
        id: id.into(),
        query: query.into(),
        target: target.into(),
        answer: "0".into(),
        parent_id: None,
        meta: Default::default(),
    }
}

fn settings(samples: usize, batch_size: usize) -> EvalSettings {
    EvalSettings {
        sampling: SamplingSpec {
            samples,
            max_new_tokens: 24,
            keep_samples: samples,
            ..SamplingSpec::default()
        },
        batch_size,
        ..EvalSettings::paper(Split::Train, 40)
    }
}

/// exp(mean NLL) of each target given its prompt, as transformers computes it
/// (`fixtures/<family>/perplexity.json`), to 1e-4.
#[test]
fn target_perplexity_matches_transformers() {
    let verbatim = PromptTemplate {
        prompt: "{query}".into(),
        completion: "{target}".into(),
        stop: vec![],
    };
    for family in ["llama", "qwen2", "mistral", "gemma2"] {
        let dir = fixture(family);
        let model = CausalLm::load(&dir, Device::Cpu, Kind::Float).unwrap();
        let tokenizer = Tokenizer::from_dir(&dir).unwrap();
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("perplexity.json")).unwrap())
                .unwrap();
        let examples: Vec<Example> = reference
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, r)| {
                example(
                    &i.to_string(),
                    r["prompt"].as_str().unwrap(),
                    r["completion"].as_str().unwrap(),
                )
            })
            .collect();
        let refs: Vec<&Example> = examples.iter().collect();
        let evaluator = Evaluator {
            model: &model,
            tokenizer: &tokenizer,
            template: &verbatim,
            style: AnswerStyle::Gsm8k,
            eos: 2,
            pad: 0,
        };
        let rows = evaluator.evaluate(&refs, &settings(1, 8), &|_| {}).unwrap();
        for (row, want) in rows.iter().zip(reference.as_array().unwrap()) {
            assert_eq!(
                row.target_tokens,
                want["tokens"].as_u64().unwrap(),
                "{family} {}",
                row.id
            );
            let (got, want_ppl) = (row.target_perplexity, want["perplexity"].as_f64().unwrap());
            assert!(
                (got - want_ppl).abs() <= 1e-4 * want_ppl.max(1.0),
                "{family} {}: perplexity {got} vs {want_ppl}",
                row.id
            );
            let want_nll = want["nll_sum"].as_f64().unwrap();
            assert!(
                (row.target_nll - want_nll).abs() <= 1e-4 * want_nll.abs().max(1.0),
                "{family}: nll {} vs {want_nll}",
                row.target_nll
            );
        }
    }
}

fn synth_setup() -> (CausalLm, Tokenizer, Vec<Example>) {
    common::tiny_synth_model(20)
}

fn synth_evaluator<'a>(
    model: &'a CausalLm,
    tokenizer: &'a Tokenizer,
    template: &'a PromptTemplate,
) -> Evaluator<'a> {
    Evaluator {
        model,
        tokenizer,
        template,
        style: AnswerStyle::Gsm8k,
        eos: 1,
        pad: 0,
    }
}

#[test]
fn results_do_not_depend_on_batch_size() {
    let (model, tokenizer, examples) = synth_setup();
    let template = PromptTemplate::default();
    let evaluator = synth_evaluator(&model, &tokenizer, &template);
    let refs: Vec<&Example> = examples.iter().collect();
    let mut s = settings(3, 1);
    s.sampling.preambles = vec!["First".into()];
    let one = evaluator.evaluate(&refs, &s, &|_| {}).unwrap();
    assert_eq!(one.len(), 40, "20 examples x (no preamble + 1 preamble)");
    assert!(
        one.iter()
            .all(|r| r.samples == 3 && r.sample_texts.len() == 3)
    );
    assert!(
        one.iter()
            .filter(|r| r.preamble == "First")
            .all(|r| r.sample_texts.iter().all(|t| t.starts_with(" First")))
    );
    let distinct: std::collections::BTreeSet<&String> =
        one.iter().flat_map(|r| &r.sample_texts).collect();
    assert!(
        distinct.len() > 30,
        "samples should vary: {} distinct of 120",
        distinct.len()
    );
    for batch_size in [7, 32] {
        s.batch_size = batch_size;
        let other = evaluator.evaluate(&refs, &s, &|_| {}).unwrap();
        for (a, b) in one.iter().zip(&other) {
            assert_eq!(
                a.sample_texts, b.sample_texts,
                "batch size {batch_size}, example {}",
                a.id
            );
            assert_eq!(a.n_correct, b.n_correct);
            assert!((a.target_perplexity - b.target_perplexity).abs() < 1e-4 * a.target_perplexity);
        }
    }
    // Another checkpoint step draws other samples.
    let mut later = settings(3, 7);
    later.checkpoint_step = 41;
    let moved = evaluator.evaluate(&refs, &later, &|_| {}).unwrap();
    assert_ne!(one[0].sample_texts, moved[0].sample_texts);
}

#[test]
fn a_target_trace_sampled_verbatim_is_recognised() {
    // A "sample" equal to the target counts as correct and equal to the target.
    let (model, tokenizer, examples) = synth_setup();
    let template = PromptTemplate::default();
    let evaluator = synth_evaluator(&model, &tokenizer, &template);
    let rows = evaluator
        .evaluate(&[&examples[0]], &settings(2, 4), &|_| {})
        .unwrap();
    assert_eq!(rows[0].id, examples[0].id);
    assert!(rows[0].target_perplexity > 1.0 && rows[0].target_tokens > 20);
}

#[test]
fn results_round_trip_through_parquet() {
    let (model, tokenizer, examples) = synth_setup();
    let template = PromptTemplate::default();
    let evaluator = synth_evaluator(&model, &tokenizer, &template);
    let refs: Vec<&Example> = examples.iter().take(5).collect();
    let rows = evaluator.evaluate(&refs, &settings(2, 5), &|_| {}).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("r.parquet");
    write_parquet(&path, &rows).unwrap();
    assert_eq!(read_parquet(&path).unwrap(), rows);
    std::fs::write(&path, b"junk").unwrap();
    let err = read_parquet(&path).unwrap_err().to_string();
    assert!(
        err.contains("r.parquet: not a readable Parquet file"),
        "{err}"
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let (model, tokenizer, examples) = synth_setup();
    let template = PromptTemplate::default();
    let evaluator = synth_evaluator(&model, &tokenizer, &template);
    let err = evaluator
        .evaluate(&[&examples[0]], &settings(0, 4), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("samples (K) must be 1 to 1024, got 0"),
        "{err}"
    );

    let dataset = premem_core::Dataset {
        path: "train.jsonl".into(),
        style: AnswerStyle::Gsm8k,
        examples: examples.clone(),
    };
    let err = select(&dataset, Some(&["train-00001".into(), "nope".into()]))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "train.jsonl: no example with id 'nope'");
    assert_eq!(
        select(&dataset, Some(&["train-00003".into()])).unwrap()[0].id,
        "train-00003"
    );

    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-checkpoint");
    let err = fetch(missing.to_str().unwrap(), tmp.path())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no-such-checkpoint") && err.contains("no such directory"),
        "{err}"
    );
    let url = format!("file://{}", tmp.path().display());
    let err = fetch(&url, tmp.path()).err().unwrap().to_string();
    assert!(err.contains("neither a published checkpoint"), "{err}");
}
