//! The sizes of a decoder LM as its Hugging Face `config.json` gives them:
//! enough to count parameters and activations without loading weights (and
//! without libtorch: the coordinator plans too). They are read off the same
//! resolved [`ModelConfig`] the model's layers are built from
//! (`crate::arch`: which families tie embeddings by default, Qwen2's q/k/v
//! bias, Gemma2's head_dim of 256, four norms per layer and soft-capped
//! attention), and `premem-model`'s tests check this count against the
//! tensors of every family's model.

use std::path::{Path, PathBuf};

use super::PlanError;
use crate::arch::ModelConfig;
use crate::spec::ModelSpec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelShape {
    pub vocab_size: u64,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub num_layers: u64,
    pub num_heads: u64,
    pub num_kv_heads: u64,
    pub head_dim: u64,
    pub tie_word_embeddings: bool,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// RMSNorms per decoder layer: 2, or 4 with Gemma2's sandwich norms.
    pub norms_per_layer: u64,
    /// Soft-capped attention scores (Gemma2) take the eager path, which
    /// keeps a `[heads, seq, seq]` score matrix per layer for backward.
    pub eager_attention: bool,
}

impl ModelShape {
    /// The shape of the model a job trains: `model.base`'s config.json or
    /// `model.config`.
    pub fn for_model(model: &ModelSpec) -> Result<ModelShape, PlanError> {
        let path = match (&model.base, &model.config) {
            (Some(base), _) => Path::new(base).join("config.json"),
            (None, Some(config)) => PathBuf::from(config),
            (None, None) => return Err(PlanError::NoModel),
        };
        Self::from_file(&path)
    }

    pub fn from_file(path: &Path) -> Result<ModelShape, PlanError> {
        Self::from_config(&ModelConfig::from_file(path)?, path)
    }

    /// Parses config.json text; `origin` names it in errors.
    pub fn from_config_json(text: &str, origin: &Path) -> Result<ModelShape, PlanError> {
        Self::from_config(&ModelConfig::from_json_str(text, origin)?, origin)
    }

    /// The sizes of a resolved configuration (its sizes are positive: the
    /// resolution checked them).
    pub fn from_config(config: &ModelConfig, origin: &Path) -> Result<ModelShape, PlanError> {
        let size = |value: i64| value.max(0) as u64;
        let shape = ModelShape {
            vocab_size: size(config.vocab_size),
            hidden_size: size(config.hidden_size),
            intermediate_size: size(config.intermediate_size),
            num_layers: size(config.num_layers),
            num_heads: size(config.num_heads),
            num_kv_heads: size(config.num_kv_heads),
            head_dim: size(config.head_dim),
            tie_word_embeddings: config.tie_word_embeddings,
            qkv_bias: config.qkv_bias,
            o_bias: config.o_bias,
            mlp_bias: config.mlp_bias,
            norms_per_layer: if config.sandwich_norms { 4 } else { 2 },
            eager_attention: config.attn_logit_softcap.is_some(),
        };
        shape.check_bounds().map_err(|message| PlanError::Config {
            path: origin.into(),
            message,
        })?;
        Ok(shape)
    }

    /// Sizes far past any model, which keep the parameter count and the
    /// model states' bytes within 64 bits (activations, logits and KV
    /// caches saturate instead: they are "too large" either way).
    fn check_bounds(&self) -> Result<(), String> {
        let limits = [
            ("vocab_size", self.vocab_size, 1 << 24),
            ("hidden_size", self.hidden_size, 1 << 20),
            ("intermediate_size", self.intermediate_size, 1 << 22),
            ("num_hidden_layers", self.num_layers, 1 << 12),
            ("num_attention_heads", self.num_heads, 1 << 12),
            ("num_key_value_heads", self.num_kv_heads, self.num_heads),
            ("head_dim", self.head_dim, 1 << 12),
        ];
        for (name, value, most) in limits {
            if value > most {
                return Err(format!(
                    "{name} {value} is above the most premem plans for ({most})"
                ));
            }
        }
        Ok(())
    }

    pub fn q_dim(&self) -> u64 {
        self.num_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> u64 {
        self.num_kv_heads * self.head_dim
    }

    /// Trainable parameters: embeddings, each layer's projections, biases
    /// and norms, the final norm, and the LM head unless tied.
    pub fn parameters(&self) -> u64 {
        let (h, i, q, kv) = (
            self.hidden_size,
            self.intermediate_size,
            self.q_dim(),
            self.kv_dim(),
        );
        let attention = h * q
            + 2 * h * kv
            + q * h
            + if self.qkv_bias { q + 2 * kv } else { 0 }
            + if self.o_bias { h } else { 0 };
        let mlp = 3 * h * i + if self.mlp_bias { 2 * i + h } else { 0 };
        let layer = attention + mlp + self.norms_per_layer * h;
        let embeddings = self.vocab_size * h;
        let head = if self.tie_word_embeddings {
            0
        } else {
            embeddings
        };
        embeddings + self.num_layers * layer + h + head
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// meta-llama/Meta-Llama-3-8B's config.json (the keys that size it).
    pub(crate) const LLAMA3_8B: &str = r#"{"model_type": "llama", "vocab_size": 128256,
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": false}"#;
    /// google/gemma-2-9b's config.json (the keys that size it).
    pub(crate) const GEMMA2_9B: &str = r#"{"model_type": "gemma2", "vocab_size": 256000,
        "hidden_size": 3584, "intermediate_size": 14336, "num_hidden_layers": 42,
        "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
        "attn_logit_softcapping": 50.0}"#;

    fn shape(text: &str) -> ModelShape {
        ModelShape::from_config_json(text, Path::new("config.json")).unwrap()
    }

    #[test]
    fn published_parameter_counts() {
        // Meta: "8B" (8.03 B); Google: "9B" (9.24 B).
        assert_eq!(shape(LLAMA3_8B).parameters(), 8_030_261_248);
        assert_eq!(shape(GEMMA2_9B).parameters(), 9_241_705_984);
        let gemma = shape(GEMMA2_9B);
        assert!(gemma.tie_word_embeddings && gemma.eager_attention);
        assert_eq!(gemma.norms_per_layer, 4);
    }

    #[test]
    fn unknown_families_and_missing_keys_name_the_file() {
        let err = ModelShape::from_config_json(
            &LLAMA3_8B.replace("llama", "gpt2"),
            Path::new("m/config.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("m/config.json") && err.contains("'gpt2'"),
            "{err}"
        );
        let err = ModelShape::from_config_json(r#"{"model_type": "llama"}"#, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.json") && err.contains("vocab_size"),
            "{err}"
        );
    }
}
