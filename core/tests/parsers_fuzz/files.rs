//! Files premem reads back: manifests of published directories, run
//! records and evaluation result files.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use bytes::Bytes;
use premem_core::data::results::{ExampleResult, from_parquet, parquet_bytes, to_parquet};
use premem_core::spec::JobSpec;
use premem_core::spec::record::read_run_record;
use premem_core::storage::checkpoint::{MANIFEST, RUN_FILE, download_published, read_manifest_at};
use premem_core::storage::store::Store;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::{
    CASES, block_on, json_value, mutate, mutations, repo_file, tricky_number, tricky_string,
};

/// A published directory holding `files` (name, contents) besides its
/// `MANIFEST.json` (`manifest`): read it, then download it.
fn read_published(manifest: &[u8], files: &[(String, Vec<u8>)]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let published = dir.path().join("step");
    std::fs::create_dir_all(&published).expect("create the directory");
    std::fs::write(published.join(MANIFEST), manifest).expect("write the manifest");
    for (name, bytes) in files {
        let plain = !name.is_empty() && !name.contains(['/', '\\', '\0']) && name != MANIFEST;
        if plain && name != "." && name != ".." && name.len() < 200 {
            std::fs::write(published.join(name), bytes).expect("write a file");
        }
    }
    let store = Store::open(&published.display().to_string()).expect("a local store");
    let local = dir.path().join("local");
    let _ = block_on(read_manifest_at(&store));
    if block_on(download_published(&store, &local)).is_ok() {
        assert!(local.is_dir(), "a download makes its directory");
    }
    for entry in std::fs::read_dir(dir.path())
        .expect("list the directory")
        .flatten()
    {
        let name = entry.file_name();
        assert!(
            name == "step" || name == "local",
            "wrote {name:?} outside the download"
        );
    }
}

fn file_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["config.json", "model.safetensors", "a", "b.json"])
            .prop_map(str::to_string),
        2 => tricky_string(),
    ]
}

/// A manifest entry with any name, size and hash (or any JSON at all).
fn entry() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => (file_name(), tricky_number(), tricky_string())
            .prop_map(|(name, bytes, sha256)| json!({ "name": name, "bytes": bytes, "sha256": sha256 })),
        1 => json_value(),
    ]
}

/// Stands for a number past u64 (JSON values here hold at most u64).
const BIG: &str = "@u128::MAX+1@";

/// A manifest's text, `BIG` replaced by a number no integer type holds.
fn manifest_text(manifest: &Value) -> String {
    let past_u128 = "340282366920938463463374607431768211456";
    manifest.to_string().replace(&format!("{BIG:?}"), past_u128)
}

fn manifest() -> impl Strategy<Value = Value> {
    (
        tricky_number(),
        prop::collection::vec(entry(), 0..5),
        tricky_string(),
        prop_oneof![tricky_number(), Just(json!(BIG)), Just(json!(-1))],
    )
        .prop_map(|(step, files, version, created)| {
            json!({ "step": step, "files": files, "premem_version": version, "created_unix_ms": created })
        })
}

/// The files a manifest names, with contents that may match it: empty, or
/// one of a few bytes.
fn present_files(manifest: &Value) -> Vec<(String, Vec<u8>)> {
    let names = manifest["files"].as_array().cloned().unwrap_or_default();
    names
        .iter()
        .filter_map(|f| {
            f["name"]
                .as_str()
                .map(|n| (n.to_string(), n.as_bytes().to_vec()))
        })
        .collect()
}

/// A run record as `premem run` writes it.
fn run_record() -> Value {
    let text = repo_file("examples/synth.toml");
    let spec = JobSpec::from_toml(&text, Path::new("synth.toml")).expect("example job parses");
    json!({
        "name": "synth-tiny", "training_hash": "abc", "inputs_digest": "def",
        "premem_version": "0.1.0", "spec": spec, "git_revision": null, "checksums": {},
    })
}

fn read_record(bytes: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join(RUN_FILE), bytes).expect("write the run record");
    let store = Store::open(&dir.path().display().to_string()).expect("a local store");
    let _ = block_on(read_run_record(&store));
}

fn result_row() -> impl Strategy<Value = ExampleResult> {
    (
        (
            tricky_string(),
            tricky_string(),
            any::<u64>(),
            tricky_string(),
        ),
        (
            any::<u32>(),
            any::<u32>(),
            any::<f64>(),
            any::<f64>(),
            any::<u64>(),
        ),
        (any::<f64>(), any::<f64>(), any::<f64>()),
        (
            prop::collection::vec(any::<f64>(), 0..4),
            prop::collection::vec(tricky_string(), 0..3),
        ),
    )
        .prop_map(
            |((id, split, step, preamble), (n, k, acc, nll, tokens), (ppl, mean, eq), (c, t))| {
                ExampleResult {
                    id,
                    split,
                    checkpoint_step: step,
                    preamble,
                    n_correct: n,
                    samples: k,
                    accuracy: acc,
                    target_nll: nll,
                    target_tokens: tokens,
                    target_perplexity: ppl,
                    mean_sample_tokens: mean,
                    frac_equal_target: eq,
                    sample_confidences: c,
                    sample_texts: t,
                    distinct_samples: (k > 0).then_some(k),
                }
            },
        )
}

/// A results file of real rows, then some bytes changed or cut off.
fn damaged_results() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(result_row(), 0..4).prop_flat_map(|rows| {
        let bytes = to_parquet(&rows).expect("rows serialise");
        let len = bytes.len();
        (
            prop::collection::vec((0..len, any::<u8>()), 0..4),
            prop::option::weighted(0.3, 0..len),
        )
            .prop_map(move |(flips, cut)| {
                let mut b = bytes.clone();
                flips.into_iter().for_each(|(at, byte)| b[at] = byte);
                b.truncate(cut.unwrap_or(len));
                b
            })
    })
}

/// The expected column names with any of a few types, some nulls.
fn odd_results() -> impl Strategy<Value = Vec<u8>> {
    const NAMES: [&str; 15] = [
        "id",
        "split",
        "checkpoint_step",
        "preamble",
        "n_correct",
        "samples",
        "accuracy",
        "target_nll",
        "target_tokens",
        "target_perplexity",
        "mean_sample_tokens",
        "frac_equal_target",
        "sample_confidences",
        "sample_texts",
        "distinct_samples",
    ];
    let rows = 3;
    let column = prop_oneof![
        Just(Arc::new(StringArray::from(vec![Some("a"), None, Some("")])) as ArrayRef),
        Just(Arc::new(UInt64Array::from(vec![Some(1), None, Some(u64::MAX)])) as ArrayRef),
        Just(Arc::new(UInt32Array::from(vec![None, Some(0), Some(7)])) as ArrayRef),
        Just(Arc::new(Float64Array::from(vec![Some(f64::NAN), None, Some(1.0)])) as ArrayRef),
    ];
    prop::collection::vec((prop::sample::select(NAMES.to_vec()), column), 0..20).prop_map(
        move |mut columns| {
            columns.sort_by_key(|(name, _)| *name);
            columns.dedup_by_key(|(name, _)| *name);
            let _ = rows;
            match RecordBatch::try_from_iter(columns) {
                Ok(batch) => parquet_bytes(&batch).expect("a parquet file"),
                Err(_) => vec![],
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn manifest_of_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        read_published(&bytes, &[]);
    }

    #[test]
    fn manifest_of_any_entries(manifest in manifest()) {
        let files = present_files(&manifest);
        read_published(manifest_text(&manifest).as_bytes(), &files);
    }

    #[test]
    fn run_record_of_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        read_record(&bytes);
    }

    #[test]
    fn run_record_mutated(changes in mutations()) {
        read_record(mutate(run_record(), &changes).to_string().as_bytes());
    }

    #[test]
    fn results_of_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = from_parquet(Bytes::from(bytes), "results.parquet");
    }

    #[test]
    fn results_damaged(bytes in damaged_results()) {
        let _ = from_parquet(Bytes::from(bytes), "results.parquet");
    }

    #[test]
    fn results_of_odd_columns(bytes in odd_results()) {
        let _ = from_parquet(Bytes::from(bytes), "results.parquet");
    }
}

/// The panics proptest found in the Parquet reader (a column chunk at a
/// negative offset; page levels and bitmaps past their buffers) came from
/// one damaged byte: every single-byte damage of a real results file is
/// refused or read, never a panic (14 of them reach the reader's panics
/// in parquet 60).
#[test]
fn results_with_any_one_byte_damaged() {
    let row = ExampleResult {
        id: "e1".into(),
        split: "train".into(),
        checkpoint_step: 100,
        preamble: String::new(),
        n_correct: 3,
        samples: 5,
        accuracy: 0.6,
        target_nll: 12.5,
        target_tokens: 40,
        target_perplexity: 1.4,
        mean_sample_tokens: 38.0,
        frac_equal_target: 0.2,
        sample_confidences: vec![-0.1, -0.2],
        sample_texts: vec!["#### 7".into()],
        distinct_samples: Some(2),
    };
    let bytes = to_parquet(&[row.clone(), row]).expect("rows serialise");
    for at in 0..bytes.len() {
        for damage in [0x00, 0xff, bytes[at] ^ 0x80, bytes[at].wrapping_add(1)] {
            let mut b = bytes.clone();
            b[at] = damage;
            let _ = from_parquet(Bytes::from(b), "results.parquet");
        }
    }
}
