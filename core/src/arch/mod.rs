//! Model architectures as a Hugging Face `config.json` describes them: the
//! family of a `model_type`, its defaults and the switches that set it apart
//! from Llama, resolved into one [`ModelConfig`]. No libtorch: the memory
//! plan counts parameters from the same resolution the model's layers are
//! built from. A new family or key is taught here only. Imports nothing from
//! the other folders.

pub mod config;
mod families;
mod read;

pub use config::{ConfigError, Family, ModelConfig};
