//! `premem curation-summary`: the curations of several seeds together —
//! test accuracy against training examples with 95 % intervals, and each
//! strategy's sample efficiency over iid with its interval.

use std::path::PathBuf;

use anyhow::{Context, Result};
use premem_curation::{CurationState, STATE_FILE, summarize, write_summary};

#[derive(clap::Args)]
pub struct CurationSummaryArgs {
    /// The curations, one per seed: each a curation's output directory
    /// (`curation.output`, holding curation-state.json) or its state file.
    /// At least two, all finished, with the same strategies and iterations.
    #[arg(required = true, num_args = 2..)]
    curations: Vec<PathBuf>,
    /// Where to write summary.md, summary.csv and test-vs-examples.png/.svg.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: CurationSummaryArgs) -> Result<()> {
    let mut seeds = vec![];
    for path in &args.curations {
        let file = if path.is_dir() {
            path.join(STATE_FILE)
        } else {
            path.clone()
        };
        let state = CurationState::load(&file)
            .with_context(|| format!("reading the curation {}", path.display()))?;
        seeds.push((state.spec.curation.name.clone(), state));
    }
    let summary = summarize(&seeds)?;
    for file in write_summary(&summary, &args.out)? {
        println!("wrote {}", file.display());
    }
    for e in &summary.efficiency {
        let hw = e
            .estimate
            .half_width
            .map_or(String::new(), |h| format!(" ± {h:.2}"));
        println!(
            "{} over iid after iteration {}: {}{:.2}×{hw} (95 % CI over {} seeds; {} beyond iid's curve)",
            e.strategy.name(),
            e.iteration,
            if e.censored() > 0 { "≥ " } else { "" },
            e.estimate.mean,
            e.per_seed.len(),
            e.censored()
        );
    }
    Ok(())
}
