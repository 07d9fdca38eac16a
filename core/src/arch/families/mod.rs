//! One module per Hugging Face family: its `config.json` defaults and the
//! switches that set it apart from Llama. The layers themselves are shared.

pub(crate) mod gemma2;
pub(crate) mod llama;
pub(crate) mod mistral;
pub(crate) mod qwen2;
