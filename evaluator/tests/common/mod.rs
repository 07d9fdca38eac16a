//! What the evaluator's tests share.
#![allow(dead_code)]

use premem_core::data::synth::{SynthConfig, generate, train_task_tokenizer};
use premem_core::{Example, PromptTemplate};
use premem_model::{CausalLm, ModelConfig, Tokenizer};
use tch::{Device, Kind};

/// A tiny random Llama (seed 3) over the tokenizer of `train` synthetic
/// problems (seed 4), and those problems.
pub fn tiny_synth_model(train: usize) -> (CausalLm, Tokenizer, Vec<Example>) {
    let data = generate(&SynthConfig {
        train,
        test: 0,
        pool_per_example: 0,
        seed: 4,
        ..Default::default()
    })
    .unwrap();
    let trained = train_task_tokenizer(&data.train, &PromptTemplate::default(), 300).unwrap();
    let tokenizer = Tokenizer::from_tokenizer(trained, "synth".into());
    let config = ModelConfig::from_json(&serde_json::json!({
        "model_type": "llama", "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "eos_token_id": 1, "pad_token_id": 0, "initializer_range": 0.2
    }))
    .unwrap();
    (
        CausalLm::random(config, Device::Cpu, Kind::Float, 3),
        tokenizer,
        data.train,
    )
}
