//! Generation with the KV cache against a naive loop that re-runs the whole
//! sequence each step, and the sampling controls.

mod common;

use common::{device, fixture};
use premem_core::SamplingSpec;
use premem_model::{CausalLm, Prompt, SampleLimits, Stop, generate, sample};
use tch::{Kind, Tensor};

fn prompts() -> Vec<Prompt> {
    [
        vec![11, 45, 7, 90, 23, 5, 61],
        vec![30, 8],
        vec![100, 4, 77, 9],
    ]
    .into_iter()
    .enumerate()
    .map(|(i, tokens)| Prompt::new(tokens, 1000 + i as u64))
    .collect()
}

fn with_seed_offset(prompts: &[Prompt], offset: u64) -> Vec<Prompt> {
    prompts
        .iter()
        .map(|p| Prompt::new(p.tokens.clone(), p.seed + offset))
        .collect()
}

/// Greedy decoding without a cache: full forward, argmax, append.
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
        let out = generate(
            &model,
            &prompts(),
            &SamplingSpec::greedy(10),
            Stop::default(),
        )
        .unwrap();
        assert_eq!(out.len(), 3);
        for c in &out {
            let want = naive_greedy(&model, &prompts()[c.prompt_index].tokens, 10);
            assert_eq!(c.tokens, want, "{family}: prompt {}", c.prompt_index);
            assert!(!c.stopped);
        }
    }
}

#[test]
fn sampling_is_seeded_per_prompt_and_samples_differ() {
    let model = CausalLm::load(&fixture("qwen2"), device(), Kind::Float).unwrap();
    let params = SamplingSpec {
        samples: 4,
        max_new_tokens: 12,
        temperature: 1.0,
        top_p: 0.95,
        ..SamplingSpec::default()
    };
    let a = generate(&model, &prompts(), &params, Stop::default()).unwrap();
    let b = generate(&model, &prompts(), &params, Stop::default()).unwrap();
    assert_eq!(a, b, "same seeds, same samples");
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
        &with_seed_offset(&prompts(), 1),
        &params,
        Stop::default(),
    )
    .unwrap();
    assert_ne!(a, c, "other seeds, other samples");

    // A prompt's samples do not depend on the other prompts of the batch.
    let alone = generate(&model, &prompts()[1..2], &params, Stop::default()).unwrap();
    let in_batch: Vec<&Vec<i64>> = a
        .iter()
        .filter(|c| c.prompt_index == 1)
        .map(|c| &c.tokens)
        .collect();
    assert_eq!(
        alone.iter().map(|c| &c.tokens).collect::<Vec<_>>(),
        in_batch
    );
}

#[test]
fn tiny_top_p_is_greedy_and_stop_conditions_end_rows() {
    let model = CausalLm::load(&fixture("llama"), device(), Kind::Float).unwrap();
    let greedy = generate(
        &model,
        &prompts(),
        &SamplingSpec::greedy(6),
        Stop::default(),
    )
    .unwrap();
    let nucleus = SamplingSpec {
        temperature: 0.8,
        top_p: 1e-6,
        ..SamplingSpec::greedy(6)
    };
    let sampled = generate(&model, &prompts(), &nucleus, Stop::default()).unwrap();
    assert_eq!(sampled, greedy);

    let stop = greedy[1].tokens[2];
    let stopped = generate(
        &model,
        &prompts(),
        &SamplingSpec::greedy(6),
        Stop::at_tokens(&[stop]),
    )
    .unwrap();
    assert_eq!(stopped[1].tokens, greedy[1].tokens[..3].to_vec());
    assert!(stopped[1].stopped);
    // The other rows run on, unaffected by the finished one.
    for i in [0, 2] {
        let cut = greedy[i]
            .tokens
            .iter()
            .position(|&t| t == stop)
            .map_or(6, |p| p + 1);
        assert_eq!(stopped[i].tokens, greedy[i].tokens[..cut].to_vec());
    }

    // A stop condition on the generated tokens (e.g. a stop string) ends a row too.
    let two = |tokens: &[i64]| tokens.len() >= 2;
    let cut = generate(
        &model,
        &prompts(),
        &SamplingSpec::greedy(6),
        Stop {
            token_ids: &[],
            condition: Some(&two),
        },
    )
    .unwrap();
    for (c, g) in cut.iter().zip(&greedy) {
        assert_eq!(c.tokens, g.tokens[..2].to_vec());
        assert!(c.stopped);
    }
}

#[test]
fn bad_sampling_parameters_are_errors() {
    let model = CausalLm::load(&fixture("llama"), device(), Kind::Float).unwrap();
    let bad = SamplingSpec {
        top_p: 0.0,
        ..SamplingSpec::greedy(4)
    };
    let err = generate(&model, &prompts(), &bad, Stop::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("top_p"), "{err}");
    let empty = [Prompt::new(vec![], 0)];
    let err = generate(&model, &empty, &SamplingSpec::greedy(4), Stop::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("prompt 0 is empty"), "{err}");
}

/// The summed NLL of `scored` after `prompt`: one forward over both, no
/// cache, log-softmax at each position that predicts a scored token.
fn reference_nll(model: &CausalLm, prompt: &[i64], scored: &[i64]) -> f64 {
    let all: Vec<i64> = prompt.iter().chain(scored).copied().collect();
    let ids = Tensor::from_slice(&all)
        .view([1, -1])
        .to_device(model.device());
    let logits = tch::no_grad(|| model.forward(&ids, None, None)).unwrap();
    let logprobs = logits.get(0).log_softmax(-1, Kind::Double);
    let at = prompt.len() - 1;
    scored
        .iter()
        .enumerate()
        .map(|(i, &t)| -logprobs.double_value(&[(at + i) as i64, t]))
        .sum()
}

#[test]
fn targets_are_scored_in_the_prefill_and_change_no_sample() {
    let device = device();
    let sampling = SamplingSpec {
        samples: 3,
        temperature: 0.8,
        top_p: 0.95,
        max_new_tokens: 8,
        ..SamplingSpec::default()
    };
    let targets: [&[i64]; 3] = [&[3, 9, 27, 81, 2], &[], &[40]];
    for family in ["llama", "gemma2"] {
        let model = CausalLm::load(&fixture(family), device, Kind::Float).unwrap();
        let plain = prompts();
        let scored: Vec<Prompt> = plain
            .iter()
            .zip(targets)
            .map(|(p, t)| Prompt {
                scored: t.to_vec(),
                ..p.clone()
            })
            .collect();
        let unscored = sample(
            &model,
            &plain,
            &sampling,
            Stop::default(),
            SampleLimits::rows(4),
            &|_| {},
        )
        .unwrap();
        assert_eq!(unscored.scored_nll, vec![None; 3]);
        for chunk in [None, Some(2), Some(1)] {
            let limits = SampleLimits {
                rows: 4,
                score_chunk: chunk,
            };
            let out = sample(&model, &scored, &sampling, Stop::default(), limits, &|_| {}).unwrap();
            for (a, b) in out.completions.iter().zip(&unscored.completions) {
                assert_eq!(a.tokens, b.tokens, "{family} {chunk:?}");
                assert!((a.logprob - b.logprob).abs() < 1e-4, "{family} {chunk:?}");
            }
            for (i, (p, nll)) in scored.iter().zip(&out.scored_nll).enumerate() {
                if p.scored.is_empty() {
                    assert_eq!(*nll, None, "prompt {i}");
                    continue;
                }
                let expected = reference_nll(&model, &p.tokens, &p.scored);
                let got = nll.expect("scored");
                assert!(
                    (got - expected).abs() < 1e-4 * expected.max(1.0),
                    "{family} prompt {i} chunk {chunk:?}: {got} vs {expected}"
                );
            }
            let s = out.stats;
            assert_eq!(
                s.readbacks,
                s.steps + s.fallbacks + 1,
                "one read of the NLLs"
            );
            assert_eq!(s.prefills, 3, "the scoring is the prefill");
        }
    }
}
