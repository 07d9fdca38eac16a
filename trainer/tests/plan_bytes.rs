//! The memory plan's model-state bytes against the tensors a real model and
//! optimizer hold: for each family's switches (tied or not, biases, Gemma2's
//! norms and head_dim), in fp32 and bf16, the plan's parameter count equals
//! the var store's and its bytes for each sharding equal the distinct
//! memory of the weights, their `.grad`s, the optimizer state and the
//! reduced gradient of a rank (rank 0 of 8 when sharded: building its
//! optimizer needs no collective).

use std::path::Path;

use premem_core::spec::OptimizerKind;
use premem_core::spec::plan::{ModelShape, ModelStates, Stage, WeightKind};
use premem_model::{CausalLm, ModelConfig};
use premem_trainer::optim::{AdamConfig, Optimizer, Partition};
use tch::{Device, Kind, Tensor};

const CONFIGS: [&str; 6] = [
    r#"{"model_type": "llama", "vocab_size": 96, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}"#,
    r#"{"model_type": "llama", "vocab_size": 96, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "tie_word_embeddings": true,
        "attention_bias": true, "mlp_bias": true}"#,
    r#"{"model_type": "qwen2", "vocab_size": 96, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 1}"#,
    r#"{"model_type": "mistral", "vocab_size": 96, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "attention_bias": true, "mlp_bias": true}"#,
    r#"{"model_type": "gemma2", "vocab_size": 96, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1}"#,
    r#"{"model_type": "gemma2", "vocab_size": 96, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 2, "head_dim": 8,
        "attention_bias": true, "tie_word_embeddings": false}"#,
];

/// Bytes of the union of the tensors' memory: views into one buffer count
/// once, as they occupy it once.
fn distinct_bytes(tensors: &[Tensor]) -> u64 {
    let mut ranges: Vec<(usize, usize)> = tensors
        .iter()
        .filter(|t| t.defined())
        .map(|t| {
            let start = t.data_ptr() as usize;
            (start, start + t.numel() * t.kind().elt_size_in_bytes())
        })
        .collect();
    ranges.sort();
    let (mut total, mut end) = (0, 0);
    for (s, e) in ranges {
        let s = s.max(end);
        if e > s {
            total += e - s;
            end = e;
        }
    }
    total as u64
}

fn held_bytes(model: &CausalLm, optimizer: &Optimizer) -> u64 {
    let variables = model.var_store().variables();
    let mut tensors: Vec<Tensor> = variables.values().map(Tensor::shallow_clone).collect();
    tensors.extend(variables.values().map(Tensor::grad));
    tensors.extend(optimizer.model_state_tensors());
    distinct_bytes(&tensors)
}

const WORLD: usize = 8;

#[test]
fn plan_bytes_equal_the_tensors_of_a_model_and_its_optimizer() {
    let config = AdamConfig {
        kind: OptimizerKind::Adamw,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.0,
    };
    for text in CONFIGS {
        let shape = ModelShape::from_config_json(text, Path::new("config.json")).unwrap();
        for (kind, weights) in [
            (Kind::Float, WeightKind::Fp32),
            (Kind::BFloat16, WeightKind::Bf16),
        ] {
            for stage in Stage::ALL {
                let model_config =
                    ModelConfig::from_json_str(text, Path::new("config.json")).unwrap();
                let model = CausalLm::random(model_config, Device::Cpu, kind, 0);
                let variables = model.var_store().variables().into_iter().collect();
                let world = if stage == Stage::None { 1 } else { WORLD };
                let partition = Partition::new(stage.sharding(), 0, world).unwrap();
                let optimizer = Optimizer::new(variables, config, partition);
                assert_eq!(shape.parameters() as i64, optimizer.numel(), "{text}");
                let planned =
                    ModelStates::new(shape.parameters(), weights, stage, world as u64).total();
                let held = held_bytes(&model, &optimizer);
                // Sharded buffers are padded to a multiple of the world
                // size: at most WORLD - 1 elements of each of five buffers.
                let padding = if stage == Stage::None {
                    0
                } else {
                    5 * 4 * (WORLD as u64 - 1)
                };
                assert!(
                    held >= planned && held - planned <= padding,
                    "{kind:?} {stage:?} {text}: planned {planned}, held {held}"
                );
            }
        }
    }
}
