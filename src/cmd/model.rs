//! `premem model convert|random`: models in the Hugging Face layout.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;
use premem_evaluator::checkpoint::{DEFAULT_CACHE_DIR, open_model_dir};
use premem_model::{CausalLm, ModelConfig, SaveOptions, Tokenizer};
use tch::Device;

use crate::device::DType;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Load a model directory and save it again: change its dtype or shard
    /// size. The tokenizer is copied along.
    Convert {
        /// Source model directory.
        #[arg(long)]
        model: PathBuf,
        /// Output directory (created; weight files of either layout replaced).
        #[arg(long)]
        out: PathBuf,
        /// Weight dtype of the output (auto keeps fp32).
        #[arg(long, value_enum, default_value_t = DType::Auto)]
        dtype: DType,
        /// Shard the weights into files of at most this many bytes.
        #[arg(long, default_value_t = premem_model::weights::DEFAULT_MAX_SHARD_BYTES)]
        max_shard_bytes: u64,
    },
    /// A randomly initialised model from a config.json (for tests and
    /// benchmarks at real sizes without real weights).
    Random {
        /// A Hugging Face config.json.
        #[arg(long)]
        config: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the initialisation.
        #[arg(long, default_value_t = 0)]
        seed: i64,
        /// Weight dtype (auto: f32).
        #[arg(long, value_enum, default_value_t = DType::Auto)]
        dtype: DType,
        /// Shard the weights into files of at most this many bytes.
        #[arg(long, default_value_t = premem_model::weights::DEFAULT_MAX_SHARD_BYTES)]
        max_shard_bytes: u64,
    },
}

pub fn run(command: ModelCommand) -> Result<()> {
    match command {
        ModelCommand::Convert {
            model,
            out,
            dtype,
            max_shard_bytes,
        } => {
            let model = open_model_dir(&model, Path::new(DEFAULT_CACHE_DIR))?.dir;
            let loaded = CausalLm::load(&model, Device::Cpu, dtype.kind(Device::Cpu))?;
            loaded.save(&out, &SaveOptions { max_shard_bytes })?;
            let tokenizer = model.join(premem_model::tokenizer::TOKENIZER_FILE);
            if tokenizer.is_file() {
                Tokenizer::from_file(&tokenizer)?
                    .save(&out.join(premem_model::tokenizer::TOKENIZER_FILE))?;
            }
            println!("wrote {} ({:?})", out.display(), loaded.kind());
        }
        ModelCommand::Random {
            config,
            out,
            seed,
            dtype,
            max_shard_bytes,
        } => {
            let config = ModelConfig::from_file(&config)?;
            let model = CausalLm::random(config, Device::Cpu, dtype.kind(Device::Cpu), seed);
            model.save(&out, &SaveOptions { max_shard_bytes })?;
            println!("wrote {} ({:?}, seed {seed})", out.display(), model.kind());
        }
    }
    Ok(())
}
