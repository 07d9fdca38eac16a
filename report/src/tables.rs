//! The report's Parquet tables, readable as they are by pandas and DuckDB:
//! `examples.parquet` (one row per run, checkpoint and train example) and
//! `checkpoints.parquet` (one row per run and checkpoint; missing values are
//! nulls, never averages over fewer rows), and `calibration.parquet` (the
//! error of every p of the grid); and `provenance.json`, what every run was
//! made with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt64Array};

use premem_core::files::write_atomic;
use premem_core::results::parquet_bytes;

use super::analysis::Analysis;
use super::{ReportError, Result};

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

pub fn write(analysis: &Analysis, out: &Path) -> Result<Vec<PathBuf>> {
    let examples: Vec<_> = analysis.runs.iter().flat_map(|r| &r.examples).collect();
    let strings = |f: &dyn Fn(usize) -> String, n: usize| {
        Arc::new(StringArray::from_iter_values((0..n).map(f))) as ArrayRef
    };
    let n = examples.len();
    let examples_file = write_batch(
        &out.join("examples.parquet"),
        vec![
            ("run", strings(&|i| examples[i].run.clone(), n)),
            (
                "step",
                Arc::new(UInt64Array::from_iter_values(
                    examples.iter().map(|e| e.step),
                )),
            ),
            ("id", strings(&|i| examples[i].id.clone(), n)),
            (
                "accuracy",
                Arc::new(Float64Array::from_iter_values(
                    examples.iter().map(|e| e.accuracy),
                )),
            ),
            (
                "perplexity",
                Arc::new(Float64Array::from_iter_values(
                    examples.iter().map(|e| e.perplexity),
                )),
            ),
            (
                "memorized",
                Arc::new(BooleanArray::from_iter(
                    examples.iter().map(|e| Some(e.memorized)),
                )),
            ),
            (
                "masked_accuracy",
                Arc::new(Float64Array::from_iter_values(
                    examples.iter().map(|e| e.masked_accuracy),
                )),
            ),
            (
                "pm",
                Arc::new(Float64Array::from_iter_values(
                    examples.iter().map(|e| e.pm),
                )),
            ),
            (
                "incomplete_history",
                Arc::new(BooleanArray::from_iter(
                    examples.iter().map(|e| Some(e.incomplete_history)),
                )),
            ),
        ],
    )?;

    let checkpoints: Vec<_> = analysis.runs.iter().flat_map(|r| &r.checkpoints).collect();
    let n = checkpoints.len();
    let optional = |f: &dyn Fn(usize) -> Option<f64>| {
        Arc::new(Float64Array::from_iter((0..n).map(f))) as ArrayRef
    };
    let counts = |f: &dyn Fn(usize) -> usize| {
        Arc::new(UInt64Array::from_iter_values((0..n).map(|i| f(i) as u64))) as ArrayRef
    };
    let checkpoints_file = write_batch(
        &out.join("checkpoints.parquet"),
        vec![
            ("run", strings(&|i| checkpoints[i].run.clone(), n)),
            (
                "step",
                Arc::new(UInt64Array::from_iter_values(
                    checkpoints.iter().map(|c| c.step),
                )),
            ),
            ("pm", optional(&|i| checkpoints[i].pm)),
            (
                "train_accuracy",
                optional(&|i| checkpoints[i].train_accuracy),
            ),
            ("test_accuracy", optional(&|i| checkpoints[i].test_accuracy)),
            (
                "memorized_fraction",
                optional(&|i| checkpoints[i].memorized_fraction),
            ),
            (
                "median_train_perplexity",
                optional(&|i| checkpoints[i].median_train_perplexity),
            ),
            ("grad_variance", optional(&|i| checkpoints[i].grad_variance)),
            (
                "distance_from_init",
                optional(&|i| checkpoints[i].distance_from_init),
            ),
            ("atc", optional(&|i| checkpoints[i].atc)),
            ("train_examples", counts(&|i| checkpoints[i].train_examples)),
            ("test_examples", counts(&|i| checkpoints[i].test_examples)),
            ("missing_train", counts(&|i| checkpoints[i].missing_train)),
            ("missing_test", counts(&|i| checkpoints[i].missing_test)),
        ],
    )?;
    let mut files = vec![examples_file, checkpoints_file];
    if let Some(c) = &analysis.calibration {
        let column = |f: &dyn Fn(&premem_core::pm::CalibrationPoint) -> Option<f64>| {
            Arc::new(Float64Array::from_iter(c.curve.iter().map(f))) as ArrayRef
        };
        files.push(write_batch(
            &out.join("calibration.parquet"),
            vec![
                ("p", column(&|q| Some(q.p))),
                ("loglog", column(&|q| Some(q.loglog))),
                ("mse", column(&|q| Some(q.mse))),
                ("r2_identity", column(&|q| q.r2_identity)),
                ("r2_fit", column(&|q| q.r2_fit)),
            ],
        )?);
    }
    Ok(files)
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
