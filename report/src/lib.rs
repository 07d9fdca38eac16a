//! premem's reports (`premem report`): reads a run's (or a sweep's) result
//! files from the object store, computes P-M accuracy ([`premem_core::science::pm`])
//! and the baselines ([`premem_core::science::baselines`]) at every checkpoint, and
//! writes `report.md`, a self-contained `report.html`, PNG and SVG charts,
//! Parquet tables, and `provenance.json` (each run's premem version, git
//! revision, input checksums and resolved spec).
//!
//! Nothing is averaged over fewer rows than expected: a checkpoint missing
//! results for some examples gets no dataset value, and the report lists what
//! is missing.
//!
//! [`write_report`] runs the stages in order, one module each:
//!
//! - [`load`](mod@load): a run or sweep as [`RunData`] (records, baselines, result rows);
//! - [`analysis`]: the numbers ([`Analysis`]): threshold, per-run P-M and
//!   checkpoint summaries, metrics against test accuracy, ATC, robustness;
//! - [`tables`]: the Parquet tables and `provenance.json`;
//! - [`charts`]: one chart per function, drawn by [`plots`] (which knows
//!   nothing of P-M and also draws the curation report's chart);
//! - [`documents`]: `report.md` (written section by section) and
//!   `report.html` with the charts inlined.

pub mod analysis;
pub mod charts;
pub mod documents;
pub mod load;
mod markdown;
pub mod plots;
pub mod tables;
#[cfg(test)]
mod test_runs;

use std::path::{Path, PathBuf};

pub use analysis::{Analysis, ReportOptions, analyze};
pub use load::{RunData, load};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] premem_core::StoreError),
    #[error(transparent)]
    Results(#[from] premem_core::data::results::ResultsError),
    #[error(transparent)]
    Pm(#[from] premem_core::science::pm::PmError),
    #[error(transparent)]
    Plot(#[from] plots::PlotError),
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = ReportError> = std::result::Result<T, E>;

/// The protocol's gates of `location` (a run or a sweep) and its base,
/// from result rows alone (no calibration, no R²), as Markdown.
pub fn gates_report(location: &str) -> Result<String> {
    let runs = load(location)?;
    let base = analysis::task::base_of(&runs);
    Ok(markdown::gates(&analysis::gates::gates(
        &runs,
        base.as_ref(),
    )))
}

/// What [`write_report`] wrote.
#[derive(Clone, Debug)]
pub struct Written {
    pub files: Vec<PathBuf>,
    pub analysis: Analysis,
}

/// Loads `location` (a run or a sweep of runs), analyses it and writes the
/// report into `out`.
pub fn write_report(location: &str, out: &Path, options: &ReportOptions) -> Result<Written> {
    let runs = load(location)?;
    let analysis = analyze(&runs, options)?;
    std::fs::create_dir_all(out).map_err(|source| ReportError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let mut files = vec![];
    files.extend(tables::write(&analysis, out)?);
    files.push(tables::write_provenance(&analysis, out)?);
    files.extend(charts::write(&analysis, out)?);
    files.extend(documents::write(location, &analysis, out)?);
    Ok(Written { files, analysis })
}
