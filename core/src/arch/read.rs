//! Reading a `config.json`: its `model_type` picks the family, whose module
//! (`families/`) resolves the keys into a [`ModelConfig`], then checked.

use std::path::Path;

use serde_json::Value;

use crate::arch::config::{ConfigError, Family, HfConfig, ModelConfig, Result};
use crate::arch::families;

impl ModelConfig {
    /// Reads `<dir>/config.json`.
    pub fn from_dir(dir: &Path) -> Result<ModelConfig> {
        Self::from_file(&dir.join("config.json"))
    }

    pub fn from_file(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses config.json text; `origin` names it in errors.
    pub fn from_json_str(text: &str, origin: &Path) -> Result<ModelConfig> {
        let raw: Value = serde_json::from_str(text)
            .map_err(|e| ConfigError::config(origin, format!("not valid JSON: {e}")))?;
        let model_type = match raw.get("model_type") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(ConfigError::config(
                    origin,
                    format!("field `model_type` must be a string, found {other}"),
                ));
            }
            None => return Err(ConfigError::config(origin, "missing field `model_type`")),
        };
        let family =
            Family::from_model_type(&model_type).ok_or_else(|| ConfigError::UnknownModelType {
                path: origin.to_path_buf(),
                model_type: model_type.clone(),
            })?;
        // Parsing the text again (not the Value) keeps line numbers in errors.
        let hf: HfConfig =
            serde_json::from_str(text).map_err(|e| ConfigError::config(origin, e.to_string()))?;
        let config = match family {
            Family::Llama => families::llama::resolve(&hf, raw, origin)?,
            Family::Qwen2 => families::qwen2::resolve(&hf, raw, origin)?,
            Family::Mistral => families::mistral::resolve(&hf, raw, origin)?,
            Family::Gemma2 => families::gemma2::resolve(&hf, raw, origin)?,
        };
        config.validate(origin)?;
        Ok(config)
    }

    /// Builds a config from a JSON value (tests, benches, random models).
    pub fn from_json(value: &Value) -> Result<ModelConfig> {
        Self::from_json_str(&value.to_string(), Path::new("<config>"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tiny_config;
    use serde_json::json;

    /// A config's sizes are bounded (issue 39, item 2): an absurd vocabulary
    /// or width is refused with the field and its bound, before anything is
    /// sized from it; the largest published shapes pass.
    #[test]
    fn config_sizes_are_bounded_and_the_error_names_the_field() {
        let read = |extra| {
            let text = tiny_config("llama", 300, extra).to_string();
            ModelConfig::from_json_str(&text, Path::new("config.json"))
        };
        for (field, value) in [
            ("vocab_size", 100_000_000_i64),
            ("hidden_size", 1 << 20),
            ("intermediate_size", 1 << 30),
            ("max_position_embeddings", 1 << 40),
        ] {
            let err = read(json!({ field: value })).unwrap_err().to_string();
            assert!(
                err.contains(&format!("field `{field}` must be at most"))
                    && err.contains(&value.to_string()),
                "{field}: {err}"
            );
        }
        let large = json!({"vocab_size": 262_144, "max_position_embeddings": 131_072});
        assert!(read(large).is_ok());
    }
}
