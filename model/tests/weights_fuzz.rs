//! Property tests of what premem-model parses itself: safetensors files
//! (the 8-byte header length, the JSON header, the data), shard indexes and
//! Hugging Face `config.json`. Arbitrary bytes, then headers and configs
//! with random dtypes, shapes, offsets and values: opening returns weights
//! or an error, never a panic (nor a libtorch abort). Cases: 64, or
//! `PROPTEST_CASES` (`make fuzz`).

use std::collections::HashMap;
use std::path::Path;

use premem_model::ModelConfig;
use premem_model::weights::{Checkpoint, WEIGHTS_FILE, WEIGHTS_INDEX_FILE};
use proptest::prelude::*;
use serde_json::{Value, json};
use tch::{Kind, Tensor};

const DTYPES: [&str; 9] = [
    "F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "X",
];

fn dimension() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0u64..5).prop_map(Value::from),
        1 => prop::sample::select(vec![u64::MAX, 1 << 62, 1 << 32, i64::MAX as u64 + 1])
            .prop_map(Value::from),
        1 => Just(json!(-1)),
        1 => Just(json!("2")),
    ]
}

fn offset() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0u64..80).prop_map(Value::from),
        1 => prop::sample::select(vec![u64::MAX, 1 << 40]).prop_map(Value::from),
        1 => Just(json!(-8)),
    ]
}

/// One header entry: a name and its dtype, shape and data offsets.
fn tensor() -> impl Strategy<Value = (String, Value)> {
    let name = prop_oneof![
        Just("w".to_string()),
        Just("__metadata__".to_string()),
        any::<String>(),
    ];
    let offsets = prop::collection::vec(offset(), 0..4);
    (
        name,
        prop::sample::select(DTYPES.to_vec()),
        prop::collection::vec(dimension(), 0..4),
        offsets,
    )
        .prop_map(|(name, dtype, shape, offsets)| {
            (
                name,
                json!({ "dtype": dtype, "shape": shape, "data_offsets": offsets }),
            )
        })
}

/// A safetensors file: the header's length (true or not), a header of
/// random entries, then some data.
fn safetensors() -> impl Strategy<Value = Vec<u8>> {
    let header = prop::collection::vec(tensor(), 0..4).prop_map(|t| {
        Value::Object(t.into_iter().collect())
            .to_string()
            .into_bytes()
    });
    let length = prop_oneof![
        6 => Just(None),
        1 => any::<u64>().prop_map(Some),
        1 => (0u64..200).prop_map(Some),
    ];
    (header, length, prop::collection::vec(any::<u8>(), 0..80)).prop_map(
        |(header, length, data)| {
            let n = length.unwrap_or(header.len() as u64);
            [n.to_le_bytes().as_slice(), &header, &data].concat()
        },
    )
}

/// A file whose one tensor `w` [2, 2] of `dtype` is well formed.
fn valid_file(dtype: &str) -> Vec<u8> {
    let size = match dtype {
        "F64" | "I64" => 8,
        "F16" | "BF16" => 2,
        "U8" | "BOOL" | "F8_E4M3" => 1,
        _ => 4,
    };
    let header = json!({ "w": { "dtype": dtype, "shape": [2, 2], "data_offsets": [0, 4 * size] } });
    let header = header.to_string().into_bytes();
    let data = vec![0u8; 4 * size];
    [
        (header.len() as u64).to_le_bytes().as_slice(),
        &header,
        &data,
    ]
    .concat()
}

/// Opens a directory holding `files`; weights that open are loaded into
/// one variable `w` [2, 2] of f32.
fn open(files: &[(&str, Vec<u8>)]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).expect("write a file");
    }
    if let Ok(checkpoint) = Checkpoint::open(dir.path()) {
        let _ = checkpoint.shapes();
        let variables = HashMap::from([(
            "w".to_string(),
            Tensor::zeros([2, 2], (Kind::Float, tch::Device::Cpu)),
        )]);
        let _ = checkpoint.load_into(&variables, |_| false);
    }
}

/// A shard index naming files that are there, absent, or outside.
fn index() -> impl Strategy<Value = Vec<u8>> {
    let file = prop::sample::select(vec![
        "a.safetensors",
        "b.safetensors",
        "",
        ".",
        "../x",
        "a/b",
        "model.safetensors.index.json",
    ]);
    let name = prop_oneof![Just("w".to_string()), any::<String>()];
    prop_oneof![
        4 => prop::collection::btree_map(name, file, 0..4)
            .prop_map(|m| json!({ "metadata": {}, "weight_map": m }).to_string().into_bytes()),
        1 => any::<String>().prop_map(String::into_bytes),
    ]
}

/// A config.json of the llama fixture with values replaced or removed.
fn config() -> impl Strategy<Value = Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/llama/config.json");
    let base: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("the fixture"))
        .expect("the fixture parses");
    let keys: Vec<String> = base
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    let value = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (0i64..4).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        Just(json!([])),
        Just(json!({ "rope_type": "llama3", "factor": 0 })),
    ];
    prop::collection::vec((prop::sample::select(keys), value), 1..5).prop_map(move |edits| {
        let mut config = base.clone();
        for (key, value) in edits {
            config[key.as_str()] = value;
        }
        config
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn weights_of_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        open(&[(WEIGHTS_FILE, bytes)]);
    }

    #[test]
    fn weights_of_any_header(bytes in safetensors()) {
        open(&[(WEIGHTS_FILE, bytes)]);
    }

    #[test]
    fn weights_of_any_dtype(dtype in prop::sample::select(DTYPES.to_vec())) {
        open(&[(WEIGHTS_FILE, valid_file(dtype))]);
    }

    #[test]
    fn shards_of_any_index(index in index(), a in safetensors(), dtype in prop::sample::select(DTYPES.to_vec())) {
        open(&[(WEIGHTS_INDEX_FILE, index), ("a.safetensors", a), ("b.safetensors", valid_file(dtype))]);
    }

    #[test]
    fn config_of_any_text(text in any::<String>()) {
        let _ = ModelConfig::from_json_str(&text, Path::new("config.json"));
    }

    #[test]
    fn config_with_values_replaced(config in config()) {
        let _ = ModelConfig::from_json_str(&config.to_string(), Path::new("config.json"));
    }
}

/// Found by `config_with_values_replaced`: a huge `num_hidden_layers`
/// aborted the process (per-layer settings allocated before validation).
#[test]
fn config_with_absurd_layer_count_is_an_error() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/llama/config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for layers in [
        5_398_759_171_172_416_016_i64,
        i64::MAX,
        premem_model::config::MAX_LAYERS + 1,
    ] {
        config["num_hidden_layers"] = json!(layers);
        let error = ModelConfig::from_json_str(&config.to_string(), Path::new("config.json"))
            .expect_err("refused");
        assert!(error.to_string().contains("num_hidden_layers"), "{error}");
    }
}
