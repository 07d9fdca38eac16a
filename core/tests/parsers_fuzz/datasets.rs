//! Datasets: GSM8K, MATH and mapped JSONL, and Parquet, from a file.

use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
    UInt64Array, types::Int32Type,
};
use premem_core::data::dataset::{Dataset, DatasetFormat, DatasetSpec, FieldMap};
use premem_core::data::results::parquet_bytes;
use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::{CASES, json_value, tricky_string};

/// Column names the formats and the mappings below use, and others.
const COLUMNS: [&str; 12] = [
    "question",
    "answer",
    "problem",
    "solution",
    "id",
    "unique_id",
    "parent_id",
    "level",
    "type",
    "q",
    "t",
    "a",
];

fn format() -> impl Strategy<Value = DatasetFormat> {
    prop::sample::select(vec![
        DatasetFormat::Gsm8k,
        DatasetFormat::Math,
        DatasetFormat::Jsonl,
        DatasetFormat::Parquet,
    ])
}

fn fields() -> impl Strategy<Value = Option<FieldMap>> {
    let column = || prop::sample::select(COLUMNS.to_vec()).prop_map(str::to_string);
    prop::option::weighted(
        0.7,
        (
            column(),
            column(),
            prop::option::of(column()),
            prop::option::of(column()),
            prop::option::of(column()),
        )
            .prop_map(|(query, target, id, answer, parent_id)| FieldMap {
                query,
                target,
                id,
                answer,
                parent_id,
            }),
    )
}

/// Loads `bytes` as a dataset file of `format`; the answer is not checked.
fn load(bytes: &[u8], format: DatasetFormat, fields: Option<FieldMap>, drop_empty: bool) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("data");
    std::fs::write(&path, bytes).expect("write the dataset");
    let spec = DatasetSpec {
        path: path.display().to_string(),
        format,
        fields,
        answer_style: None,
        drop_empty_answers: drop_empty,
    };
    if let Ok(dataset) = Dataset::load(&spec) {
        assert!(!dataset.is_empty(), "a loaded dataset has examples");
    }
}

/// A cell: text with answer markers more often than not, or any value.
fn cell() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (tricky_string(), prop::sample::select(vec!["#### ", "\\boxed{", "}", "####", ""]),
            tricky_string())
            .prop_map(|(a, marker, b)| Value::String(format!("{a}{marker}{b}"))),
        2 => json_value(),
    ]
}

/// A JSONL line: an object of known and other columns, or something else.
fn line() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => prop::sample::select(COLUMNS.to_vec()).prop_map(str::to_string),
        1 => tricky_string(),
    ];
    prop_oneof![
        8 => prop::collection::btree_map(key, cell(), 0..7)
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()).to_string()),
        1 => json_value().prop_map(|v| v.to_string()),
        1 => tricky_string(),
    ]
}

/// A column of one Arrow type, every row set or null.
fn column(rows: usize) -> impl Strategy<Value = ArrayRef> {
    let texts = move || prop::collection::vec(prop::option::of(tricky_string()), rows);
    prop_oneof![
        texts().prop_map(|v| Arc::new(StringArray::from(v)) as ArrayRef),
        texts().prop_map(|v| {
            let keys: Vec<Option<&str>> = v.iter().map(|s| s.as_deref()).collect();
            Arc::new(keys.into_iter().collect::<DictionaryArray<Int32Type>>()) as ArrayRef
        }),
        prop::collection::vec(prop::option::of(any::<i64>()), rows)
            .prop_map(|v| Arc::new(Int64Array::from(v)) as ArrayRef),
        prop::collection::vec(prop::option::of(any::<u64>()), rows)
            .prop_map(|v| Arc::new(UInt64Array::from(v)) as ArrayRef),
        prop::collection::vec(prop::option::of(any::<f64>()), rows)
            .prop_map(|v| Arc::new(Float64Array::from(v)) as ArrayRef),
        prop::collection::vec(prop::option::of(any::<bool>()), rows)
            .prop_map(|v| Arc::new(BooleanArray::from(v)) as ArrayRef),
        texts().prop_map(|v| {
            let mut list = ListBuilder::new(StringBuilder::new());
            for s in v {
                list.values().append_option(s);
                list.append(true);
            }
            Arc::new(list.finish()) as ArrayRef
        }),
    ]
}

/// A Parquet file of a few columns with known names and random types.
fn parquet_file() -> impl Strategy<Value = Vec<u8>> {
    (0usize..5)
        .prop_flat_map(|rows| {
            let named = (prop::sample::select(COLUMNS.to_vec()), column(rows));
            prop::collection::vec(named, 1..5)
        })
        .prop_map(|mut columns| {
            columns.sort_by_key(|(name, _)| *name);
            columns.dedup_by_key(|(name, _)| *name);
            let batch = RecordBatch::try_from_iter(columns).expect("columns of one length");
            parquet_bytes(&batch).expect("a parquet file")
        })
}

/// `bytes` with some bytes overwritten and maybe cut short.
fn damaged(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = bytes.len().max(1);
    (
        prop::collection::vec((0..len, any::<u8>()), 0..4),
        prop::option::weighted(0.3, 0..len),
    )
        .prop_map(move |(flips, cut)| {
            let mut b = bytes.clone();
            for (at, byte) in flips {
                if at < b.len() {
                    b[at] = byte;
                }
            }
            b.truncate(cut.unwrap_or(b.len()));
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512), format in format(),
                 fields in fields(), drop in any::<bool>()) {
        load(&bytes, format, fields, drop);
    }

    #[test]
    fn jsonl_lines_of_any_fields(lines in prop::collection::vec(line(), 0..8),
                                 format in format(), fields in fields(), drop in any::<bool>()) {
        load(lines.join("\n").as_bytes(), format, fields, drop);
    }

    #[test]
    fn parquet_of_any_columns(bytes in parquet_file().prop_flat_map(damaged),
                              fields in fields(), drop in any::<bool>()) {
        load(&bytes, DatasetFormat::Parquet, fields, drop);
    }
}

/// The Parquet reader's panics that `parquet_of_any_columns` found came
/// from damaged bytes: every single-byte damage of a real dataset file is
/// refused or read, never a panic (2 of them reach the reader's panics in
/// parquet 60).
#[test]
fn parquet_with_any_one_byte_damaged() {
    let question = StringArray::from(vec!["What is 1 + 1?", "And 2 + 2?"]);
    let answer = StringArray::from(vec!["1 + 1 = 2\n#### 2", "#### 4"]);
    let batch = RecordBatch::try_from_iter([
        ("q", Arc::new(question) as ArrayRef),
        ("t", Arc::new(answer) as ArrayRef),
    ])
    .expect("a batch");
    let bytes = parquet_bytes(&batch).expect("a parquet file");
    let fields = FieldMap {
        query: "q".into(),
        target: "t".into(),
        id: None,
        answer: None,
        parent_id: None,
    };
    for at in 0..bytes.len() {
        for damage in [0x00, 0xff, bytes[at] ^ 0x80] {
            let mut b = bytes.clone();
            b[at] = damage;
            load(&b, DatasetFormat::Parquet, Some(fields.clone()), false);
        }
    }
}
