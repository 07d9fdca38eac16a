//! The continuous sampler's decoding step reads from the device once (the
//! chosen tokens) and sends nothing to it, and it draws what the static
//! sampler draws.
//!
//! Counted at run time: [`SamplerStats::readbacks`] is one per step plus one
//! per step redone with the full sort. By construction: the files of the
//! step (the token pick, the slots, the decoder layers) and the body of
//! `CausalLm::forward_slots` use no call that moves data between host and
//! device; a new one there fails `step_code_moves_no_data`.

mod common;

use common::{device, fixture};
use premem_core::SamplingSpec;
use premem_model::{CausalLm, Prompt, SampleLimits, Stop, generate_static, sample};
use tch::Kind;

fn prompts() -> Vec<Prompt> {
    [
        vec![11, 45, 7, 90, 23, 5, 61],
        vec![30, 8],
        vec![100, 4, 77, 9],
        vec![3, 200, 17, 5, 9, 44, 81, 12, 6],
        vec![250],
    ]
    .into_iter()
    .enumerate()
    .map(|(i, tokens)| Prompt::new(tokens, 77 + i as u64))
    .collect()
}

fn spec(temperature: f64, top_p: f64) -> SamplingSpec {
    SamplingSpec {
        samples: 3,
        temperature,
        top_p,
        max_new_tokens: 12,
        ..SamplingSpec::default()
    }
}

/// Stops rows at different lengths, so slots free and refill mid-run.
fn stop_at(tokens: &[i64]) -> bool {
    tokens.last().is_some_and(|t| t % 7 == 0)
}

#[test]
fn one_read_back_per_step_and_the_static_samplers_draws() {
    let device = device();
    let mut fallbacks = vec![];
    for family in ["llama", "gemma2"] {
        let model = CausalLm::load(&fixture(family), device, Kind::Float).unwrap();
        for (temperature, top_p) in [(0.0, 1.0), (0.05, 0.9), (0.8, 0.95), (1.0, 1.0)] {
            let sampling = spec(temperature, top_p);
            let stop = Stop {
                token_ids: &[],
                condition: Some(&stop_at),
            };
            let reference = generate_static(&model, &prompts(), &sampling, stop, 0).unwrap();
            for rows in [1, 4, 15] {
                let limits = SampleLimits::rows(rows);
                let out = sample(&model, &prompts(), &sampling, stop, limits, &|_| {}).unwrap();
                let s = out.stats;
                assert_eq!(
                    s.readbacks,
                    s.steps + s.fallbacks,
                    "{family} {sampling:?} {rows} rows"
                );
                assert_eq!(
                    s.prefills,
                    prompts().len() as u64,
                    "each prompt prefilled once"
                );
                assert_eq!(s.slots, rows as u64);
                let tokens = |c: &[premem_model::Completion]| -> Vec<Vec<i64>> {
                    c.iter().map(|c| c.tokens.clone()).collect()
                };
                assert_eq!(
                    tokens(&out.completions),
                    tokens(&reference),
                    "{family}, T={temperature}, top-p={top_p}, {rows} rows"
                );
                fallbacks.push(s.fallbacks);
            }
        }
    }
    assert!(
        fallbacks.contains(&0),
        "some runs found every nucleus among the candidates"
    );
    assert!(
        fallbacks.iter().any(|&f| f > 0),
        "some runs needed the full sort"
    );
}

/// Calls that read a tensor back to the host or send one to the device.
const MOVES_DATA: [&str; 14] = [
    "int64_value",
    "double_value",
    "f64_value",
    "try_from",
    "from_slice",
    "to_device",
    "Device::Cpu",
    "print",
    "is_nonzero",
    "copy_data",
    "Tensor::from(",
    "f_from",
    ".equal(",
    "allclose",
];

#[test]
fn step_code_moves_no_data() {
    let src = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let read = |f: &str| std::fs::read_to_string(src.join(f)).unwrap();
    let model = read("model.rs");
    let start = model.find("pub fn forward_slots(").expect("forward_slots");
    let end = start + model[start..].find("\n    }\n").expect("its end");
    let parts = [
        ("generate/step.rs", read("generate/step.rs")),
        ("slots.rs", read("slots.rs")),
        ("layers.rs", read("layers.rs")),
        ("model.rs: forward_slots", model[start..end].to_string()),
    ];
    for (name, text) in &parts {
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for call in MOVES_DATA {
                assert!(
                    !code.contains(call),
                    "{name}:{}: `{call}` moves data between host and device in the decoding step: {line}",
                    n + 1
                );
            }
        }
    }
    assert!(
        parts[3].1.contains("slots.begin_step"),
        "the scan covers the step"
    );
}

/// The slots hold what the memory plan budgets an evaluator's KV cache
/// (`batch_size × K` rows of prompt + new tokens): measured on the tensors,
/// against the plan's formula.
#[test]
fn the_slots_kv_is_the_memory_plans_budget() {
    use premem_core::spec::plan::{EvalLoad, EvaluatorPlan, ModelShape, WeightKind};
    let model = CausalLm::load(&fixture("llama"), device(), Kind::Float).unwrap();
    let config = fixture("llama").join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let shape = ModelShape::from_config_json(&text, &config).unwrap();
    let sampling = spec(0.8, 0.95);
    let longest = prompts().iter().map(|p| p.tokens.len()).max().unwrap();
    for prompts_in_flight in [1, 2, 5] {
        let rows = prompts_in_flight * sampling.samples;
        let stop = Stop::default();
        let limits = SampleLimits::rows(rows);
        let out = sample(&model, &prompts(), &sampling, stop, limits, &|_| {}).unwrap();
        let load = EvalLoad {
            batch_size: prompts_in_flight as u64,
            samples: sampling.samples as u64,
            sequence: longest as u64 + sampling.max_new_tokens as u64,
            scored: 0,
            chunk_tokens: None,
        };
        let plan = EvaluatorPlan::new(&shape, WeightKind::Fp32, &load);
        assert_eq!(
            out.stats.kv_bytes, plan.kv_cache,
            "{prompts_in_flight} prompts"
        );
    }
}
