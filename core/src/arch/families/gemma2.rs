//! Gemma2: Llama plus
//! - RMSNorm as `(1 + weight)` in fp32, and four norms per layer (input,
//!   post-attention, pre- and post-feed-forward);
//! - embeddings scaled by `sqrt(hidden_size)`;
//! - GeGLU MLP (`hidden_activation`, default `gelu_pytorch_tanh`);
//! - attention scale `query_pre_attn_scalar ** -0.5`;
//! - soft-capping of attention scores and of the final logits;
//! - sliding-window attention on alternate layers (even layers by default);
//! - tied embeddings by default.

use std::path::Path;

use serde_json::Value;

use crate::arch::config::{Activation, Family, FamilyDefaults, HfConfig, ModelConfig, NormStyle};
use crate::arch::config::{ConfigError, Result};

pub(crate) fn resolve(hf: &HfConfig, raw: Value, origin: &Path) -> Result<ModelConfig> {
    let defaults = FamilyDefaults {
        activation: "gelu_pytorch_tanh",
        tie_word_embeddings: true,
        max_position_embeddings: 8192,
    };
    let mut config = ModelConfig::common(hf, raw, Family::Gemma2, defaults, origin)?;
    // Gemma2 reads `hidden_activation`; `hidden_act` is a leftover in its configs.
    let activation_name = hf
        .hidden_activation
        .as_deref()
        .unwrap_or("gelu_pytorch_tanh");
    config.activation = Activation::from_name(activation_name).ok_or_else(|| {
        ConfigError::config(
            origin,
            format!("field `hidden_activation`: '{activation_name}' is not supported"),
        )
    })?;
    if hf.head_dim.is_none() {
        config.head_dim = 256;
    }
    let attention_bias = hf.attention_bias.unwrap_or(false);
    config.qkv_bias = attention_bias;
    config.o_bias = attention_bias;
    config.norm_style = NormStyle::OnePlusScale;
    config.sandwich_norms = true;
    config.embedding_scale = Some((config.hidden_size as f64).sqrt());
    config.attn_scale = 1.0 / hf.query_pre_attn_scalar.unwrap_or(256.0).sqrt();
    config.attn_logit_softcap = hf.attn_logit_softcapping.unwrap_or(Some(50.0));
    config.final_logit_softcap = hf.final_logit_softcapping.unwrap_or(Some(30.0));
    if hf.use_bidirectional_attention == Some(true) {
        return Err(ConfigError::config(
            origin,
            "field `use_bidirectional_attention`: bidirectional Gemma2 is not a causal LM",
        ));
    }
    let window = hf.sliding_window.unwrap_or(Some(4096));
    config.set_layer_windows(hf, window, |layer| (layer + 1) % 2 == 1, origin)?;
    Ok(config)
}
