//! Qwen2 / Qwen2.5: Llama with a bias on q/k/v (never on o), and sliding-window
//! attention on layers `>= max_window_layers` when `use_sliding_window` is set.

use std::path::Path;

use serde_json::Value;

use crate::arch::config::Result;
use crate::arch::config::{Family, FamilyDefaults, HfConfig, ModelConfig};

pub(crate) fn resolve(hf: &HfConfig, raw: Value, origin: &Path) -> Result<ModelConfig> {
    let defaults = FamilyDefaults {
        activation: "silu",
        tie_word_embeddings: false,
        max_position_embeddings: 32768,
    };
    let mut config = ModelConfig::common(hf, raw, Family::Qwen2, defaults, origin)?;
    config.qkv_bias = true;
    // transformers: `sliding_window = sliding_window if use_sliding_window else None`.
    let window = if hf.use_sliding_window.unwrap_or(false) {
        hf.sliding_window.unwrap_or(Some(4096))
    } else {
        None
    };
    let max_window_layers = hf.max_window_layers.unwrap_or(28);
    config.set_layer_windows(
        hf,
        window,
        |layer| window.is_some() && layer >= max_window_layers,
        origin,
    )?;
    Ok(config)
}
