//! Property tests of the manifest check of a local checkpoint directory
//! (`verify_dir`): arbitrary bytes as `MANIFEST.json`, then manifests with
//! any names ("", "..", "../x", "a/b"), sizes and hashes over files that are
//! there or not. Verification passes or fails, never panics, and never
//! writes outside the cache directory. Cases: 64, or `PROPTEST_CASES`.

use premem_core::storage::checkpoint::MANIFEST;
use premem_evaluator::verify::verify_dir;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Verifies a directory of `files` with `manifest` as its manifest.
fn verify(manifest: &[u8], files: &[(String, Vec<u8>)]) {
    let root = tempfile::tempdir().expect("a temporary directory");
    let dir = root.path().join("ckpt");
    let cache = root.path().join("cache");
    std::fs::create_dir_all(&dir).expect("create the directory");
    std::fs::write(dir.join(MANIFEST), manifest).expect("write the manifest");
    for (name, bytes) in files {
        let plain = !name.is_empty() && !name.contains(['/', '\\', '\0']) && name != MANIFEST;
        if plain && name != "." && name != ".." && name.len() < 200 {
            std::fs::write(dir.join(name), bytes).expect("write a file");
        }
    }
    let _ = verify_dir(&dir, &cache);
    for entry in std::fs::read_dir(root.path()).expect("list").flatten() {
        let name = entry.file_name();
        assert!(
            name == "ckpt" || name == "cache",
            "wrote {name:?} outside the cache"
        );
    }
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["config.json", "model.safetensors", "a", "", ".", "..",
            "../x", "a/b", "a\\b", "MANIFEST.json", "\u{0}"]).prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u64..16).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
    ]
}

/// A manifest and the files present: a file's contents are its name, so a
/// listed size and hash sometimes match.
fn checkpoint() -> impl Strategy<Value = (Vec<u8>, Vec<(String, Vec<u8>)>)> {
    let hash = prop_oneof![
        Just("0".repeat(64)),
        any::<String>(),
        Just("ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb".to_string()),
    ];
    let entry = (name(), number(), hash).prop_map(
        |(name, bytes, sha256)| json!({ "name": name, "bytes": bytes, "sha256": sha256 }),
    );
    (
        number(),
        prop::collection::vec(entry, 0..5),
        prop::collection::vec(name(), 0..4),
    )
        .prop_map(|(step, entries, extra)| {
            let listed = entries
                .iter()
                .filter_map(|e| e["name"].as_str().map(str::to_string));
            let files = listed
                .chain(extra)
                .map(|n| (n.clone(), n.into_bytes()))
                .collect();
            let manifest = json!({ "step": step, "files": entries, "premem_version": "0.1.0",
                                   "created_unix_ms": 0 });
            (manifest.to_string().into_bytes(), files)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn manifest_of_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        verify(&bytes, &[]);
    }

    #[test]
    fn manifest_of_any_entries((manifest, files) in checkpoint()) {
        verify(&manifest, &files);
    }
}
