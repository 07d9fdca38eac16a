//! `premem data synth`: the synthetic reasoning task.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum DataCommand {
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
        /// How often each number of groups occurs: one weight per value of
        /// --groups, comma-separated (e.g. `--groups 1-3 --group-weights
        /// 6,3,1`: easy families common, hard ones rare). Default: uniform.
        #[arg(long, value_delimiter = ',')]
        group_weights: Option<Vec<f64>>,
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

pub fn run(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Synth {
            out,
            train,
            test,
            pool_per_example,
            seed,
            groups,
            group_weights,
            vocab_size,
        } => {
            use premem_core::synth;
            if train == 0 {
                bail!("--train must be at least 1");
            }
            let config = synth::SynthConfig {
                train,
                test,
                pool_per_example,
                seed,
                groups,
                group_weights,
            };
            synth::check_group_weights(&config)
                .map_err(|e| anyhow::anyhow!("--group-weights: {e}"))?;
            write_task(&out, &synth::generate(&config), vocab_size)?;
        }
    }
    Ok(())
}

/// Writes the splits, the pool and a tokenizer trained on them into `out`,
/// and prints what it wrote with the first train example as the model sees it.
fn write_task(
    out: &std::path::Path,
    data: &premem_core::synth::SynthData,
    vocab_size: usize,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let template = premem_core::PromptTemplate::default();
    let all = data.train.iter().chain(&data.test).chain(&data.pool);
    let tokenizer = premem_core::synth::train_task_tokenizer(all, &template, vocab_size)
        .map_err(anyhow::Error::msg)?;
    for (name, examples) in [
        ("train", &data.train),
        ("test", &data.test),
        ("pool", &data.pool),
    ] {
        premem_core::Dataset::write_gsm8k_jsonl(examples, &out.join(format!("{name}.jsonl")))?;
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
    Ok(())
}
