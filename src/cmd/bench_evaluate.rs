//! `premem bench evaluate`: the evaluator's per-task work (K samples per
//! example, stopped at the template's stop string, plus the target trace's
//! perplexity) on a checkpoint, timed after warm-up passes; one JSON line.
//! `benches/evaluate_throughput.py` runs the same work with transformers
//! (from `--work-out`) and prints the ratio.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use premem_core::Example;
use premem_evaluator::{EvalSettings, Evaluator, ExampleResult, SamplerKind};

use super::eval::{EvalArgs, with_evaluator};

#[derive(clap::Args)]
pub struct EvaluateBench {
    #[command(flatten)]
    eval: EvalArgs,
    /// continuous (the evaluator's sampler) or static (the loop it
    /// replaced: the before figure).
    #[arg(long, value_enum, default_value_t = SamplerArg::Continuous)]
    sampler: SamplerArg,
    /// Untimed passes first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed passes: the fastest is reported (the others were slowed by
    /// something else on the machine), with every pass's seconds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    repeat: u64,
    /// Also write the work (prompt and target texts, token ids of EOS and
    /// padding, sampling settings) as JSON, for the transformers run.
    #[arg(long)]
    work_out: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SamplerArg {
    Continuous,
    Static,
}

impl EvaluateBench {
    pub fn run(self) -> Result<()> {
        let sampler = match self.sampler {
            SamplerArg::Continuous => SamplerKind::Continuous,
            SamplerArg::Static => SamplerKind::Static,
        };
        with_evaluator(&self.eval, sampler, |evaluator, examples, settings| {
            if let Some(path) = &self.work_out {
                write_work(path, evaluator, examples, settings)?;
            }
            for _ in 0..self.warmup {
                evaluator.evaluate(examples, settings, &|_| {})?;
            }
            let mut passes = vec![];
            let mut rows = vec![];
            for _ in 0..self.repeat {
                let started = Instant::now();
                rows = evaluator.evaluate(examples, settings, &|_| {})?;
                passes.push(started.elapsed().as_secs_f64());
            }
            premem_evaluator::results::write_parquet(&self.eval.out, &rows)?;
            let mut line = summary(&rows, settings, &passes, self.sampler);
            line["passes"] = serde_json::json!(passes);
            println!("{line}");
            Ok(())
        })
    }
}

fn summary(
    rows: &[ExampleResult],
    settings: &EvalSettings,
    passes: &[f64],
    sampler: SamplerArg,
) -> serde_json::Value {
    let seconds = passes.iter().copied().fold(f64::INFINITY, f64::min);
    let tokens: f64 = rows
        .iter()
        .map(|r| r.samples as f64 * r.mean_sample_tokens)
        .sum();
    let accuracy = rows.iter().map(|r| r.accuracy).sum::<f64>() / rows.len().max(1) as f64;
    serde_json::json!({
        "sampler": match sampler { SamplerArg::Continuous => "continuous", SamplerArg::Static => "static" },
        "examples": rows.len(),
        "samples": settings.sampling.samples,
        "batch_size": settings.batch_size,
        "seconds": seconds,
        "examples_per_s": rows.len() as f64 / seconds,
        "generated_tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "accuracy": accuracy,
    })
}

/// The work as the transformers run needs it: the same texts and settings.
fn write_work(
    path: &PathBuf,
    evaluator: &Evaluator<'_>,
    examples: &[&Example],
    settings: &EvalSettings,
) -> Result<()> {
    let s = &settings.sampling;
    let work = serde_json::json!({
        "samples": s.samples,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "max_new_tokens": s.max_new_tokens,
        "batch_size": settings.batch_size,
        "stop": evaluator.template.stop,
        "eos": evaluator.eos,
        "pad": evaluator.pad,
        "examples": examples.iter().map(|e| serde_json::json!({
            "id": e.id,
            "prompt": evaluator.template.render_prompt(e),
            "completion": evaluator.template.render_completion(e),
        })).collect::<Vec<_>>(),
    });
    std::fs::write(path, serde_json::to_string_pretty(&work)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}
