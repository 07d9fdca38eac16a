//! The `premem` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use premem_core::SamplingSpec;
use premem_model::runtime;
use premem_model::{CausalLm, ModelConfig, Prompt, SaveOptions, Stop, Tokenizer, default_kind};
use tch::{Device, Kind};

mod analysis;
mod bench_train;
mod cluster;
mod curate;
mod sweep;

/// premem: distributed LLM finetuning that measures pre-memorization train
/// accuracy while it trains.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as human-readable text or as JSON objects (one per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "PREMEM_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Report what this binary finds: libtorch, CUDA devices, NCCL, and why
    /// anything is missing.
    Doctor,
    /// Generate text from a Hugging Face model directory (config.json,
    /// safetensors weights, tokenizer.json).
    Generate(GenerateArgs),
    /// Write models in the Hugging Face layout.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Make datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Evaluate a checkpoint on a dataset split: K samples per example checked
    /// against the answer, and the perplexity of the target trace. Writes one
    /// row per example (and preamble) to Parquet and prints a summary.
    Eval(EvalArgs),
    /// Evaluate every published checkpoint of a run (train and test splits)
    /// into the run's result files, skipping those already evaluated.
    EvalRun(analysis::EvalRunArgs),
    /// Report P-M accuracy, its calibration, the baselines and the
    /// robustness view of a run or a sweep: report.md, report.html, PNG and
    /// SVG charts, Parquet tables.
    Report(analysis::ReportArgs),
    /// Measure throughput (see benches/README.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Finetune a model as a job spec (TOML) says; checkpoints and metrics go
    /// to the spec's run.output. SIGTERM or Ctrl-C checkpoints and stops.
    Train(TrainArgs),
    /// Run the coordinator: job state, trainer rendezvous, evaluation leases,
    /// live P-M accuracy, Prometheus metrics.
    Coordinator(cluster::CoordinatorArgs),
    /// Run one trainer rank of a submitted job under a coordinator.
    Trainer(cluster::TrainerArgs),
    /// Run an evaluator worker: lease tasks from the coordinator, evaluate
    /// checkpoints, write result files.
    Evaluator(cluster::EvaluatorArgs),
    /// Submit a job spec to a coordinator.
    Submit(cluster::SubmitArgs),
    /// Show a job's state, progress and P-M accuracy so far.
    Status(cluster::JobArgs),
    /// Cancel a job: training stops at its next heartbeat, no more tasks go out.
    Cancel(cluster::JobArgs),
    /// Run a job end to end on this machine: a coordinator, the spec's
    /// trainer ranks and evaluators as child processes on loopback, a live
    /// progress display, and the report at the end.
    Run(cluster::RunArgs),
    /// Run a sweep (a grid and/or list of runs over one base job): every run
    /// submitted to one coordinator, packed onto a pool of trainers, its
    /// checkpoints evaluated by one evaluator fleet in the order they appear,
    /// then one report over all runs. Running it again resumes: finished
    /// runs are skipped, unfinished ones continue from their checkpoints.
    Sweep(sweep::SweepArgs),
    /// Curate training data (paper Algorithm 1): n iterations per strategy
    /// (pm, iid, ifd, heuristic), each a full run on D + D' through the
    /// coordinator; new examples from a candidate pool or a generator
    /// command. Writes test accuracy vs training examples (table, plot) and
    /// the examples chosen each iteration; resumes from its state file.
    Curate(curate::CurateArgs),
}

#[derive(clap::Args)]
struct TrainArgs {
    /// The job spec (see examples/*.toml).
    #[arg(long)]
    config: PathBuf,
    /// Continue from the newest complete checkpoint in run.output.
    #[arg(long)]
    resume: bool,
    /// No progress bar (log lines instead).
    #[arg(long)]
    no_progress: bool,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// A model directory (e.g. runs/x/checkpoints/step-00000032) or a
    /// published checkpoint URL (s3://bucket/run/checkpoints/step-00000032).
    #[arg(long)]
    checkpoint: String,
    /// The dataset file.
    #[arg(long)]
    data: PathBuf,
    /// Dataset format: gsm8k or math (answers in \\boxed{}).
    #[arg(long, default_value = "gsm8k")]
    format: String,
    #[arg(long, value_enum, default_value_t = premem_core::Split::Train)]
    split: premem_core::Split,
    /// The run seed (sampling seeds also mix in step, example id, sample).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint step for the seeds, when the checkpoint has no manifest.
    #[arg(long)]
    step: Option<u64>,
    #[command(flatten)]
    sampling: analysis::SamplingArgs,
    /// Evaluate only these example ids (comma-separated).
    #[arg(long, value_delimiter = ',')]
    ids: Option<Vec<String>>,
    /// Evaluate only the first N examples.
    #[arg(long)]
    limit: Option<usize>,
    /// The Parquet file to write.
    #[arg(long, default_value = "results.parquet")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum BenchCommand {
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
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// The synthetic reasoning task: seeded multi-step arithmetic word
    /// problems with several valid solution orders. Writes train.jsonl,
    /// test.jsonl, pool.jsonl (curation candidates keyed by parent_id) in the
    /// GSM8K format, and a BPE tokenizer.json trained on them.
    Synth {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 500)]
        train: usize,
        #[arg(long, default_value_t = 200)]
        test: usize,
        /// Curation candidates per training example.
        #[arg(long, default_value_t = 2)]
        pool_per_example: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Item groups per problem, one multiplication step each: `N` or
        /// `MIN-MAX` (uniform). 1 is easy for the tiny model, 3 hard.
        #[arg(long, default_value = "2-3", value_parser = parse_groups)]
        groups: std::ops::RangeInclusive<usize>,
        /// Tokenizer vocabulary size (the model's vocab_size must be >= this).
        #[arg(long, default_value_t = 512)]
        vocab_size: usize,
    },
}

/// `--groups`: `N` or `MIN-MAX`, within 1..=synth::MAX_GROUPS.
fn parse_groups(s: &str) -> Result<std::ops::RangeInclusive<usize>, String> {
    let max = premem_core::synth::MAX_GROUPS;
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let parse = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{s}` is not N or MIN-MAX (e.g. 1-3)"))
    };
    let (lo, hi) = (parse(lo)?, parse(hi)?);
    if lo < 1 || lo > hi || hi > max {
        return Err(format!(
            "`{s}`: groups must satisfy 1 <= MIN <= MAX <= {max}"
        ));
    }
    Ok(lo..=hi)
}

#[derive(Subcommand)]
enum ModelCommand {
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

#[derive(clap::Args)]
struct GenerateArgs {
    /// Model directory in the Hugging Face layout.
    #[arg(long)]
    model: PathBuf,
    /// Prompt text; repeat for a batch (prompts are left-padded together).
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

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum DType {
    Auto,
    F32,
    Bf16,
    F16,
}

impl DType {
    pub(crate) fn kind(self, device: Device) -> Kind {
        match self {
            DType::Auto => default_kind(device),
            DType::F32 => Kind::Float,
            DType::Bf16 => Kind::BFloat16,
            DType::F16 => Kind::Half,
        }
    }
}

fn main() -> ExitCode {
    // Before any tensor work: registers CUDA when libtorch_cuda.so loads.
    runtime::init();
    premem_core::provenance::set_git_revision(env!("PREMEM_GIT_REVISION"));
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let result = match cli.command {
        Command::Doctor => doctor(),
        Command::Generate(args) => generate(args),
        Command::Model(command) => model_command(command),
        Command::Data(command) => data_command(command),
        Command::Train(args) => train(args),
        Command::Bench(command) => bench(command),
        Command::Eval(args) => eval(args),
        Command::EvalRun(args) => analysis::eval_run(args),
        Command::Report(args) => analysis::report(args),
        Command::Coordinator(args) => cluster::coordinator(args),
        Command::Trainer(args) => cluster::trainer(args),
        Command::Evaluator(args) => cluster::evaluator(args),
        Command::Submit(args) => cluster::submit(args),
        Command::Status(args) => cluster::status(args),
        Command::Cancel(args) => cluster::cancel(args),
        Command::Run(args) => cluster::run(args),
        Command::Sweep(args) => sweep::sweep(args),
        Command::Curate(args) => curate::curate(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn doctor() -> Result<()> {
    println!("premem {}", env!("CARGO_PKG_VERSION"));
    match runtime::libtorch_dir() {
        Some(dir) => {
            let version = runtime::wheel_version(&dir)
                .unwrap_or_else(|| format!("{} (pinned at build)", runtime::LIBTORCH_VERSION));
            println!("libtorch: {version} from {}", dir.display());
        }
        None => println!("libtorch: {} (location unknown)", runtime::LIBTORCH_VERSION),
    }
    println!("cpu threads: {}", tch::get_num_threads());

    let cuda = runtime::init();
    match &cuda.result {
        Ok(()) => println!("libtorch_cuda: loaded from {}", cuda.candidate.display()),
        Err(why) => println!("libtorch_cuda: not loaded, running on the CPU only\n  why: {why}"),
    }
    let count = tch::Cuda::device_count();
    println!(
        "cuda: available={} devices={count} cudnn={}",
        tch::Cuda::is_available(),
        tch::Cuda::cudnn_is_available()
    );
    match runtime::cuda_devices() {
        Ok(devices) => {
            for d in devices {
                println!(
                    "  cuda:{} {} ({:.1} GiB)",
                    d.index,
                    d.name,
                    d.total_memory_bytes as f64 / (1u64 << 30) as f64
                );
            }
        }
        Err(why) => println!("  no CUDA driver: {why}"),
    }

    match runtime::nccl() {
        Ok(nccl) => {
            let (major, minor, patch) = nccl.version;
            let path = nccl
                .path
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            println!("nccl: {major}.{minor}.{patch} from {path}");
            if nccl.version < runtime::MIN_NCCL_VERSION {
                let (a, b, c) = runtime::MIN_NCCL_VERSION;
                println!("  problem: premem needs NCCL >= {a}.{b}.{c}");
            }
            if nccl.mapped.len() > 1 {
                println!(
                    "  problem: several NCCL libraries are loaded and will clash: {}",
                    nccl.mapped
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        Err(why) => println!(
            "nccl: not found (needed for multi-GPU training only; CPU ranks use the TCP ring)\n  why: {why}"
        ),
    }
    Ok(())
}

pub(crate) fn parse_device(name: &str) -> Result<Device> {
    runtime::parse_device(name).map_err(|e| anyhow::anyhow!("--device {e}"))
}

fn generate(args: GenerateArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let kind = args.dtype.kind(device);
    let start = Instant::now();
    let model = CausalLm::load(&args.model, device, kind)?;
    let tokenizer = Tokenizer::from_dir(&args.model)?;
    tokenizer.check_fits(model.config().vocab_size)?;
    let load_time = start.elapsed();

    let prompts = args
        .prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let tokens = tokenizer.encode(p, true)?;
            Ok(Prompt {
                tokens,
                seed: premem_model::mix_seed(args.seed, i as u64, 0),
            })
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
    let pad = model
        .config()
        .pad_token_id
        .or(model.config().eos_token_ids.first().copied())
        .unwrap_or(0);
    let start = Instant::now();
    let stop = Stop::at_tokens(&model.config().eos_token_ids);
    let completions = premem_model::generate(&model, &prompts, &sampling, stop, pad)
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

fn model_command(command: ModelCommand) -> Result<()> {
    match command {
        ModelCommand::Convert {
            model,
            out,
            dtype,
            max_shard_bytes,
        } => {
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

fn data_command(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Synth {
            out,
            train,
            test,
            pool_per_example,
            seed,
            groups,
            vocab_size,
        } => {
            use premem_core::synth;
            if train == 0 {
                bail!("--train must be at least 1");
            }
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let data = synth::generate(&synth::SynthConfig {
                train,
                test,
                pool_per_example,
                seed,
                groups,
            });
            let template = premem_core::PromptTemplate::default();
            let all = data.train.iter().chain(&data.test).chain(&data.pool);
            let tokenizer = synth::train_task_tokenizer(all, &template, vocab_size)
                .map_err(anyhow::Error::msg)?;
            for (name, examples) in [
                ("train", &data.train),
                ("test", &data.test),
                ("pool", &data.pool),
            ] {
                premem_core::Dataset::write_gsm8k_jsonl(
                    examples,
                    &out.join(format!("{name}.jsonl")),
                )?;
            }
            let tokenizer_path = out.join("tokenizer.json");
            tokenizer
                .save(&tokenizer_path, false)
                .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_path.display()))?;
            println!(
                "wrote {}: {} train, {} test, {} pool examples; tokenizer with {} tokens",
                out.display(),
                data.train.len(),
                data.test.len(),
                data.pool.len(),
                tokenizer.get_vocab_size(true)
            );
            let e = &data.train[0];
            println!(
                "example {}:\n{}{}",
                e.id,
                template.render_prompt(e),
                template.render_completion(e)
            );
        }
    }
    Ok(())
}

fn train(args: TrainArgs) -> Result<()> {
    let spec = premem_core::JobSpec::from_file(&args.config)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // First signal: finish the step, checkpoint, stop. A second one exits
    // at once (code 130).
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
            .context("installing signal handlers")?;
    }
    let options = premem_trainer::TrainOptions {
        resume: args.resume,
        progress: !args.no_progress,
        stop: Some(stop),
    };
    let summary = premem_trainer::train(&spec, &options, &mut premem_trainer::SingleProcess)?;
    if let Some(from) = summary.resumed_from {
        println!("resumed from step {from}");
    }
    for (step, accuracy) in &summary.monitor {
        println!(
            "step {step:>6}: greedy train accuracy {:.1}%",
            accuracy * 100.0
        );
    }
    println!(
        "{} {}/{} steps, final loss {}, {:.0} tokens/s; output {}",
        if summary.interrupted {
            "stopped at"
        } else {
            "trained"
        },
        summary.steps,
        summary.total_steps,
        summary.final_loss.map_or("-".into(), |l| format!("{l:.4}")),
        summary.tokens_per_s,
        summary.output
    );
    if summary.interrupted {
        bail!(
            "interrupted at step {}: checkpoint written, continue with --resume",
            summary.steps
        );
    }
    Ok(())
}

fn bench(command: BenchCommand) -> Result<()> {
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
            };
            let result = bench_train::bench_train(ModelConfig::from_file(&config)?, &settings)?;
            println!("{}", serde_json::to_string(&result)?);
        }
    }
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    use premem_core::dataset::{DatasetFormat, DatasetSpec};
    use premem_evaluator::{EvalSettings, Evaluator};

    let format = match args.format.as_str() {
        "gsm8k" => DatasetFormat::Gsm8k,
        "math" => DatasetFormat::Math,
        other => bail!("--format '{other}': expected gsm8k or math"),
    };
    let sampling = &args.sampling;
    let device = parse_device(&sampling.device)?;
    let dataset = premem_core::Dataset::load(&DatasetSpec {
        path: args.data.to_string_lossy().into_owned(),
        format,
        fields: None,
        answer_style: None,
    })?;
    let mut examples = premem_evaluator::select(&dataset, args.ids.as_deref())?;
    if let Some(limit) = args.limit {
        examples.truncate(limit);
    }
    let checkpoint = premem_evaluator::checkpoint::fetch(&args.checkpoint, &sampling.cache_dir)?;
    let step = args.step.or(checkpoint.step).unwrap_or(0);
    let model = CausalLm::load(&checkpoint.dir, device, sampling.dtype.kind(device))?;
    let tokenizer = Tokenizer::from_dir(&checkpoint.dir)?;
    tokenizer.check_fits(model.config().vocab_size)?;
    let eos = *model.config().eos_token_ids.first().with_context(|| {
        format!(
            "{}: config.json has no eos_token_id",
            checkpoint.dir.display()
        )
    })?;
    let template = premem_core::PromptTemplate::default();
    let evaluator = Evaluator {
        model: &model,
        tokenizer: &tokenizer,
        template: &template,
        style: dataset.style,
        eos,
        pad: model.config().pad_token_id.unwrap_or(eos),
    };
    let settings = EvalSettings {
        split: args.split,
        checkpoint_step: step,
        seed: args.seed,
        sampling: sampling.sampling()?.clone(),
        batch_size: sampling.batch_size,
        max_length: model.config().max_position_embeddings as usize,
    };
    let bar = indicatif::ProgressBar::new(examples.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} examples (eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let rows = evaluator.evaluate(&examples, &settings, &|done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    premem_evaluator::results::write_parquet(&args.out, &rows)?;

    let base: Vec<_> = rows.iter().filter(|r| r.preamble.is_empty()).collect();
    let mean = |f: &dyn Fn(&premem_evaluator::ExampleResult) -> f64,
                rows: &[&premem_evaluator::ExampleResult]| {
        rows.iter().map(|r| f(r)).sum::<f64>() / rows.len().max(1) as f64
    };
    let mut perplexities: Vec<f64> = base.iter().map(|r| r.target_perplexity).collect();
    perplexities.sort_by(f64::total_cmp);
    println!(
        "{} {} examples of {} at step {step}, K={}: accuracy {:.1}%, target perplexity median {:.3}, \
         {:.1}% of samples equal the target trace",
        base.len(),
        settings.split.name(),
        args.checkpoint,
        settings.sampling.samples,
        100.0 * mean(&|r| r.accuracy, &base),
        perplexities
            .get(perplexities.len() / 2)
            .copied()
            .unwrap_or(f64::NAN),
        100.0 * mean(&|r| r.frac_equal_target, &base),
    );
    for preamble in &settings.sampling.preambles {
        let with: Vec<_> = rows.iter().filter(|r| &r.preamble == preamble).collect();
        println!(
            "  with preamble \"{preamble}\": accuracy {:.1}%",
            100.0 * mean(&|r| r.accuracy, &with)
        );
    }
    let samples: f64 = rows
        .iter()
        .map(|r| r.samples as f64 * r.mean_sample_tokens)
        .sum();
    println!(
        "wrote {} rows to {} in {seconds:.1}s ({:.0} sampled tokens/s)",
        rows.len(),
        args.out.display(),
        samples / seconds.max(1e-9)
    );
    Ok(())
}
