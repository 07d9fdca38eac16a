//! Mistral: Llama without biases, with an explicit `head_dim` allowed, and one
//! `sliding_window` applied to every layer (`null` means full attention).
//! transformers' Mistral ignores `layer_types`, and so does premem.

use std::path::Path;

use serde_json::Value;

use crate::arch::config::Result;
use crate::arch::config::{Family, FamilyDefaults, HfConfig, ModelConfig};

pub(crate) fn resolve(hf: &HfConfig, raw: Value, origin: &Path) -> Result<ModelConfig> {
    let defaults = FamilyDefaults {
        activation: "silu",
        tie_word_embeddings: false,
        max_position_embeddings: 4096 * 32,
    };
    let mut config = ModelConfig::common(hf, raw, Family::Mistral, defaults, origin)?;
    let window = hf.sliding_window.unwrap_or(Some(4096));
    config.layer_windows = vec![window; config.num_layers as usize];
    Ok(config)
}
