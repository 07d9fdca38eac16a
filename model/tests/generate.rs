//! Generation with the KV cache against a naive loop that re-runs the whole
//! sequence each step, and the sampling controls.

mod common;

use common::{device, fixture};
use premem_model::{CausalLm, SamplingParams, generate};
use tch::{Kind, Tensor};

const PAD: i64 = 0;

fn prompts() -> Vec<Vec<i64>> {
    vec![
        vec![11, 45, 7, 90, 23, 5, 61],
        vec![30, 8],
        vec![100, 4, 77, 9],
    ]
}

/// Greedy decoding without a cache: left-pad, full forward, argmax, append.
fn naive_greedy(model: &CausalLm, prompt: &[i64], steps: usize) -> Vec<i64> {
    let mut seq = prompt.to_vec();
    for _ in 0..steps {
        let ids = Tensor::from_slice(&seq)
            .view([1, -1])
            .to_device(model.device());
        let logits = tch::no_grad(|| model.forward(&ids, None, None)).unwrap();
        let next = logits
            .select(1, seq.len() as i64 - 1)
            .argmax(-1, false)
            .int64_value(&[0]);
        seq.push(next);
    }
    seq[prompt.len()..].to_vec()
}

#[test]
fn cached_greedy_batch_matches_naive_decoding() {
    let device = device();
    for family in ["llama", "gemma2", "mistral"] {
        let model = CausalLm::load(&fixture(family), device, Kind::Float).unwrap();
        let out = generate(&model, &prompts(), 1, &SamplingParams::greedy(10), PAD).unwrap();
        assert_eq!(out.len(), 3);
        for c in &out {
            let want = naive_greedy(&model, &prompts()[c.prompt_index], 10);
            assert_eq!(c.tokens, want, "{family}: prompt {}", c.prompt_index);
            assert!(!c.stopped);
        }
    }
}

#[test]
fn sampling_is_seeded_and_samples_differ() {
    let model = CausalLm::load(&fixture("qwen2"), device(), Kind::Float).unwrap();
    let params = SamplingParams {
        max_new_tokens: 12,
        temperature: 1.0,
        top_p: 0.95,
        stop_token_ids: vec![],
        seed: 42,
    };
    let a = generate(&model, &prompts(), 4, &params, PAD).unwrap();
    let b = generate(&model, &prompts(), 4, &params, PAD).unwrap();
    assert_eq!(a, b, "same seed, same samples");
    assert_eq!(a.len(), 12);
    let first: Vec<&Vec<i64>> = a
        .iter()
        .filter(|c| c.prompt_index == 0)
        .map(|c| &c.tokens)
        .collect();
    assert!(
        first.windows(2).any(|w| w[0] != w[1]),
        "the 4 samples of one prompt should not all agree"
    );
    let c = generate(
        &model,
        &prompts(),
        4,
        &SamplingParams { seed: 43, ..params },
        PAD,
    )
    .unwrap();
    assert_ne!(a, c, "another seed, other samples");
}

#[test]
fn tiny_top_p_is_greedy_and_stop_tokens_end_rows() {
    let model = CausalLm::load(&fixture("llama"), device(), Kind::Float).unwrap();
    let greedy = generate(&model, &prompts(), 1, &SamplingParams::greedy(6), PAD).unwrap();
    let nucleus = SamplingParams {
        max_new_tokens: 6,
        temperature: 0.8,
        top_p: 1e-6,
        stop_token_ids: vec![],
        seed: 3,
    };
    let sampled = generate(&model, &prompts(), 1, &nucleus, PAD).unwrap();
    assert_eq!(sampled, greedy);

    let stop = greedy[1].tokens[2];
    let params = SamplingParams {
        stop_token_ids: vec![stop],
        ..SamplingParams::greedy(6)
    };
    let stopped = generate(&model, &prompts(), 1, &params, PAD).unwrap();
    assert_eq!(stopped[1].tokens, greedy[1].tokens[..3].to_vec());
    assert!(stopped[1].stopped);
}

#[test]
fn bad_sampling_parameters_are_errors() {
    let model = CausalLm::load(&fixture("llama"), device(), Kind::Float).unwrap();
    let bad = SamplingParams {
        top_p: 0.0,
        ..SamplingParams::greedy(4)
    };
    let err = generate(&model, &prompts(), 1, &bad, PAD)
        .unwrap_err()
        .to_string();
    assert!(err.contains("top_p"), "{err}");
    let err = generate(&model, &[vec![]], 1, &SamplingParams::greedy(4), PAD)
        .unwrap_err()
        .to_string();
    assert!(err.contains("prompt 0 is empty"), "{err}");
}
