//! `premem data synth`: the synthetic reasoning task.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use premem_core::data::dataset::{DatasetFormat, DatasetSpec};
use premem_core::data::synth::{self, FamilyPerplexity, SynthData, TraceStyle};
use premem_core::{Dataset, Example, PromptTemplate};
use serde::Serialize;

#[derive(Subcommand)]
pub enum DataCommand {
    /// The synthetic reasoning task: seeded multi-step arithmetic word
    /// problems with several valid solutions each. Writes train.jsonl,
    /// test.jsonl, pool.jsonl (curation candidates keyed by parent_id) in the
    /// GSM8K format with each problem's `family` (1-step, 2-step, …), a BPE
    /// tokenizer.json, optionally a pretraining corpus pretrain.jsonl, and
    /// synth.json: what was made, and per family the perplexity a perfect
    /// solver that knows the trace style assigns to the targets (the floor a
    /// model that solves but has not memorized can reach).
    Synth(SynthArgs),
}

#[derive(clap::Args)]
pub struct SynthArgs {
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
    /// How the train, test and pool targets are worded: `templated` (one
    /// wording, only the order of steps varies; the demo's), `varied`
    /// (connectives, paraphrases and operand orders drawn per line, as
    /// another author would write them) or `terse` (equations only).
    #[arg(long, default_value = "templated")]
    style: TraceStyle,
    /// Also write a pretraining corpus of N problems (pretrain.jsonl) whose
    /// queries no train, test or pool problem (nor --disjoint-from) has; the
    /// tokenizer then learns the corpus and the splits in every style.
    #[arg(long, default_value_t = 0)]
    pretrain: usize,
    /// The corpus's styles with weights, e.g. `varied:3,terse:1`.
    #[arg(long, value_delimiter = ',', default_value = "varied", value_parser = parse_weighted_style)]
    pretrain_styles: Vec<(TraceStyle, f64)>,
    /// The corpus's mix of group counts, as --group-weights (default: the
    /// splits' mix).
    #[arg(long, value_delimiter = ',')]
    pretrain_group_weights: Option<Vec<f64>>,
    /// A GSM8K JSONL file (e.g. another run's pretrain.jsonl) whose queries
    /// no problem made here may have: data to finetune a base pretrained on
    /// it. Repeatable.
    #[arg(long)]
    disjoint_from: Vec<PathBuf>,
    /// Use this tokenizer.json (copied into --out) instead of training one:
    /// data for a base model, which has its tokenizer.
    #[arg(long, conflicts_with = "vocab_size")]
    tokenizer: Option<PathBuf>,
    /// Tokenizer vocabulary size (the model's vocab_size must be >= this).
    #[arg(long, default_value_t = 512)]
    vocab_size: usize,
}

/// `--groups`: `N` or `MIN-MAX`, within 1..=synth::MAX_GROUPS.
fn parse_groups(s: &str) -> Result<std::ops::RangeInclusive<usize>, String> {
    let max = premem_core::data::synth::MAX_GROUPS;
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

/// `STYLE` or `STYLE:WEIGHT`.
fn parse_weighted_style(s: &str) -> Result<(TraceStyle, f64), String> {
    let (style, weight) = s.split_once(':').unwrap_or((s, "1"));
    let weight: f64 = weight
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: the weight after `:` must be a number"))?;
    if !weight.is_finite() || weight < 0.0 {
        return Err(format!("`{s}`: the weight must be >= 0"));
    }
    Ok((style.trim().parse()?, weight))
}

pub fn run(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Synth(args) => synth_task(args),
    }
}

fn synth_task(args: SynthArgs) -> Result<()> {
    if args.train == 0 {
        bail!("--train must be at least 1");
    }
    let config = synth::SynthConfig {
        train: args.train,
        test: args.test,
        pool_per_example: args.pool_per_example,
        seed: args.seed,
        groups: args.groups.clone(),
        group_weights: args.group_weights.clone(),
        style: args.style,
        pretrain: args.pretrain,
        pretrain_styles: args.pretrain_styles.clone(),
        pretrain_group_weights: args.pretrain_group_weights.clone(),
        disjoint_from: read_queries(&args.disjoint_from)?,
    };
    synth::check_group_weights(&config).map_err(|e| anyhow::anyhow!("--group-weights: {e}"))?;
    synth::check_weights(config.pretrain_group_weights.as_deref(), &config.groups)
        .map_err(|e| anyhow::anyhow!("--pretrain-group-weights: {e}"))?;
    let data = synth::generate(&config).map_err(anyhow::Error::msg)?;
    let shared = data.shared_queries(&config.disjoint_from);
    if let Some(query) = shared.first() {
        bail!(
            "{} queries are both in a split and in the corpus (or --disjoint-from), e.g. {query:?}",
            shared.len()
        );
    }
    write_task(&args, &config, &data)
}

/// The queries of each GSM8K JSONL file.
fn read_queries(paths: &[PathBuf]) -> Result<HashSet<String>> {
    let mut queries = HashSet::new();
    for path in paths {
        let dataset = Dataset::load(&DatasetSpec {
            path: path.to_string_lossy().into_owned(),
            format: DatasetFormat::Gsm8k,
            fields: None,
            answer_style: None,
            drop_empty_answers: false,
        })
        .with_context(|| format!("--disjoint-from {}", path.display()))?;
        queries.extend(dataset.examples.into_iter().map(|e| e.query));
    }
    Ok(queries)
}

/// Writes the splits, the pool, the corpus, the tokenizer and synth.json
/// into `--out`, and prints what it wrote with the first train example as
/// the model sees it.
fn write_task(args: &SynthArgs, config: &synth::SynthConfig, data: &SynthData) -> Result<()> {
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let template = PromptTemplate::default();
    let tokenizer = task_tokenizer(args, data, &template)?;
    for (name, examples) in [
        ("train", &data.train),
        ("test", &data.test),
        ("pool", &data.pool),
        ("pretrain", &data.pretrain),
    ] {
        if name == "pretrain" && examples.is_empty() {
            continue;
        }
        Dataset::write_gsm8k_jsonl(examples, &out.join(format!("{name}.jsonl")))?;
    }
    let tokenizer_path = out.join("tokenizer.json");
    tokenizer
        .save(&tokenizer_path, false)
        .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_path.display()))?;
    let summary = Summary::of(args, config, data, &tokenizer, &template)?;
    let summary_path = out.join(synth::SYNTH_FILE);
    std::fs::write(
        &summary_path,
        serde_json::to_string_pretty(&summary)? + "\n",
    )
    .with_context(|| format!("writing {}", summary_path.display()))?;
    summary.print(out, tokenizer.get_vocab_size(true));
    let e = &data.train[0];
    println!(
        "example {}:\n{}{}",
        e.id,
        template.render_prompt(e),
        template.render_completion(e)
    );
    Ok(())
}

/// The tokenizer of `--tokenizer`, or one trained on the task.
fn task_tokenizer(
    args: &SynthArgs,
    data: &SynthData,
    template: &PromptTemplate,
) -> Result<tokenizers::Tokenizer> {
    match &args.tokenizer {
        Some(path) => tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow::anyhow!("--tokenizer {}: {e}", path.display())),
        None => synth::train_task_tokenizer(data.tokenizer_examples(), template, args.vocab_size)
            .map_err(anyhow::Error::msg),
    }
}

#[derive(Serialize)]
struct Summary {
    style: TraceStyle,
    seed: u64,
    /// Examples per split and family.
    families: std::collections::BTreeMap<&'static str, std::collections::BTreeMap<String, usize>>,
    /// Per split (train, test), per family: the perplexity that a perfect
    /// solver knowing the style assigns to the targets.
    perfect_solver_perplexity: std::collections::BTreeMap<&'static str, Vec<FamilyPerplexity>>,
    pretrain_styles: Vec<(TraceStyle, f64)>,
    /// The files whose queries no problem here has, and how many they hold.
    disjoint_from: Vec<(String, usize)>,
    /// Queries both in a split and in the corpus or --disjoint-from:
    /// checked to be 0.
    shared_queries: usize,
}

impl Summary {
    fn of(
        args: &SynthArgs,
        config: &synth::SynthConfig,
        data: &SynthData,
        tokenizer: &tokenizers::Tokenizer,
        template: &PromptTemplate,
    ) -> Result<Summary> {
        let splits: [(&'static str, &Vec<Example>); 4] = [
            ("train", &data.train),
            ("test", &data.test),
            ("pool", &data.pool),
            ("pretrain", &data.pretrain),
        ];
        let families = splits
            .iter()
            .filter(|(_, examples)| !examples.is_empty())
            .map(|(name, examples)| (*name, count_families(examples)))
            .collect();
        let mut perfect = std::collections::BTreeMap::new();
        for (name, examples) in &splits[..2] {
            let mut values = vec![];
            for e in examples.iter() {
                let tokens =
                    synth::completion_tokens(tokenizer, template, e).map_err(anyhow::Error::msg)?;
                let ppl = synth::perplexity(data.log_probs[&e.id], tokens);
                values.push((e.meta[premem_core::data::dataset::FAMILY].clone(), ppl));
            }
            perfect.insert(*name, synth::summarize_families(&values));
        }
        let disjoint_from = args
            .disjoint_from
            .iter()
            .map(|p| {
                Ok((
                    p.display().to_string(),
                    read_queries(std::slice::from_ref(p))?.len(),
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Summary {
            style: config.style,
            seed: config.seed,
            families,
            perfect_solver_perplexity: perfect,
            pretrain_styles: if data.pretrain.is_empty() {
                vec![]
            } else {
                config.pretrain_styles.clone()
            },
            disjoint_from,
            shared_queries: data.shared_queries(&config.disjoint_from).len(),
        })
    }

    fn print(&self, out: &Path, vocab: usize) {
        let count =
            |split: &str| -> usize { self.families.get(split).map_or(0, |f| f.values().sum()) };
        println!(
            "wrote {}: {} train, {} test, {} pool examples ({} style); tokenizer with {vocab} tokens",
            out.display(),
            count("train"),
            count("test"),
            count("pool"),
            self.style,
        );
        if count("pretrain") > 0 {
            println!(
                "pretraining corpus: {} problems ({:?}), none with a query of train, test, pool{}",
                count("pretrain"),
                self.families["pretrain"],
                if self.disjoint_from.is_empty() {
                    ""
                } else {
                    " or --disjoint-from"
                }
            );
        }
        for (file, n) in &self.disjoint_from {
            println!("no query of {file} ({n} queries) is in this data (checked)");
        }
        for (split, families) in &self.perfect_solver_perplexity {
            let cells: Vec<String> = families
                .iter()
                .map(|f| {
                    format!(
                        "{} {:.3} ({:.3}-{:.3}, {})",
                        f.family, f.median, f.min, f.max, f.examples
                    )
                })
                .collect();
            println!(
                "perfect-solver perplexity of the {split} targets, median (range, examples): {}",
                cells.join("; ")
            );
        }
    }
}

fn count_families(examples: &[Example]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for e in examples {
        let family = e
            .meta
            .get(premem_core::data::dataset::FAMILY)
            .cloned()
            .unwrap_or_default();
        *counts.entry(family).or_default() += 1;
    }
    counts
}
