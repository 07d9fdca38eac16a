//! What a run is made of, loaded and checked before anything is written:
//! the train data, the model config and tokenizer, the tokenized examples.

use std::path::{Path, PathBuf};

use premem_core::Dataset;
use premem_core::spec::{JobSpec, Precision};
use premem_model::batch::{LengthLimit, TokenizedExample, tokenize};
use premem_model::{ModelConfig, Tokenizer};
use tch::{Device, Kind};

use crate::error::{Result, TrainError};

pub(super) struct Inputs {
    pub data: Dataset,
    /// `JobSpec::inputs_digest`.
    pub digest: String,
    pub tokenized: Vec<TokenizedExample>,
    pub tokenizer: Tokenizer,
    pub config: ModelConfig,
    pub eos: i64,
    pub pad: i64,
}

/// `train.device` as a libtorch device.
pub(crate) fn train_device(spec: &JobSpec) -> Result<Device> {
    premem_model::runtime::parse_device(&spec.train.device)
        .map_err(|e| TrainError::Config(format!("train.device {e}")))
}

/// The element type of the weights for `train.precision` on `device`.
pub(super) fn weight_kind(precision: Precision, device: Device) -> Kind {
    match precision {
        Precision::Fp32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
        Precision::Auto if device.is_cuda() => Kind::BFloat16,
        Precision::Auto => Kind::Float,
    }
}

pub(super) fn load_inputs(spec: &JobSpec) -> Result<Inputs> {
    let data = Dataset::load(&spec.data.train)?;
    let digest = spec.inputs_digest()?;
    let (config_path, tokenizer_path) = model_files(spec);
    let config = ModelConfig::from_file(&config_path).map_err(premem_model::ModelError::from)?;
    check_context(spec, &config, &config_path)?;
    let tokenizer = Tokenizer::from_file(&tokenizer_path)?;
    tokenizer.check_fits(config.vocab_size)?;
    let eos = *config.eos_token_ids.first().ok_or_else(|| {
        TrainError::Config(format!(
            "{}: no eos_token_id; training needs one to end each completion",
            config_path.display()
        ))
    })?;
    let pad = config.pad_token_id.unwrap_or(eos);
    let tokenized = tokenize_all(spec, &data, &tokenizer, eos)?;
    Ok(Inputs {
        data,
        digest,
        tokenized,
        tokenizer,
        config,
        eos,
        pad,
    })
}

/// The model config and tokenizer files: a base model's own (unless
/// `model.tokenizer` names another), or those the spec names.
fn model_files(spec: &JobSpec) -> (PathBuf, PathBuf) {
    match (&spec.model.base, &spec.model.config) {
        (Some(base), _) => {
            let base = Path::new(base);
            let tokenizer = spec
                .model
                .tokenizer
                .as_ref()
                .map(Into::into)
                .unwrap_or_else(|| base.join(premem_model::tokenizer::TOKENIZER_FILE));
            (base.join("config.json"), tokenizer)
        }
        (None, Some(config)) => (
            config.into(),
            spec.model.tokenizer.as_ref().expect("validated").into(),
        ),
        (None, None) => unreachable!("validated"),
    }
}

/// `train.max_length` within the model's context: past it the model has
/// no positions, and the evaluators would refuse what was trained.
fn check_context(spec: &JobSpec, config: &ModelConfig, path: &Path) -> Result<()> {
    let context = config.max_position_embeddings as usize;
    if spec.train.max_length > context {
        return Err(TrainError::Config(format!(
            "train.max_length {} is above the model's context: {} has max_position_embeddings {context}",
            spec.train.max_length,
            path.display()
        )));
    }
    Ok(())
}

fn tokenize_all(
    spec: &JobSpec,
    data: &Dataset,
    tokenizer: &Tokenizer,
    eos: i64,
) -> Result<Vec<TokenizedExample>> {
    let mut tokenized = Vec::with_capacity(data.len());
    let mut truncated = 0usize;
    for example in &data.examples {
        let (t, cut) = tokenize(
            example,
            &spec.prompt,
            tokenizer,
            eos,
            LengthLimit::train(spec.train.max_length),
        )?;
        truncated += cut as usize;
        tokenized.push(t);
    }
    if truncated > 0 {
        tracing::warn!(
            truncated,
            max_length = spec.train.max_length,
            "completions cut to train.max_length"
        );
    }
    Ok(tokenized)
}
