//! Evaluation result rows and their Parquet files: one row per example,
//! checkpoint and preamble, columns named as the fields of [`ExampleResult`];
//! readable as they are by pandas, DuckDB and Polars.
//!
//! In a run, the rows of checkpoint `step` for a split live under
//! `results/step-XXXXXXXX/<split>*.parquet` ([`results_prefix`]); several files
//! per split (one per evaluation task) are read together.

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, ListBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt32Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::Schema;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::data::parquet_guard::{check_chunks, guard_parquet};
use crate::storage::checkpoint::step_name;

/// One row of results: one example under one preamble ("" = none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExampleResult {
    pub id: String,
    pub split: String,
    pub checkpoint_step: u64,
    pub preamble: String,
    pub n_correct: u32,
    pub samples: u32,
    pub accuracy: f64,
    /// Summed NLL (nats) of the target completion tokens given the prompt.
    pub target_nll: f64,
    pub target_tokens: u64,
    /// exp(target_nll / target_tokens).
    pub target_perplexity: f64,
    /// Generated tokens per sample, the stop token included.
    pub mean_sample_tokens: f64,
    /// Fraction of samples whose answer text equals the target trace.
    pub frac_equal_target: f64,
    /// Per sample: the mean log-probability (nats per token, temperature 1)
    /// the model gave the tokens it generated; the confidence ATC thresholds.
    pub sample_confidences: Vec<f64>,
    /// The first `keep_samples` sample texts (cut at the stop string).
    pub sample_texts: Vec<String>,
    /// How many of the `samples` texts are distinct (compared without
    /// surrounding whitespace): the sample diversity of the over-memorization
    /// advice. `None` in files written before the column existed.
    pub distinct_samples: Option<u32>,
}

/// `results/step-XXXXXXXX`, relative to the run.
pub fn results_prefix(step: u64) -> String {
    format!("results/{}", step_name(step))
}

/// A results file that cannot be written or read.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ResultsError {
    pub location: String,
    pub message: String,
}

fn batch_of(rows: &[ExampleResult]) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let strings = |f: fn(&ExampleResult) -> &str| {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as ArrayRef
    };
    let u64s = |f: fn(&ExampleResult) -> u64| {
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(f))) as ArrayRef
    };
    let u32s = |f: fn(&ExampleResult) -> u32| {
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(f))) as ArrayRef
    };
    let f64s = |f: fn(&ExampleResult) -> f64| {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(f))) as ArrayRef
    };
    let mut confidences = ListBuilder::new(Float64Builder::new());
    for row in rows {
        confidences.values().append_slice(&row.sample_confidences);
        confidences.append(true);
    }
    let mut texts = ListBuilder::new(StringBuilder::new());
    for row in rows {
        for text in &row.sample_texts {
            texts.values().append_value(text);
        }
        texts.append(true);
    }
    RecordBatch::try_from_iter(vec![
        ("id", strings(|r| &r.id)),
        ("split", strings(|r| &r.split)),
        ("checkpoint_step", u64s(|r| r.checkpoint_step)),
        ("preamble", strings(|r| &r.preamble)),
        ("n_correct", u32s(|r| r.n_correct)),
        ("samples", u32s(|r| r.samples)),
        ("accuracy", f64s(|r| r.accuracy)),
        ("target_nll", f64s(|r| r.target_nll)),
        ("target_tokens", u64s(|r| r.target_tokens)),
        ("target_perplexity", f64s(|r| r.target_perplexity)),
        ("mean_sample_tokens", f64s(|r| r.mean_sample_tokens)),
        ("frac_equal_target", f64s(|r| r.frac_equal_target)),
        (
            "sample_confidences",
            Arc::new(confidences.finish()) as ArrayRef,
        ),
        ("sample_texts", Arc::new(texts.finish()) as ArrayRef),
        (
            "distinct_samples",
            Arc::new(UInt32Array::from_iter(
                rows.iter().map(|r| r.distinct_samples),
            )) as ArrayRef,
        ),
    ])
}

/// Rows as the bytes of a Parquet file.
pub fn to_parquet(rows: &[ExampleResult]) -> Result<Vec<u8>, String> {
    parquet_bytes(&batch_of(rows).map_err(|e| e.to_string())?)
}

/// A record batch as the bytes of a Parquet file.
pub fn parquet_bytes(batch: &RecordBatch) -> Result<Vec<u8>, String> {
    let mut out = vec![];
    let mut writer =
        ArrowWriter::try_new(&mut out, batch.schema(), None).map_err(|e| e.to_string())?;
    writer.write(batch).map_err(|e| e.to_string())?;
    writer.close().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Writes rows to a Parquet file (through a temporary name and a rename).
pub fn write_parquet(path: &Path, rows: &[ExampleResult]) -> Result<(), ResultsError> {
    let error = |message: String| ResultsError {
        location: path.display().to_string(),
        message,
    };
    let bytes = to_parquet(rows).map_err(error)?;
    crate::storage::files::write_atomic(path, &bytes).map_err(|e| error(e.to_string()))
}

/// Reads rows written by [`write_parquet`].
pub fn read_parquet(path: &Path) -> Result<Vec<ExampleResult>, ResultsError> {
    let bytes = std::fs::read(path).map_err(|e| ResultsError {
        location: path.display().to_string(),
        message: e.to_string(),
    })?;
    from_parquet(Bytes::from(bytes), &path.display().to_string())
}

/// Reads rows from the bytes of a Parquet file; `location` names it in errors.
pub fn from_parquet(bytes: Bytes, location: &str) -> Result<Vec<ExampleResult>, ResultsError> {
    let error = |message: String| ResultsError {
        location: location.to_string(),
        message,
    };
    guard_parquet(|| rows_of_parquet(bytes), |m| m).map_err(error)
}

fn rows_of_parquet(bytes: Bytes) -> Result<Vec<ExampleResult>, String> {
    let unreadable = |e: &dyn std::fmt::Display| format!("not a readable Parquet file: {e}");
    let size = bytes.len() as u64;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| unreadable(&e))?;
    check_chunks(reader.metadata(), size).map_err(|e| unreadable(&e))?;
    let reader = reader.build().map_err(|e| unreadable(&e))?;
    let expected = batch_of(&[]).expect("empty batch").schema();
    let mut rows = vec![];
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        rows.extend(batch_rows(&batch, &expected)?);
    }
    Ok(rows)
}

/// Columns that files of earlier versions lack: read as `None`.
const OPTIONAL_COLUMNS: [&str; 1] = ["distinct_samples"];

/// The u32 column `name`, if the batch has it.
fn optional_u32s<'a>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<Option<&'a arrow_array::UInt32Array>, String> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(c) if c.data_type() == &arrow_schema::DataType::UInt32 => {
            Ok(Some(c.as_primitive::<UInt32Type>()))
        }
        Some(c) => Err(format!(
            "column `{name}` has type {}, expected UInt32",
            c.data_type()
        )),
    }
}

/// The rows of one record batch whose columns have the names and types of
/// `expected` (extra columns are ignored; [`OPTIONAL_COLUMNS`] may be missing).
fn batch_rows(batch: &RecordBatch, expected: &Schema) -> Result<Vec<ExampleResult>, String> {
    let column = |name: &str| -> Result<&ArrayRef, String> {
        let want = expected
            .field_with_name(name)
            .expect("known column")
            .data_type();
        match batch.column_by_name(name) {
            Some(c) if c.data_type() == want => Ok(c),
            Some(c) => Err(format!(
                "column `{name}` has type {}, expected {want}",
                c.data_type()
            )),
            None => Err(format!("no column `{name}`: not a premem results file")),
        }
    };
    let id = column("id")?.as_string::<i32>();
    let split = column("split")?.as_string::<i32>();
    let step = column("checkpoint_step")?.as_primitive::<UInt64Type>();
    let preamble = column("preamble")?.as_string::<i32>();
    let n_correct = column("n_correct")?.as_primitive::<UInt32Type>();
    let samples = column("samples")?.as_primitive::<UInt32Type>();
    let accuracy = column("accuracy")?.as_primitive::<Float64Type>();
    let nll = column("target_nll")?.as_primitive::<Float64Type>();
    let tokens = column("target_tokens")?.as_primitive::<UInt64Type>();
    let perplexity = column("target_perplexity")?.as_primitive::<Float64Type>();
    let mean_tokens = column("mean_sample_tokens")?.as_primitive::<Float64Type>();
    let equal = column("frac_equal_target")?.as_primitive::<Float64Type>();
    let confidences = column("sample_confidences")?.as_list::<i32>();
    let texts = column("sample_texts")?.as_list::<i32>();
    let distinct = optional_u32s(batch, OPTIONAL_COLUMNS[0])?;
    let rows = (0..batch.num_rows()).map(|i| ExampleResult {
        id: id.value(i).to_string(),
        split: split.value(i).to_string(),
        checkpoint_step: step.value(i),
        preamble: preamble.value(i).to_string(),
        n_correct: n_correct.value(i),
        samples: samples.value(i),
        accuracy: accuracy.value(i),
        target_nll: nll.value(i),
        target_tokens: tokens.value(i),
        target_perplexity: perplexity.value(i),
        mean_sample_tokens: mean_tokens.value(i),
        frac_equal_target: equal.value(i),
        sample_confidences: confidences
            .value(i)
            .as_primitive::<Float64Type>()
            .iter()
            .map(|c| c.unwrap_or(f64::NAN))
            .collect(),
        sample_texts: texts
            .value(i)
            .as_string::<i32>()
            .iter()
            .map(|s| s.unwrap_or_default().to_string())
            .collect(),
        distinct_samples: distinct.and_then(|d| d.is_valid(i).then(|| d.value(i))),
    });
    Ok(rows.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(distinct: Option<u32>) -> ExampleResult {
        ExampleResult {
            id: "train-0001".into(),
            split: "train".into(),
            checkpoint_step: 32,
            preamble: String::new(),
            n_correct: 2,
            samples: 5,
            accuracy: 0.4,
            target_nll: 3.5,
            target_tokens: 10,
            target_perplexity: 0.35f64.exp(),
            mean_sample_tokens: 11.0,
            frac_equal_target: 0.2,
            sample_confidences: vec![-0.5; 5],
            sample_texts: vec!["a".into()],
            distinct_samples: distinct,
        }
    }

    #[test]
    fn distinct_samples_round_trip_and_may_be_missing() {
        let rows = [row(Some(3)), row(None)];
        let back = from_parquet(Bytes::from(to_parquet(&rows).unwrap()), "r.parquet").unwrap();
        assert_eq!(back, rows);
        // A file written before the column existed.
        let batch = batch_of(&rows).unwrap();
        let old: Vec<usize> = (0..batch.num_columns() - 1).collect();
        let old = parquet_bytes(&batch.project(&old).unwrap()).unwrap();
        let back = from_parquet(Bytes::from(old), "old.parquet").unwrap();
        assert!(back.iter().all(|r| r.distinct_samples.is_none()));
        assert_eq!(back[0].accuracy, 0.4);
    }
}
