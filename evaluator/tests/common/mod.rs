//! What the evaluator's tests share.
#![allow(dead_code)]

use premem_core::data::synth::{SynthConfig, generate, train_task_tokenizer};
use premem_core::testing;
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
    let extra = serde_json::json!({"initializer_range": 0.2});
    let config = ModelConfig::from_json(&testing::tiny_config("llama", 300, extra)).unwrap();
    (
        CausalLm::random(config, Device::Cpu, Kind::Float, 3),
        tokenizer,
        data.train,
    )
}
