//! IFD scores against a by-hand computation on a tiny random Llama, and
//! independent of batch size.

mod common;

use premem_core::{Example, PromptTemplate};
use premem_evaluator::ifd::ifd_scores;
use premem_model::{CausalLm, Tokenizer};
use tch::{Kind, Tensor};

const EOS: i64 = 1;
const PAD: i64 = 0;

fn setup() -> (CausalLm, Tokenizer, Vec<Example>) {
    common::tiny_synth_model(7)
}

/// Mean −log p of `tokens[first..]`, each given the tokens before it: one
/// unpadded forward, log-softmax, explicit indexing.
fn mean_nll_by_hand(model: &CausalLm, tokens: &[i64], first: usize) -> f64 {
    let input = Tensor::from_slice(tokens).view([1, -1]);
    let logits = tch::no_grad(|| model.forward(&input, None, None)).unwrap();
    let logprobs = logits
        .to_kind(Kind::Double)
        .log_softmax(-1, Kind::Double)
        .squeeze_dim(0);
    let mut sum = 0.0;
    for (t, &token) in tokens.iter().enumerate().skip(first) {
        sum -= logprobs.double_value(&[(t - 1) as i64, token]);
    }
    sum / (tokens.len() - first) as f64
}

fn check_against_hand(max_length: usize) {
    let (model, tokenizer, examples) = setup();
    let template = PromptTemplate::default();
    let refs: Vec<&Example> = examples.iter().collect();
    let scores = ifd_scores(
        &model, &tokenizer, &template, EOS, PAD, &refs, 3, max_length,
    )
    .unwrap();
    assert_eq!(scores.len(), examples.len());
    let mut start = tokenizer.encode("", true).unwrap();
    if start.is_empty() {
        start = vec![EOS];
    }
    for (example, &ifd) in examples.iter().zip(&scores) {
        let mut prompt = tokenizer
            .encode(&template.render_prompt(example), true)
            .unwrap();
        let mut completion = tokenizer
            .encode(&template.render_completion(example), false)
            .unwrap();
        completion.push(EOS);
        let keep = completion
            .len()
            .min(max_length - prompt.len())
            .min(max_length - start.len());
        completion.truncate(keep);
        let prompt_len = prompt.len();
        prompt.extend_from_slice(&completion);
        let mean_c = mean_nll_by_hand(&model, &prompt, prompt_len);
        let mut alone = start.clone();
        alone.extend_from_slice(&completion);
        let mean_u = mean_nll_by_hand(&model, &alone, start.len());
        let want = (mean_c - mean_u).exp();
        assert!(ifd.is_finite() && ifd > 0.0, "{}: ifd {ifd}", example.id);
        assert!(
            (ifd - want).abs() <= 1e-4 * want,
            "{}: ifd {ifd} vs by hand {want}",
            example.id
        );
    }
}

#[test]
fn ifd_matches_a_computation_by_hand() {
    check_against_hand(4096);
}

#[test]
fn ifd_with_truncated_completions_matches_a_computation_by_hand() {
    let (_, tokenizer, examples) = setup();
    let template = PromptTemplate::default();
    let longest_prompt = examples
        .iter()
        .map(|e| {
            tokenizer
                .encode(&template.render_prompt(e), true)
                .unwrap()
                .len()
        })
        .max()
        .unwrap();
    check_against_hand(longest_prompt + 3);
}

#[test]
fn ifd_does_not_depend_on_batch_size() {
    let (model, tokenizer, examples) = setup();
    let template = PromptTemplate::default();
    let refs: Vec<&Example> = examples.iter().collect();
    let one = ifd_scores(&model, &tokenizer, &template, EOS, PAD, &refs, 1, 4096).unwrap();
    let three = ifd_scores(&model, &tokenizer, &template, EOS, PAD, &refs, 3, 4096).unwrap();
    assert_eq!(one.len(), three.len());
    for (a, b) in one.iter().zip(&three) {
        assert!(a.is_finite() && *a > 0.0);
        assert!((a - b).abs() <= 1e-5 * a.max(1.0), "{a} vs {b}");
    }
}

#[test]
fn ifd_rejects_a_zero_batch_size() {
    let (model, tokenizer, examples) = setup();
    let refs: Vec<&Example> = examples.iter().collect();
    let template = PromptTemplate::default();
    assert!(ifd_scores(&model, &tokenizer, &template, EOS, PAD, &refs, 0, 4096).is_err());
    let none = ifd_scores(&model, &tokenizer, &template, EOS, PAD, &[], 2, 4096).unwrap();
    assert!(none.is_empty());
}
