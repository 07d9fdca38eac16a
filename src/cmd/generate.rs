//! `premem generate`: text from a Hugging Face model directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use premem_core::SamplingSpec;
use premem_evaluator::checkpoint::{DEFAULT_CACHE_DIR, open_model_dir};
use premem_model::{CausalLm, Prompt, Stop, Tokenizer};

use crate::device::{DType, parse_device};

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Model directory in the Hugging Face layout (verified against its
    /// MANIFEST.json when it is a published checkpoint).
    #[arg(long)]
    model: PathBuf,
    /// Prompt text; repeat for a batch (sampled together).
    #[arg(long = "prompt", required = true)]
    prompts: Vec<String>,
    /// Tokens to generate per sample at most.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: i64,
    /// Sampling temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens with this much probability.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Samples per prompt (the prompt is prefilled once and shared).
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// Seed of the sampling generators.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Device: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Weight dtype: auto (bf16 on CUDA, f32 on the CPU), f32, bf16, f16.
    #[arg(long, value_enum, default_value_t = DType::Auto)]
    dtype: DType,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let kind = args.dtype.kind(device);
    let start = Instant::now();
    let dir = open_model_dir(&args.model, Path::new(DEFAULT_CACHE_DIR))?.dir;
    let model = CausalLm::load(&dir, device, kind)?;
    let tokenizer = Tokenizer::from_dir(&dir)?;
    tokenizer.check_fits(model.config().vocab_size)?;
    let load_time = start.elapsed();

    let prompts = args
        .prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let tokens = tokenizer.encode(p, true)?;
            Ok(Prompt::new(
                tokens,
                premem_model::mix_seed(args.seed, i as u64, 0),
            ))
        })
        .collect::<Result<Vec<_>, premem_model::ModelError>>()?;
    let sampling = SamplingSpec {
        samples: args.samples,
        temperature: args.temperature,
        top_p: args.top_p,
        max_new_tokens: args.max_new_tokens,
        ..SamplingSpec::default()
    };
    sampling
        .validate()
        .map_err(|e| anyhow::anyhow!(e.as_flag()))?;
    let start = Instant::now();
    let stop = Stop::at_tokens(&model.config().eos_token_ids);
    let completions = premem_model::generate(&model, &prompts, &sampling, stop)
        .with_context(|| format!("generating with {}", args.model.display()))?;
    let elapsed = start.elapsed().as_secs_f64();

    for c in &completions {
        let text = tokenizer.decode(&c.tokens, true)?;
        println!(
            "[prompt {} sample {}] {}{}",
            c.prompt_index, c.sample_index, args.prompts[c.prompt_index], text
        );
    }
    let generated: usize = completions.iter().map(|c| c.tokens.len()).sum();
    eprintln!(
        "{} ({:?}, {} layers) on {device:?} in {kind:?}: loaded in {:.2}s, {generated} tokens in {:.2}s ({:.0} tokens/s)",
        args.model.display(),
        model.config().family,
        model.config().num_layers,
        load_time.as_secs_f64(),
        elapsed,
        generated as f64 / elapsed.max(1e-9)
    );
    Ok(())
}
