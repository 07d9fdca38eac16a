//! Llama (1/2/3.x): the reference the other families are described against.
//! `attention_bias` puts a bias on q/k/v/o, `mlp_bias` on the MLP; Llama 3.1+
//! uses rope scaling of type `llama3` (handled in `config::resolve_rope`).

use std::path::Path;

use serde_json::Value;

use crate::arch::config::Result;
use crate::arch::config::{Family, FamilyDefaults, HfConfig, ModelConfig};

pub(crate) fn resolve(hf: &HfConfig, raw: Value, origin: &Path) -> Result<ModelConfig> {
    let defaults = FamilyDefaults {
        activation: "silu",
        tie_word_embeddings: false,
        max_position_embeddings: 2048,
    };
    let mut config = ModelConfig::common(hf, raw, Family::Llama, defaults, origin)?;
    let attention_bias = hf.attention_bias.unwrap_or(false);
    config.qkv_bias = attention_bias;
    config.o_bias = attention_bias;
    config.mlp_bias = hf.mlp_bias.unwrap_or(false);
    Ok(config)
}
