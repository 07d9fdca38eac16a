//! Real `config.json` files (Llama-3.1-8B, Gemma-2-9B, Qwen2.5-7B,
//! Mistral-7B, in their published legacy form) read by premem, compared with
//! what transformers made of them (`fixtures/configs/expected.json`).

mod common;

use common::fixtures;
use premem_model::{Family, ModelConfig, rope};
use serde_json::Value;

#[test]
fn real_configs_resolve_as_transformers_resolves_them() {
    let dir = fixtures().join("configs");
    let expected: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert_eq!(expected.len(), 4);
    for (name, want) in &expected {
        let config = ModelConfig::from_file(&dir.join(format!("{name}.json"))).unwrap();
        let ctx = |field: &str| format!("{name}: {field}");
        assert_eq!(
            config.family.model_type(),
            want["model_type"],
            "{}",
            ctx("model_type")
        );
        assert_eq!(
            config.head_dim,
            want["head_dim"].as_i64().unwrap(),
            "{}",
            ctx("head_dim")
        );
        assert_eq!(
            config.num_kv_heads,
            want["num_key_value_heads"].as_i64().unwrap(),
            "{}",
            ctx("kv heads")
        );
        assert!(
            (config.attn_scale - want["scaling"].as_f64().unwrap()).abs() < 1e-12,
            "{}",
            ctx("scaling")
        );
        assert_eq!(
            config.qkv_bias,
            want["q_bias"].as_bool().unwrap(),
            "{}",
            ctx("q bias")
        );
        assert_eq!(
            config.o_bias,
            want["o_bias"].as_bool().unwrap(),
            "{}",
            ctx("o bias")
        );
        assert_eq!(
            config.mlp_bias,
            want["mlp_bias"].as_bool().unwrap(),
            "{}",
            ctx("mlp bias")
        );
        assert_eq!(
            config.tie_word_embeddings,
            want["tie_word_embeddings"].as_bool().unwrap(),
            "{}",
            ctx("tie")
        );
        assert_eq!(
            config.rms_norm_eps,
            want["rms_norm_eps"].as_f64().unwrap(),
            "{}",
            ctx("eps")
        );
        assert_eq!(
            config.attn_logit_softcap,
            want["attn_logit_softcapping"].as_f64(),
            "{}",
            ctx("attn cap")
        );
        assert_eq!(
            config.final_logit_softcap,
            want["final_logit_softcapping"].as_f64(),
            "{}",
            ctx("final cap")
        );
        let windows: Vec<Option<i64>> = want["sliding_windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(Value::as_i64)
            .collect();
        assert_eq!(config.layer_windows, windows, "{}", ctx("sliding windows"));
        assert_eq!(want["rope_attention_scaling"].as_f64(), Some(1.0));

        let inv_freq = Vec::<f32>::try_from(rope::inv_freq(&config)).unwrap();
        let want_freq: Vec<f64> = want["inv_freq"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(
            inv_freq.len(),
            want_freq.len(),
            "{}",
            ctx("inv_freq length")
        );
        for (i, (got, want)) in inv_freq.iter().zip(&want_freq).enumerate() {
            let rel = (*got as f64 - want).abs() / want.abs();
            assert!(
                rel < 1e-6,
                "{name}: inv_freq[{i}] = {got}, transformers {want}"
            );
        }
    }
}

#[test]
fn llama3_scaling_changes_low_frequencies_only() {
    let dir = fixtures().join("configs");
    let scaled = ModelConfig::from_file(&dir.join("llama-3.1-8b.json")).unwrap();
    let mut plain = scaled.clone();
    plain.rope_scaling = premem_model::config::RopeScaling::None;
    let a = Vec::<f32>::try_from(rope::inv_freq(&scaled)).unwrap();
    let b = Vec::<f32>::try_from(rope::inv_freq(&plain)).unwrap();
    assert_eq!(a[0], b[0], "the highest frequency is kept");
    let last = a.len() - 1;
    assert!(
        (a[last] * 8.0 - b[last]).abs() / b[last] < 1e-6,
        "the lowest is divided by factor 8"
    );
}

#[test]
fn transformers5_and_legacy_rope_forms_agree() {
    let legacy = ModelConfig::from_file(&fixtures().join("configs/llama-3.1-8b.json")).unwrap();
    let mut raw = legacy.raw.clone();
    let map = raw.as_object_mut().unwrap();
    let mut params = map.remove("rope_scaling").unwrap();
    params["rope_theta"] = map.remove("rope_theta").unwrap();
    map.insert("rope_parameters".into(), params);
    let modern = ModelConfig::from_json(&raw).unwrap();
    assert_eq!(modern.family, Family::Llama);
    assert_eq!(modern.rope_theta, 500000.0);
    assert_eq!(modern.rope_scaling, legacy.rope_scaling);
}
