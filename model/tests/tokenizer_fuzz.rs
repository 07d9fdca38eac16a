//! Property tests of `tokenizer.json` reading (through the `tokenizers`
//! crate): arbitrary bytes, then the llama fixture's tokenizer with values
//! replaced, removed or added. Reading returns a tokenizer or an error,
//! never a panic; a tokenizer that was read encodes and decodes any text
//! (ids of any value included) without a panic. Cases: 64, or
//! `PROPTEST_CASES` (`make fuzz`).

// The TOML helpers of the shared strategies go unused here.
#[path = "../../core/tests/parsers_fuzz/strategies.rs"]
#[allow(dead_code)]
mod strategies;

use std::path::Path;

use premem_model::Tokenizer;
use proptest::prelude::*;
use serde_json::Value;
use strategies::{mutate, mutations, tricky_string};

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/llama/tokenizer.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("the fixture")).expect("parses")
}

/// Reads `bytes` as a tokenizer.json; one that reads is used.
fn read(bytes: &[u8], text: &str, ids: &[i64]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, bytes).expect("write the tokenizer");
    if let Ok(tokenizer) = Tokenizer::from_file(&path) {
        let _ = tokenizer.encode(text, true);
        let _ = tokenizer.decode(ids, false);
        let _ = (tokenizer.vocab_size(), tokenizer.token_id(text));
        let _ = tokenizer.check_fits(tokenizer.vocab_size());
    }
}

fn ids() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(prop_oneof![0i64..300, any::<i64>()], 0..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn tokenizer_of_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256),
                              text in tricky_string(), ids in ids()) {
        read(&bytes, &text, &ids);
    }

    #[test]
    fn tokenizer_mutated(changes in mutations(), text in tricky_string(), ids in ids()) {
        read(mutate(fixture(), &changes).to_string().as_bytes(), &text, &ids);
    }
}
