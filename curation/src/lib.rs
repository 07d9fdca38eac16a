//! Curation (paper Algorithm 1, §5.2): everything but running the jobs and
//! the model that scores IFD. The driver (`premem curate curation.toml`)
//! submits each iteration's run to a coordinator and waits for it; this crate
//! holds the rest, one job per module:
//!
//! - `spec`: the curation file ([`CurationSpec`]), every check of it in
//!   `spec/validate.rs` (an inline base job through `JobSpec::validate`);
//! - `select`: the parents a strategy chooses ([`choose_parents`]) and the
//!   order a generator gets them in ([`generator_parents`]);
//! - `pool`: the candidate pool ([`CandidatePool`]) and the seeded [`draw`];
//! - `generator`: new examples from a command ([`generate`]);
//! - `state`: the state file a curation resumes from ([`CurationState`]);
//! - `output`: the curation report ([`write_outputs`]);
//! - `summary`: several seeds' curations together: test accuracy with 95 %
//!   intervals and the sample efficiency over iid ([`summarize`]), and
//!   their report (`summary_output`, [`write_summary`]);
//! - `iteration`: the loop's steps between runs: the job of an iteration
//!   ([`iteration_job`]), what its run says ([`outcome_of`]), and what
//!   follows it ([`Curation::finish_iteration`]).
//!
//! The loop, per strategy, for iterations `i = 1..=n` (1-based):
//!
//! 1. train on `D + D'` (`D`: the base job's `data.train`; `D'`: the examples
//!    added so far, empty at `i = 1`) and evaluate: test accuracy, and the
//!    P-M accuracy of every example of `D`;
//! 2. unless `i = n`: choose parents ([`choose_parents`]), take
//!    `N'_i = spec.new_examples_after(i)` new examples derived from them
//!    ([`draw`] from a [`CandidatePool`], or [`generate`] with a command) and
//!    add them to `D'`;
//! 3. record the iteration ([`IterationRecord`]) in the [`CurationState`].
//!
//! The last iteration's run is only measured: `new_examples` is one number
//! for every iteration that adds (1..n-1), or a list of `n - 1` numbers.
//!
//! Strategies differ only in how parents are chosen:
//!
//! - `pm`: the examples of `D` with P-M accuracy `< t`, lowest first;
//! - `iid`: every example of `D` (the draw is uniform over the candidates);
//! - `ifd`: the top `ceil(fraction · |D|)` by IFD score
//!   (`ppl(answer | query) / ppl(answer)`), highest first;
//! - `heuristic`: the top `ceil(fraction · |D|)` by difficulty: the number of
//!   non-blank lines of the target trace (`lines`) or the MATH level
//!   (`level`, from `meta["level"]` like "Level 3").
//!
//! Everything random (the draw, the order of parents handed to a generator)
//! is seeded from `curation.seed` and the iteration, so a curation replays
//! exactly.

mod generator;
mod iteration;
mod output;
mod pool;
mod select;
mod spec;
mod state;
mod summary;
mod summary_families;
mod summary_output;

use std::path::PathBuf;

pub use generator::{Generated, generate};
pub use iteration::{Curation, IfdScores, RunOutcome, iteration_job, outcome_of};
pub use output::write_outputs;
pub use pool::{CandidatePool, Drawn, draw};
pub use select::{Chosen, ParentScores, choose_parents, generator_parents, heuristic_score};
pub use spec::{
    CurationSection, CurationSpec, GeneratorSpec, HeuristicKey, HeuristicSpec, IfdSpec,
    NewExamples, SourceSpec, Strategy,
};
pub use state::{CurationState, IterationRecord, STATE_FILE, STATE_FORMAT};
pub use summary::{
    Curve, Efficiency, Estimate, Point, Ratio, Summary, estimate, examples_needed, ratio, summarize,
};
pub use summary_families::FamilySummary;
pub use summary_output::write_summary;

/// What can go wrong in the pure parts of a curation.
#[derive(Debug, thiserror::Error)]
pub enum CurationError {
    /// The curation spec or its base job.
    #[error(transparent)]
    Spec(#[from] premem_core::spec::SpecError),
    /// The candidate pool (or an iteration's data file) could not be read or written.
    #[error(transparent)]
    Dataset(#[from] premem_core::data::dataset::DatasetError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Scores or examples that do not fit the strategy (e.g. a train
    /// example without P-M accuracy).
    #[error("{0}")]
    Selection(String),
    /// The candidate pool does not fit the train set.
    #[error("{path}: {message}")]
    Pool { path: PathBuf, message: String },
    /// Every attempt of the generator command failed; one reason per attempt.
    #[error("generator `{command}`: all {} attempts failed:\n  {}", failures.len(), failures.join("\n  "))]
    Generator {
        command: String,
        failures: Vec<String>,
    },
    /// The state file: unreadable, another format, or a different spec.
    #[error("{path}: {message}")]
    State { path: PathBuf, message: String },
    #[error(transparent)]
    Plot(#[from] premem_report::plots::PlotError),
    /// An iteration's run could not be read or analysed.
    #[error("reading run {run}")]
    Run {
        run: String,
        #[source]
        source: premem_report::ReportError,
    },
    /// An iteration that cannot go on (its data is missing, its run has no
    /// P-M accuracy, a new example reuses an id, ...).
    #[error("{0}")]
    Iteration(String),
    /// The IFD scores of the `ifd` strategy could not be computed.
    #[error("{0}")]
    Scores(String),
}

/// A short excerpt of `text` for error messages: at most `max` characters.
fn excerpt(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// `'a', 'b', 'c'` and "... (N in all)" when there are more than `max`.
fn quoted_list<S: AsRef<str>>(items: &[S], max: usize) -> String {
    let mut out: Vec<String> = items
        .iter()
        .take(max)
        .map(|s| format!("'{}'", s.as_ref()))
        .collect();
    if items.len() > max {
        out.push(format!("... ({} in all)", items.len()));
    }
    out.join(", ")
}

/// A seed for one purpose (`tag`), curation seed and iteration: independent
/// streams for the draw and the generator order.
fn derive_seed(tag: &str, seed: u64, iteration: u32) -> u64 {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(tag.as_bytes());
    hasher.update(seed.to_le_bytes());
    hasher.update(iteration.to_le_bytes());
    let digest = hasher.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}
