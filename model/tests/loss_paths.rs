//! Activation checkpointing and the chunked loss compute the plain
//! backward's loss and gradients (fp32), with padding, grouped kv heads and
//! Gemma2's windows and soft-caps.

use std::collections::BTreeMap;

use premem_model::batch::{
    Batch, LossOptions, TokenizedExample, nll_backward, per_example_nll, per_example_nll_chunked,
};
use premem_model::{CausalLm, ModelConfig};
use tch::{Device, Kind, Tensor};

fn model(family: &str) -> CausalLm {
    let mut config = serde_json::json!({
        "model_type": family, "vocab_size": 97, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 8, "eos_token_id": 1, "pad_token_id": 0, "initializer_range": 0.3
    });
    if family == "gemma2" {
        let extra = serde_json::json!({
            "sliding_window": 4, "attn_logit_softcapping": 20.0,
            "final_logit_softcapping": 10.0, "query_pre_attn_scalar": 8
        });
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
    }
    let config = ModelConfig::from_json(&config).unwrap();
    CausalLm::random(config, Device::Cpu, Kind::Float, 5)
}

/// Two rows of different lengths (the second is padded), prompts masked.
fn batch() -> Batch {
    let a = TokenizedExample {
        tokens: vec![5, 9, 12, 7, 30, 41, 60, 2, 88, 1],
        prompt_len: 3,
    };
    let b = TokenizedExample {
        tokens: vec![3, 8, 22, 50, 1],
        prompt_len: 2,
    };
    Batch::collate(&[&a, &b], 0, Device::Cpu)
}

/// The loss and every parameter's gradient under `options`.
fn loss_and_grads(model: &CausalLm, options: LossOptions) -> (f64, BTreeMap<String, Tensor>) {
    let vars = model.var_store().variables();
    for var in vars.values() {
        let mut grad = var.grad();
        if grad.defined() {
            let _ = grad.zero_();
        }
    }
    let nll = nll_backward(model, &batch(), 7.0, options, |_| {}).unwrap();
    let grads = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.grad().copy()))
        .collect();
    (nll.double_value(&[]), grads)
}

fn assert_same(family: &str, options: LossOptions) {
    let model = model(family);
    let (loss, grads) = loss_and_grads(&model, LossOptions::default());
    let (got_loss, got_grads) = loss_and_grads(&model, options);
    assert!(loss > 0.0);
    assert!(
        (got_loss - loss).abs() <= 1e-6 * loss,
        "{family} {options:?}: loss {got_loss} vs {loss}"
    );
    for (name, want) in &grads {
        let got = &got_grads[name];
        let scale = want.abs().max().double_value(&[]);
        assert!(scale > 0.0, "{family}: {name} got no gradient");
        let diff = (got - want).abs().max().double_value(&[]);
        // fp32 gradients summed in another order: on an AMD EPYC (MKL's
        // other code path) the chunked loss's norm gradient differed by
        // 1.1e-6 of its largest entry, so 1e-6 was inside the noise.
        assert!(
            diff <= 1e-5 * scale,
            "{family} {options:?}: {name} differs by {diff} (max |grad| {scale})"
        );
    }
}

#[test]
fn activation_checkpointing_gives_the_plain_gradients() {
    for family in ["llama", "gemma2"] {
        assert_same(
            family,
            LossOptions {
                checkpoint_layers: true,
                chunk_tokens: None,
            },
        );
    }
}

#[test]
fn the_chunked_loss_gives_the_plain_loss_and_gradients() {
    for family in ["llama", "gemma2"] {
        for chunk in [1, 3, 64] {
            assert_same(
                family,
                LossOptions {
                    checkpoint_layers: false,
                    chunk_tokens: Some(chunk),
                },
            );
        }
        assert_same(
            family,
            LossOptions {
                checkpoint_layers: true,
                chunk_tokens: Some(4),
            },
        );
    }
}

#[test]
fn the_default_path_is_the_summed_nll_backward() {
    let model = model("llama");
    let (loss, grads) = loss_and_grads(&model, LossOptions::default());
    let vars = model.var_store().variables();
    for var in vars.values() {
        let _ = var.grad().zero_();
    }
    let nll = premem_model::batch::summed_nll(&model, &batch()).unwrap();
    (&nll / 7.0).backward();
    assert_eq!(nll.double_value(&[]), loss);
    for (name, want) in &grads {
        assert!(vars[name].grad().equal(want), "{name}: not bit-identical");
    }
}

#[test]
fn the_chunked_perplexity_pass_gives_each_examples_nll() {
    for family in ["llama", "gemma2"] {
        let model = model(family);
        let whole = tch::no_grad(|| per_example_nll(&model, &batch())).unwrap();
        let want = Vec::<f64>::try_from(whole.to_kind(Kind::Double)).unwrap();
        // Chunks that split a row, that split the rows apart, and one of all.
        for chunk in [1, 3, 5, 100] {
            let got = tch::no_grad(|| per_example_nll_chunked(&model, &batch(), chunk)).unwrap();
            let got = Vec::<f64>::try_from(got.to_kind(Kind::Double)).unwrap();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs(),
                    "{family} chunk {chunk}: {g} vs {w}"
                );
            }
        }
    }
}
