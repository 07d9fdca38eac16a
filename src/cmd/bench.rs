//! `premem bench sample|train`: throughput on random inputs, one JSON line
//! each, for the comparison scripts in benches/ (benches/README.md).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Subcommand;
use premem_core::SamplingSpec;
use premem_model::batch::LossOptions;
use premem_model::{CausalLm, ModelConfig, Prompt, Stop};
use tch::{Device, Kind};

use crate::bench_train;
use crate::device::{DType, parse_device};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Sampling with the KV cache on random prompts (no early stop): sampled
    /// tokens/s. Prints one JSON line.
    Sample {
        /// A Hugging Face config.json (the model is randomly initialised).
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 64)]
        prompts: usize,
        /// K: samples per prompt (the prompt's cache is shared).
        #[arg(long, default_value_t = 8)]
        samples: usize,
        #[arg(long, default_value_t = 128)]
        prompt_len: usize,
        #[arg(long, default_value_t = 256)]
        max_new_tokens: i64,
        #[arg(long, default_value_t = 0.8)]
        temperature: f64,
        #[arg(long, default_value_t = 0.95)]
        top_p: f64,
        /// Untimed runs first.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(long, value_enum, default_value_t = DType::Auto)]
        dtype: DType,
    },
    /// Training steps on random tokens (AdamW, clipping, the real step):
    /// tokens/s after warm-up. Prints one JSON line.
    Train {
        /// A Hugging Face config.json (the model is randomly initialised).
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        #[arg(long, default_value_t = 8)]
        micro_batch_size: usize,
        #[arg(long, default_value_t = 512)]
        seq_len: usize,
        #[arg(long, default_value_t = 3)]
        warmup_steps: usize,
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// auto, cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Weight dtype: auto (bf16 with fp32 master on CUDA, f32 on the CPU), f32, bf16.
        #[arg(long, value_enum, default_value_t = DType::Auto)]
        dtype: DType,
        /// Also time each stage of a step (forward, loss, backward, gather,
        /// all_reduce, clip, update), synchronising the device between them.
        #[arg(long)]
        stages: bool,
        /// Keep only each decoder layer's input and recompute the layer in
        /// backward (train.activation_checkpointing = "layers").
        #[arg(long)]
        activation_checkpointing: bool,
        /// Score the loss this many tokens at a time (train.loss_chunk_tokens).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        loss_chunk_tokens: Option<u64>,
    },
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Sample {
            config,
            prompts,
            samples,
            prompt_len,
            max_new_tokens,
            temperature,
            top_p,
            warmup,
            device,
            dtype,
        } => {
            let device = parse_device(&device)?;
            let config = ModelConfig::from_file(&config)?;
            let vocab = config.vocab_size;
            let model = CausalLm::random(config, device, dtype.kind(device), 0);
            tch::manual_seed(1);
            let batch: Vec<Prompt> = (0..prompts)
                .map(|i| Prompt {
                    tokens: Vec::<i64>::try_from(tch::Tensor::randint(
                        vocab,
                        [prompt_len as i64],
                        (Kind::Int64, Device::Cpu),
                    ))
                    .expect("int64 tokens"),
                    seed: i as u64,
                })
                .collect();
            let sampling = SamplingSpec {
                samples,
                temperature,
                top_p,
                max_new_tokens,
                ..SamplingSpec::default()
            };
            let sync = || {
                if let Device::Cuda(i) = device {
                    tch::Cuda::synchronize(i as i64);
                }
            };
            for _ in 0..warmup {
                premem_model::generate(&model, &batch, &sampling, Stop::default(), 0)?;
            }
            sync();
            let started = Instant::now();
            let out = premem_model::generate(&model, &batch, &sampling, Stop::default(), 0)?;
            sync();
            let seconds = started.elapsed().as_secs_f64();
            let tokens: usize = out.iter().map(|c| c.tokens.len()).sum();
            let parameters: i64 = model
                .var_store()
                .variables()
                .values()
                .map(|t| t.numel() as i64)
                .sum();
            println!(
                "{}",
                serde_json::json!({
                    "parameters": parameters,
                    "sampled_tokens": tokens,
                    "seconds": seconds,
                    "tokens_per_s": tokens as f64 / seconds,
                })
            );
        }
        BenchCommand::Train {
            config,
            batch_size,
            micro_batch_size,
            seq_len,
            warmup_steps,
            steps,
            device,
            dtype,
            stages,
            activation_checkpointing,
            loss_chunk_tokens,
        } => {
            let device = parse_device(&device)?;
            if batch_size == 0 || micro_batch_size == 0 || seq_len < 2 || steps == 0 {
                bail!(
                    "--batch-size, --micro-batch-size and --steps must be positive, --seq-len at least 2"
                );
            }
            let settings = bench_train::BenchSettings {
                batch_size,
                micro_batch_size,
                seq_len,
                warmup_steps,
                steps,
                device,
                kind: dtype.kind(device),
                stages,
                loss: LossOptions {
                    checkpoint_layers: activation_checkpointing,
                    chunk_tokens: loss_chunk_tokens.map(|n| n as usize),
                },
            };
            let result = bench_train::bench_train(ModelConfig::from_file(&config)?, &settings)?;
            println!("{}", serde_json::to_string(&result)?);
        }
    }
    Ok(())
}
