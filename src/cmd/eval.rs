//! `premem eval`: one checkpoint on one dataset split, and the sampling
//! flags it shares with `premem eval-run`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use premem_core::data::dataset::{DatasetFormat, DatasetSpec};
use premem_core::spec::DEFAULT_EVAL_BATCH_SIZE;
use premem_core::{Dataset, Example, SamplingSpec, Split};
use premem_evaluator::checkpoint::{DEFAULT_CACHE_DIR, LoadedModel};
use premem_evaluator::{EvalSettings, Evaluator, ExampleResult, SamplerKind};

use crate::device::{DType, parse_device};

mod families;
mod template;

/// How to sample, shared by `premem eval` and `premem eval-run`: the
/// sampling settings as the job spec's `[eval]` has them (same names, same
/// defaults), and where the evaluation runs.
#[derive(clap::Args)]
pub struct SamplingArgs {
    #[command(flatten)]
    pub sampling: SamplingSpec,
    /// Prompts per generation batch (each with its K samples).
    #[arg(long, default_value_t = DEFAULT_EVAL_BATCH_SIZE)]
    pub batch_size: usize,
    /// Where published checkpoints are downloaded.
    #[arg(long, default_value = DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, value_enum, default_value_t = DType::Auto)]
    pub dtype: DType,
}

impl SamplingArgs {
    /// The sampling settings, checked (the flags' one validation).
    pub fn sampling(&self) -> Result<&SamplingSpec> {
        self.sampling
            .validate()
            .map_err(|e| anyhow::anyhow!(e.as_flag()))?;
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        Ok(&self.sampling)
    }
}

#[derive(clap::Args)]
pub struct EvalArgs {
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
    #[arg(long, value_enum, default_value_t = Split::Train)]
    split: Split,
    /// The run seed (sampling seeds also mix in step, example id, sample).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint step for the seeds, when the checkpoint has no manifest.
    #[arg(long)]
    step: Option<u64>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Evaluate only these example ids (comma-separated).
    #[arg(long, value_delimiter = ',')]
    ids: Option<Vec<String>>,
    /// Evaluate only the first N examples.
    #[arg(long)]
    limit: Option<usize>,
    /// Score the targets' perplexity N tokens at a time, so the logits of a
    /// whole batch never exist (a job's `train.loss_chunk_tokens`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    loss_chunk_tokens: Option<u64>,
    /// The Parquet file to write.
    #[arg(long, default_value = "results.parquet")]
    pub(crate) out: PathBuf,
    #[command(flatten)]
    template: template::TemplateArgs,
}

pub fn run(args: EvalArgs) -> Result<()> {
    with_evaluator(
        &args,
        SamplerKind::Continuous,
        |evaluator, examples, settings| {
            let bar = indicatif::ProgressBar::new(examples.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} examples (eta {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            let started = Instant::now();
            let rows =
                evaluator.evaluate(examples, settings, &|done| bar.set_position(done as u64))?;
            bar.finish_and_clear();
            let seconds = started.elapsed().as_secs_f64();
            premem_evaluator::results::write_parquet(&args.out, &rows)?;
            print_summary(&args, settings, &rows, seconds);
            families::print(examples, &rows, settings.split, &args.data);
            Ok(())
        },
    )
}

/// Loads what `args` names (dataset, examples, template, checkpoint) and
/// hands `work` the evaluator, the examples and the settings.
pub fn with_evaluator<R>(
    args: &EvalArgs,
    sampler: SamplerKind,
    work: impl FnOnce(&Evaluator<'_>, &[&Example], &EvalSettings) -> Result<R>,
) -> Result<R> {
    let sampling = args.sampling.sampling()?.clone();
    let format = match args.format.as_str() {
        "gsm8k" => DatasetFormat::Gsm8k,
        "math" => DatasetFormat::Math,
        other => bail!("--format '{other}': expected gsm8k or math"),
    };
    let device = parse_device(&args.sampling.device)?;
    let dataset = Dataset::load(&DatasetSpec {
        path: args.data.to_string_lossy().into_owned(),
        format,
        fields: None,
        answer_style: None,
        drop_empty_answers: false,
    })?;
    let mut examples = premem_evaluator::select(&dataset, args.ids.as_deref())?;
    if let Some(limit) = args.limit {
        examples.truncate(limit);
    }
    let (template, source) = template::resolve(&args.template, &args.checkpoint)?;
    let (loaded, step) = load(args, device)?;
    eprintln!("prompt template: {source}");
    let evaluator = Evaluator {
        model: &loaded.model,
        tokenizer: &loaded.tokenizer,
        template: &template,
        style: dataset.style,
        eos: loaded.eos,
        pad: loaded.pad(),
    };
    let settings = EvalSettings {
        split: args.split,
        checkpoint_step: step,
        seed: args.seed,
        sampling,
        batch_size: args.sampling.batch_size,
        max_length: loaded.model.config().max_position_embeddings as usize,
        loss_chunk_tokens: args.loss_chunk_tokens.map(|n| n as usize),
        sampler,
    };
    work(&evaluator, &examples, &settings)
}

/// The checkpoint of `--checkpoint`, fetched and loaded on `device`, and
/// its step (for the seeds).
fn load(args: &EvalArgs, device: tch::Device) -> Result<(LoadedModel, u64)> {
    let sampling = &args.sampling;
    let checkpoint = premem_evaluator::checkpoint::fetch(&args.checkpoint, &sampling.cache_dir)?;
    let loaded = LoadedModel::load(&checkpoint.dir, device, sampling.dtype.kind(device))?;
    Ok((loaded, args.step.or(checkpoint.step).unwrap_or(0)))
}

fn print_summary(args: &EvalArgs, settings: &EvalSettings, rows: &[ExampleResult], seconds: f64) {
    let base: Vec<&ExampleResult> = rows.iter().filter(|r| r.preamble.is_empty()).collect();
    let mean = |f: &dyn Fn(&ExampleResult) -> f64, rows: &[&ExampleResult]| {
        rows.iter().map(|r| f(r)).sum::<f64>() / rows.len().max(1) as f64
    };
    let mut perplexities: Vec<f64> = base.iter().map(|r| r.target_perplexity).collect();
    perplexities.sort_by(f64::total_cmp);
    println!(
        "{} {} examples of {} at step {}, K={}: accuracy {:.1}%, target perplexity median {:.3}, \
         {:.1}% of samples equal the target trace",
        base.len(),
        settings.split.name(),
        args.checkpoint,
        settings.checkpoint_step,
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
}
