//! The report's Parquet tables, readable as they are by pandas and DuckDB:
//! `examples.parquet` (one row per run, checkpoint and train example) and
//! `checkpoints.parquet` (one row per run and checkpoint; missing values are
//! nulls, never averages over fewer rows), and `calibration.parquet` (the
//! error of every p of the grid); and `provenance.json`, what every run was
//! made with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt64Array};

use premem_core::data::results::parquet_bytes;
use premem_core::storage::files::write_atomic;

use super::analysis::{Analysis, CheckpointSummary, ExampleCheckpoint};
use super::{ReportError, Result};
use premem_core::science::pm::{Calibration, CalibrationPoint};

fn write_batch(path: &Path, columns: Vec<(&str, ArrayRef)>) -> Result<PathBuf> {
    let error = |message: String| ReportError::Invalid {
        location: path.display().to_string(),
        message,
    };
    let batch = RecordBatch::try_from_iter(columns).map_err(|e| error(e.to_string()))?;
    let bytes = parquet_bytes(&batch).map_err(error)?;
    write_atomic(path, &bytes).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(path.to_path_buf())
}

/// Writes `examples.parquet`, `checkpoints.parquet` and, when p was
/// calibrated, `calibration.parquet`; returns the files.
pub fn write(analysis: &Analysis, out: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![
        write_examples(analysis, out)?,
        write_checkpoints(analysis, out)?,
    ];
    if let Some(c) = &analysis.calibration {
        files.push(write_calibration(c, out)?);
    }
    Ok(files)
}

fn strings<T>(rows: &[&T], f: fn(&T) -> &str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| f(r))))
}

fn u64s<T>(rows: &[&T], f: fn(&T) -> u64) -> ArrayRef {
    Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| f(r))))
}

fn f64s<T>(rows: &[&T], f: fn(&T) -> f64) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| f(r))))
}

/// Nulls where the value is missing.
fn optional_f64s<T>(rows: &[&T], f: fn(&T) -> Option<f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter(rows.iter().map(|r| f(r))))
}

fn bools<T>(rows: &[&T], f: fn(&T) -> bool) -> ArrayRef {
    Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(f(r)))))
}

/// One row per run, checkpoint and train example.
fn write_examples(analysis: &Analysis, out: &Path) -> Result<PathBuf> {
    let rows: Vec<&ExampleCheckpoint> = analysis.runs.iter().flat_map(|r| &r.examples).collect();
    write_batch(
        &out.join("examples.parquet"),
        vec![
            ("run", strings(&rows, |e| &e.run)),
            ("step", u64s(&rows, |e| e.step)),
            ("id", strings(&rows, |e| &e.id)),
            ("accuracy", f64s(&rows, |e| e.accuracy)),
            ("perplexity", f64s(&rows, |e| e.perplexity)),
            ("memorized", bools(&rows, |e| e.memorized)),
            ("masked_accuracy", f64s(&rows, |e| e.masked_accuracy)),
            ("pm", f64s(&rows, |e| e.pm)),
            ("incomplete_history", bools(&rows, |e| e.incomplete_history)),
        ],
    )
}

/// One row per run and checkpoint; missing values are nulls.
fn write_checkpoints(analysis: &Analysis, out: &Path) -> Result<PathBuf> {
    let rows: Vec<&CheckpointSummary> = analysis.runs.iter().flat_map(|r| &r.checkpoints).collect();
    write_batch(
        &out.join("checkpoints.parquet"),
        vec![
            ("run", strings(&rows, |c| &c.run)),
            ("step", u64s(&rows, |c| c.step)),
            ("pm", optional_f64s(&rows, |c| c.pm)),
            ("train_accuracy", optional_f64s(&rows, |c| c.train_accuracy)),
            ("test_accuracy", optional_f64s(&rows, |c| c.test_accuracy)),
            (
                "memorized_fraction",
                optional_f64s(&rows, |c| c.memorized_fraction),
            ),
            (
                "median_train_perplexity",
                optional_f64s(&rows, |c| c.median_train_perplexity),
            ),
            ("grad_variance", optional_f64s(&rows, |c| c.grad_variance)),
            (
                "distance_from_init",
                optional_f64s(&rows, |c| c.distance_from_init),
            ),
            ("atc", optional_f64s(&rows, |c| c.atc)),
            ("train_examples", u64s(&rows, |c| c.train_examples as u64)),
            ("test_examples", u64s(&rows, |c| c.test_examples as u64)),
            ("missing_train", u64s(&rows, |c| c.missing_train as u64)),
            ("missing_test", u64s(&rows, |c| c.missing_test as u64)),
        ],
    )
}

/// Every p of the grid with its error and R².
fn write_calibration(c: &Calibration, out: &Path) -> Result<PathBuf> {
    let rows: Vec<&CalibrationPoint> = c.curve.iter().collect();
    write_batch(
        &out.join("calibration.parquet"),
        vec![
            ("p", optional_f64s(&rows, |q| Some(q.p))),
            ("loglog", optional_f64s(&rows, |q| Some(q.loglog))),
            ("mse", optional_f64s(&rows, |q| Some(q.mse))),
            ("r2_identity", optional_f64s(&rows, |q| q.r2_identity)),
            ("r2_fit", optional_f64s(&rows, |q| q.r2_fit)),
        ],
    )
}

/// `provenance.json`: one object per run, in report order: its name, premem
/// version and git revision, training hash, input checksums and resolved
/// spec.
pub fn write_provenance(analysis: &Analysis, out: &Path) -> Result<PathBuf> {
    let path = out.join("provenance.json");
    let mut bytes =
        serde_json::to_vec_pretty(&analysis.provenance).map_err(|e| ReportError::Invalid {
            location: path.display().to_string(),
            message: e.to_string(),
        })?;
    bytes.push(b'\n');
    write_atomic(&path, &bytes).map_err(|source| ReportError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}
