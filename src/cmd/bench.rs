//! `premem bench sample|train|evaluate`: throughput on random inputs, one JSON line
//! each, for the comparison scripts in benches/ (benches/README.md).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use premem_core::SamplingSpec;
use premem_core::spec::plan::{ModelShape, PlanSettings, RankPlan, Stage, WeightKind};
use premem_core::spec::{ActivationCheckpointing, Sharding};
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
    Train(TrainBench),
    /// The evaluator's work on a checkpoint (K samples per example stopped
    /// at the stop string, plus target perplexity): examples/s and generated
    /// tokens/s after warm-up. Prints one JSON line; writes the rows to --out.
    Evaluate(Box<super::bench_evaluate::EvaluateBench>),
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
                .map(|i| {
                    let tokens = Vec::<i64>::try_from(tch::Tensor::randint(
                        vocab,
                        [prompt_len as i64],
                        (Kind::Int64, Device::Cpu),
                    ))
                    .expect("int64 tokens");
                    Prompt::new(tokens, i as u64)
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
                premem_model::generate(&model, &batch, &sampling, Stop::default())?;
            }
            sync();
            let started = Instant::now();
            let out = premem_model::generate(&model, &batch, &sampling, Stop::default())?;
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
        BenchCommand::Train(args) => args.run()?,
        BenchCommand::Evaluate(args) => args.run()?,
    }
    Ok(())
}

/// `premem bench train`.
#[derive(clap::Args)]
pub struct TrainBench {
    /// A Hugging Face config.json (the model is randomly initialised).
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 8)]
    pub micro_batch_size: usize,
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup_steps: usize,
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Weight dtype: auto (bf16 with fp32 master on CUDA, f32 on the CPU), f32, bf16.
    #[arg(long, value_enum, default_value_t = DType::Auto)]
    pub dtype: DType,
    /// Also time each stage of a step (forward, loss, backward, gather,
    /// all_reduce, clip, update), synchronising the device between them.
    #[arg(long)]
    pub stages: bool,
    /// Keep only each decoder layer's input and recompute the layer in
    /// backward (train.activation_checkpointing = "layers").
    #[arg(long)]
    pub activation_checkpointing: bool,
    /// Score the loss this many tokens at a time (train.loss_chunk_tokens).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub loss_chunk_tokens: Option<u64>,
    /// Optimizer sharding to run: none, zero1 or zero2 (one rank: zero1 and
    /// zero2 take their code paths over the whole range).
    #[arg(long, value_enum, default_value_t = Sharding::None)]
    pub sharding: Sharding,
}

impl TrainBench {
    fn run(self) -> Result<()> {
        let device = parse_device(&self.device)?;
        if self.batch_size == 0 || self.micro_batch_size == 0 || self.seq_len < 2 || self.steps == 0
        {
            bail!(
                "--batch-size, --micro-batch-size and --steps must be positive, --seq-len at least 2"
            );
        }
        let sharding = self.sharding;
        let Some(stage) = Stage::of(sharding) else {
            bail!(
                "--sharding auto is for jobs (the memory plan decides it); give none, zero1 or zero2"
            );
        };
        let kind = self.dtype.kind(device);
        let loss = LossOptions {
            checkpoint_layers: self.activation_checkpointing,
            chunk_tokens: self.loss_chunk_tokens.map(|n| n as usize),
        };
        let settings = bench_train::BenchSettings {
            batch_size: self.batch_size,
            micro_batch_size: self.micro_batch_size,
            seq_len: self.seq_len,
            warmup_steps: self.warmup_steps,
            steps: self.steps,
            device,
            kind,
            stages: self.stages,
            loss,
            sharding,
            planned_bytes: Some(self.planned_bytes(stage, kind, loss)?),
        };
        let result = bench_train::bench_train(ModelConfig::from_file(&self.config)?, &settings)?;
        println!("{}", serde_json::to_string(&result)?);
        Ok(())
    }

    /// What the memory plan says one rank of this setting holds.
    fn planned_bytes(&self, stage: Stage, kind: Kind, loss: LossOptions) -> Result<u64> {
        let text = std::fs::read_to_string(&self.config)
            .with_context(|| format!("reading {}", self.config.display()))?;
        let shape = ModelShape::from_config_json(&text, &self.config)?;
        let settings = PlanSettings {
            world_size: 1,
            sharding: stage.sharding(),
            checkpointing: if loss.checkpoint_layers {
                ActivationCheckpointing::Layers
            } else {
                ActivationCheckpointing::None
            },
            micro_batch_size: self.micro_batch_size as u64,
            rank_batch: self.batch_size as u64,
            max_length: self.seq_len as u64,
            kind: if kind == Kind::Float {
                WeightKind::Fp32
            } else {
                WeightKind::Bf16
            },
            loss_chunk_tokens: loss.chunk_tokens.map(|n| n as u64),
            eval: None,
        };
        Ok(RankPlan::new(&shape, &settings, stage).total())
    }
}
