//! premem-model: decoder language models of the Hugging Face families Llama
//! (incl. Llama 3.x rope scaling), Qwen2/Qwen2.5, Mistral and Gemma2 in tch,
//! computing what transformers computes.
//!
//! - [`ModelConfig`] from `config.json` (`config`: `premem_core::arch`, the
//!   one place of the families' keys, defaults and switches, shared with the
//!   memory plan);
//! - [`CausalLm`]: load/save the Hugging Face layout (`weights`), forward with
//!   padding and a [`KvCache`], random initialisation;
//! - [`Tokenizer`] from `tokenizer.json`;
//! - [`batch`]: examples to tokens, padded batches and the summed NLL of
//!   the target completion (the training loss and the evaluator's perplexity);
//! - [`generate()`] / [`sample()`]: continuous-batching sampling (each
//!   prompt prefilled once for its K samples), and [`generate_static`], the
//!   static-batch loop it replaced (the bench's reference);
//! - [`runtime`]: loading the CUDA part of libtorch at start-up.

pub mod batch;
pub mod cache;
pub mod error;
pub mod generate;
mod layers;
pub mod model;
pub mod rope;
pub mod runtime;
pub mod slots;
pub mod tokenizer;
pub mod weights;

pub use cache::KvCache;
pub use config::{Family, ModelConfig};
pub use error::{ModelError, Result};
pub use generate::{
    Completion, Prompt, SampleLimits, Sampled, SamplerStats, Stop, StopCondition, generate,
    generate_static, mix_seed, sample,
};
pub use model::{CausalLm, SaveOptions, default_kind};
/// The model configuration (`premem_core::arch::config`), under its old path.
pub use premem_core::arch::config;
pub use tokenizer::Tokenizer;
