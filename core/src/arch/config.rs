//! Model configuration read from a Hugging Face `config.json`: the one place
//! that knows the families' keys, defaults and switches (the model's layers
//! and the memory plan both read [`ModelConfig`]).
//!
//! The four families are one architecture with a handful of switches (biases,
//! norm style, sandwich norms, soft-capping, sliding windows, embedding scale).
//! `HfConfig` is the union of the `config.json` keys they read; each family
//! module (`families/`) applies that family's defaults and switches and yields
//! the resolved [`ModelConfig`] that the shared layers consume.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A `config.json` premem cannot use; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// config.json is unreadable JSON, lacks a field, or holds a value premem
    /// cannot use.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },

    #[error(
        "{path}: unknown model_type '{model_type}' (premem supports: {})",
        Family::NAMES.join(", ")
    )]
    UnknownModelType { path: PathBuf, model_type: String },
}

impl ConfigError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ConfigError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Llama,
    Qwen2,
    Mistral,
    Gemma2,
}

impl Family {
    /// The `model_type` values premem reads.
    pub const NAMES: [&'static str; 4] = ["llama", "qwen2", "mistral", "gemma2"];

    pub fn from_model_type(model_type: &str) -> Option<Family> {
        match model_type {
            "llama" => Some(Family::Llama),
            "qwen2" => Some(Family::Qwen2),
            "mistral" => Some(Family::Mistral),
            "gemma2" => Some(Family::Gemma2),
            _ => None,
        }
    }

    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Mistral => "mistral",
            Family::Gemma2 => "gemma2",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `silu` (SwiGLU MLP).
    Silu,
    /// `gelu_pytorch_tanh` / `gelu_new` (GeGLU MLP with the tanh approximation).
    GeluTanh,
    /// `gelu` (exact erf form).
    Gelu,
}

impl Activation {
    pub fn from_name(name: &str) -> Option<Activation> {
        match name {
            "silu" | "swish" => Some(Activation::Silu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Some(Activation::GeluTanh),
            "gelu" => Some(Activation::Gelu),
            _ => None,
        }
    }
}

/// How an RMSNorm applies its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormStyle {
    /// `weight * normed.to(dtype)` (Llama, Qwen2, Mistral; weights start at 1).
    Scale,
    /// `(normed * (1 + weight)).to(dtype)` in fp32 (Gemma2; weights start at 0).
    OnePlusScale,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// `rope_type = "linear"`: every inverse frequency divided by `factor`.
    Linear {
        factor: f64,
    },
    /// `rope_type = "llama3"` (Llama 3.1+): low frequencies divided by `factor`,
    /// a smooth blend between `low_freq_factor` and `high_freq_factor`.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// The resolved configuration the layers are built from.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub family: Family,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    pub num_kv_heads: i64,
    pub head_dim: i64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: i64,
    /// Bias on q/k/v projections.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub activation: Activation,
    pub tie_word_embeddings: bool,
    pub norm_style: NormStyle,
    /// Gemma2: a norm after attention and around the MLP (pre/post feed-forward).
    pub sandwich_norms: bool,
    /// Gemma2: embeddings multiplied by sqrt(hidden_size).
    pub embedding_scale: Option<f64>,
    /// Softmax scale of attention scores.
    pub attn_scale: f64,
    pub attn_logit_softcap: Option<f64>,
    pub final_logit_softcap: Option<f64>,
    /// Per layer: the sliding window (keys strictly newer than `q - window`), or
    /// `None` for full causal attention.
    pub layer_windows: Vec<Option<i64>>,
    pub bos_token_id: Option<i64>,
    pub eos_token_ids: Vec<i64>,
    pub pad_token_id: Option<i64>,
    /// The `config.json` as read; written back (with `dtype` updated) on save so
    /// keys premem does not use survive a round trip.
    pub raw: Value,
}

/// The union of the `config.json` keys the supported families read. Keys a
/// family has a default for are optional here; `families::*` applies them.
#[derive(Debug, Deserialize)]
pub(crate) struct HfConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    #[serde(default)]
    pub head_dim: Option<i64>,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub hidden_activation: Option<String>,
    #[serde(default)]
    pub max_position_embeddings: Option<i64>,
    #[serde(default)]
    pub rms_norm_eps: Option<f64>,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<Value>,
    #[serde(default)]
    pub rope_parameters: Option<Value>,
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub mlp_bias: Option<bool>,
    /// Missing (family default) differs from `null` (no window).
    #[serde(default, deserialize_with = "present")]
    pub sliding_window: Option<Option<i64>>,
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    #[serde(default)]
    pub max_window_layers: Option<i64>,
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    pub attn_logit_softcapping: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    pub final_logit_softcapping: Option<Option<f64>>,
    #[serde(default)]
    pub bos_token_id: Option<i64>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    #[serde(default)]
    pub use_bidirectional_attention: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum TokenIds {
    One(i64),
    Many(Vec<i64>),
}

/// A key that is present, even as `null`, deserializes to `Some(..)`.
fn present<'de, T, D>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Family defaults for keys a `config.json` may omit.
pub(crate) struct FamilyDefaults {
    pub activation: &'static str,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: i64,
}

/// More layers than any model has (Llama 3.1 405B: 126), and few enough
/// that per-layer settings cost little: a `num_hidden_layers` above it is a
/// damaged config.json (5e18 layers once aborted the process allocating them).
pub const MAX_LAYERS: i64 = 100_000;

impl ModelConfig {
    /// The settings shared by every family; the family module adjusts the rest.
    pub(crate) fn common(
        hf: &HfConfig,
        raw: Value,
        family: Family,
        defaults: FamilyDefaults,
        origin: &Path,
    ) -> Result<ModelConfig> {
        // Per-layer settings are allocated below, before validation.
        if hf.num_hidden_layers > MAX_LAYERS {
            return Err(ConfigError::config(
                origin,
                format!(
                    "field `num_hidden_layers` is {}, more than the {MAX_LAYERS} premem accepts",
                    hf.num_hidden_layers
                ),
            ));
        }
        let head_dim = head_dim(hf, origin)?;
        let activation_name = hf.hidden_act.as_deref().unwrap_or(defaults.activation);
        let activation = Activation::from_name(activation_name).ok_or_else(|| {
            ConfigError::config(
                origin,
                format!(
                    "field `hidden_act`: activation '{activation_name}' is not supported (silu, gelu, gelu_pytorch_tanh, gelu_new)"
                ),
            )
        })?;
        let max_position_embeddings = hf
            .max_position_embeddings
            .unwrap_or(defaults.max_position_embeddings);
        let (rope_theta, rope_scaling) = resolve_rope(hf, max_position_embeddings, origin)?;
        let eos_token_ids = match &hf.eos_token_id {
            None => vec![],
            Some(TokenIds::One(id)) => vec![*id],
            Some(TokenIds::Many(ids)) => ids.clone(),
        };
        Ok(ModelConfig {
            family,
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_layers: hf.num_hidden_layers,
            num_heads: hf.num_attention_heads,
            num_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            head_dim,
            rms_norm_eps: hf.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            activation,
            tie_word_embeddings: hf
                .tie_word_embeddings
                .unwrap_or(defaults.tie_word_embeddings),
            norm_style: NormStyle::Scale,
            sandwich_norms: false,
            embedding_scale: None,
            attn_scale: 1.0 / (head_dim as f64).sqrt(),
            attn_logit_softcap: None,
            final_logit_softcap: None,
            layer_windows: vec![None; hf.num_hidden_layers.max(0) as usize],
            bos_token_id: hf.bos_token_id,
            eos_token_ids,
            pad_token_id: hf.pad_token_id,
            raw,
        })
    }

    pub(crate) fn validate(&self, origin: &Path) -> Result<()> {
        self.validate_shapes(origin)?;
        if !is_positive(self.rms_norm_eps) {
            return Err(ConfigError::config(
                origin,
                "field `rms_norm_eps` must be positive",
            ));
        }
        for (field, cap) in [
            ("attn_logit_softcapping", self.attn_logit_softcap),
            ("final_logit_softcapping", self.final_logit_softcap),
        ] {
            if let Some(cap) = cap
                && !is_positive(cap)
            {
                return Err(ConfigError::config(
                    origin,
                    format!("field `{field}` must be positive or null, found {cap}"),
                ));
            }
        }
        if let Some(window) = self.layer_windows.iter().flatten().find(|w| **w <= 0) {
            return Err(ConfigError::config(
                origin,
                format!("field `sliding_window` must be positive, found {window}"),
            ));
        }
        self.validate_special_tokens(origin)
    }

    /// Sizes are positive and bounded (far above any published model, so
    /// nothing is sized from an absurd value), heads divide evenly, rotary
    /// dimensions pair up.
    fn validate_shapes(&self, origin: &Path) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size, 1 << 24),
            ("hidden_size", self.hidden_size, 1 << 17),
            ("intermediate_size", self.intermediate_size, 1 << 20),
            ("num_hidden_layers", self.num_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_heads, 4096),
            ("num_key_value_heads", self.num_kv_heads, 4096),
            ("head_dim", self.head_dim, 1 << 14),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                1 << 24,
            ),
        ];
        for (field, value, max) in sizes {
            if value <= 0 {
                return Err(ConfigError::config(
                    origin,
                    format!("field `{field}` must be positive, found {value}"),
                ));
            }
            if value > max {
                return Err(ConfigError::config(
                    origin,
                    format!("field `{field}` must be at most {max}, found {value}"),
                ));
            }
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(ConfigError::config(
                origin,
                format!(
                    "field `num_key_value_heads` ({}) must divide `num_attention_heads` ({})",
                    self.num_kv_heads, self.num_heads
                ),
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(ConfigError::config(
                origin,
                format!(
                    "head_dim {} must be even for rotary embeddings",
                    self.head_dim
                ),
            ));
        }
        Ok(())
    }

    /// BOS, EOS and pad ids are in the vocabulary.
    fn validate_special_tokens(&self, origin: &Path) -> Result<()> {
        for id in self
            .bos_token_id
            .iter()
            .chain(&self.eos_token_ids)
            .chain(&self.pad_token_id)
        {
            if *id < 0 || *id >= self.vocab_size {
                return Err(ConfigError::config(
                    origin,
                    format!(
                        "special token id {id} is outside the vocabulary (vocab_size {})",
                        self.vocab_size
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Sets every layer's window from `layer_types` when given, else from
    /// `default_sliding(layer)`; `window` is the configured sliding window.
    pub(crate) fn set_layer_windows(
        &mut self,
        hf: &HfConfig,
        window: Option<i64>,
        default_sliding: impl Fn(i64) -> bool,
        origin: &Path,
    ) -> Result<()> {
        let sliding: Vec<bool> = match &hf.layer_types {
            Some(types) => {
                if types.len() as i64 != self.num_layers {
                    return Err(ConfigError::config(
                        origin,
                        format!(
                            "field `layer_types` has {} entries, num_hidden_layers is {}",
                            types.len(),
                            self.num_layers
                        ),
                    ));
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        "sliding_attention" => Ok(true),
                        "full_attention" => Ok(false),
                        other => Err(ConfigError::config(
                            origin,
                            format!(
                                "field `layer_types`: '{other}' is not supported (full_attention, sliding_attention)"
                            ),
                        )),
                    })
                    .collect::<Result<_>>()?
            }
            None => (0..self.num_layers).map(default_sliding).collect(),
        };
        self.layer_windows = sliding
            .into_iter()
            .map(|s| if s { window } else { None })
            .collect();
        Ok(())
    }

    pub fn num_kv_groups(&self) -> i64 {
        self.num_heads / self.num_kv_heads
    }

    /// The `config.json` to write next to saved weights of the given dtype
    /// (`"float32"`, `"bfloat16"`, ...).
    pub fn to_json(&self, dtype: &str) -> Value {
        let mut raw = self.raw.clone();
        if let Value::Object(map) = &mut raw {
            map.insert("dtype".into(), Value::String(dtype.into()));
            if map.contains_key("torch_dtype") {
                map.insert("torch_dtype".into(), Value::String(dtype.into()));
            }
        }
        raw
    }
}

/// `head_dim`, or `hidden_size / num_attention_heads` when the file has
/// none; more heads than hidden units is an error that names both.
fn head_dim(hf: &HfConfig, origin: &Path) -> Result<i64> {
    match hf.head_dim {
        Some(dim) => Ok(dim),
        None if hf.num_attention_heads > hf.hidden_size && hf.hidden_size > 0 => {
            Err(ConfigError::config(
                origin,
                format!(
                    "field `num_attention_heads` ({}) is larger than `hidden_size` ({}) and \
                     there is no `head_dim`: a head would have no dimensions",
                    hf.num_attention_heads, hf.hidden_size
                ),
            ))
        }
        None => Ok(hf.hidden_size / hf.num_attention_heads.max(1)),
    }
}

/// Resolves rope theta and scaling from either the transformers 5 form
/// (`rope_parameters`) or the legacy form (`rope_theta` + `rope_scaling`).
fn resolve_rope(
    hf: &HfConfig,
    max_position_embeddings: i64,
    origin: &Path,
) -> Result<(f64, RopeScaling)> {
    let (field, params) = match (&hf.rope_parameters, &hf.rope_scaling) {
        (Some(p @ Value::Object(_)), _) => ("rope_parameters", Some(p)),
        (_, Some(p @ Value::Object(_))) => ("rope_scaling", Some(p)),
        _ => ("rope_parameters", None),
    };
    let number = |key: &str| -> Result<Option<f64>> {
        match params.and_then(|p| p.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                ConfigError::config(
                    origin,
                    format!("field `{field}.{key}` must be a number, found {v}"),
                )
            }),
        }
    };
    let require = |key: &str| -> Result<f64> {
        number(key)?
            .ok_or_else(|| ConfigError::config(origin, format!("missing field `{field}.{key}`")))
    };
    if let Some(p) = params
        && (p.get("full_attention").is_some() || p.get("sliding_attention").is_some())
    {
        return Err(ConfigError::config(
            origin,
            format!("field `{field}`: per-layer-type rope parameters are not supported"),
        ));
    }
    let rope_type = params
        .and_then(|p| p.get("rope_type").or_else(|| p.get("type")))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let theta = number("rope_theta")?.or(hf.rope_theta).unwrap_or(10_000.0);
    if !is_positive(theta) {
        return Err(ConfigError::config(
            origin,
            "field `rope_theta` must be positive",
        ));
    }
    if let Some(partial) = number("partial_rotary_factor")?
        && partial != 1.0
    {
        return Err(ConfigError::config(
            origin,
            format!("field `{field}.partial_rotary_factor` = {partial} is not supported"),
        ));
    }
    let scaling = match rope_type {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: require("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: require("factor")?,
            low_freq_factor: require("low_freq_factor")?,
            high_freq_factor: require("high_freq_factor")?,
            original_max_position_embeddings: number("original_max_position_embeddings")?
                .unwrap_or(max_position_embeddings as f64),
        },
        other => {
            return Err(ConfigError::config(
                origin,
                format!(
                    "field `{field}.rope_type`: '{other}' is not supported (default, linear, llama3)"
                ),
            ));
        }
    };
    Ok((theta, scaling))
}

/// `x > 0`, false for NaN.
fn is_positive(x: f64) -> bool {
    x > 0.0
}
