//! Bad input is a clear error naming the file and the field or tensor — never
//! a panic.

mod common;

use std::path::{Path, PathBuf};

use common::fixture;
use premem_model::config::ConfigError;
use premem_model::{CausalLm, ModelError, Tokenizer};
use tch::{Device, Kind, Tensor};

/// A writable copy of a fixture model directory.
fn copy_fixture(family: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(family);
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(fixture(family)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    (tmp, dir)
}

fn load(dir: &Path) -> Result<CausalLm, ModelError> {
    CausalLm::load(dir, Device::Cpu, Kind::Float)
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join("config.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(value.as_object_mut().unwrap());
    std::fs::write(path, value.to_string()).unwrap();
}

/// Rewrites model.safetensors with tch's own writer after `edit`.
fn edit_weights(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let path = dir.join("model.safetensors");
    let mut tensors = Tensor::read_safetensors(&path).unwrap();
    edit(&mut tensors);
    Tensor::write_safetensors(&tensors, &path).unwrap();
}

fn message(result: Result<CausalLm, ModelError>) -> String {
    match result {
        Ok(_) => panic!("bad input was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_model_type_names_file_and_type() {
    let (_tmp, dir) = copy_fixture("llama");
    edit_config(&dir, |c| {
        c.insert("model_type".into(), "gpt2".into());
    });
    let err = load(&dir).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::Config(ConfigError::UnknownModelType { .. })
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("'gpt2'") && msg.contains("llama, qwen2"),
        "{msg}"
    );
}

#[test]
fn missing_and_mistyped_fields_are_named() {
    let (_tmp, dir) = copy_fixture("qwen2");
    edit_config(&dir, |c| {
        c.remove("hidden_size");
    });
    let msg = message(load(&dir));
    assert!(
        msg.contains("config.json") && msg.contains("missing field `hidden_size`"),
        "{msg}"
    );

    edit_config(&dir, |c| {
        c.insert("hidden_size".into(), "sixty-four".into());
    });
    let msg = message(load(&dir));
    assert!(
        msg.contains("config.json") && msg.contains("invalid type"),
        "{msg}"
    );

    edit_config(&dir, |c| {
        c.insert("hidden_size".into(), 64.into());
        c.remove("model_type");
    });
    let msg = message(load(&dir));
    assert!(msg.contains("missing field `model_type`"), "{msg}");
}

#[test]
fn unsupported_settings_are_named() {
    let (_tmp, dir) = copy_fixture("llama");
    edit_config(&dir, |c| {
        c.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_type": "yarn", "rope_theta": 1e4}),
        );
    });
    let msg = message(load(&dir));
    assert!(
        msg.contains("rope_parameters.rope_type") && msg.contains("'yarn'"),
        "{msg}"
    );

    edit_config(&dir, |c| {
        c.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_type": "default", "rope_theta": 1e4}),
        );
        c.insert("num_key_value_heads".into(), 3.into());
    });
    let msg = message(load(&dir));
    assert!(
        msg.contains("num_key_value_heads") && msg.contains("divide"),
        "{msg}"
    );
}

#[test]
fn invalid_json_names_the_file() {
    let (_tmp, dir) = copy_fixture("mistral");
    std::fs::write(dir.join("config.json"), "{\"model_type\": \"mistral\",").unwrap();
    let msg = message(load(&dir));
    assert!(
        msg.contains("config.json") && msg.contains("not valid JSON"),
        "{msg}"
    );
}

#[test]
fn truncated_or_garbage_safetensors_is_an_error() {
    let (_tmp, dir) = copy_fixture("llama");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = message(load(&dir));
    assert!(
        msg.contains("model.safetensors") && msg.contains("not a usable safetensors"),
        "{msg}"
    );

    std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
    let msg = message(load(&dir));
    assert!(msg.contains("model.safetensors"), "{msg}");

    std::fs::remove_file(&path).unwrap();
    let msg = message(load(&dir));
    assert!(
        msg.contains("neither model.safetensors nor model.safetensors.index.json"),
        "{msg}"
    );
}

#[test]
fn wrong_missing_and_extra_tensors_are_each_named() {
    let (_tmp, dir) = copy_fixture("llama");
    edit_weights(&dir, |tensors| {
        tensors.retain(|(name, _)| name != "model.layers.1.mlp.up_proj.weight");
        for (name, tensor) in tensors.iter_mut() {
            if name == "model.layers.0.self_attn.k_proj.weight" {
                *tensor = tensor.narrow(0, 0, 16).contiguous();
            }
        }
        tensors.push((
            "model.layers.9.mlp.extra.weight".into(),
            Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)),
        ));
    });
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, ModelError::WeightsMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("1 missing tensors")
            && msg.contains("model.layers.1.mlp.up_proj.weight [128, 64]"),
        "{msg}"
    );
    assert!(
        msg.contains("model.layers.0.self_attn.k_proj.weight: checkpoint has [16, 64], config implies [32, 64]"),
        "{msg}"
    );
    assert!(
        msg.contains("1 unexpected tensors") && msg.contains("model.layers.9.mlp.extra.weight"),
        "{msg}"
    );
}

#[test]
fn index_pointing_at_a_missing_shard_is_an_error() {
    let (_tmp, dir) = copy_fixture("mistral");
    std::fs::remove_file(dir.join("model-00003-of-00014.safetensors")).unwrap();
    let msg = message(load(&dir));
    assert!(msg.contains("model-00003-of-00014.safetensors"), "{msg}");
}

#[test]
fn unsupported_dtype_is_named() {
    let (_tmp, dir) = copy_fixture("llama");
    edit_weights(&dir, |tensors| {
        for (name, tensor) in tensors.iter_mut() {
            if name == "model.norm.weight" {
                *tensor = tensor.to_kind(Kind::Int);
            }
        }
    });
    let msg = message(load(&dir));
    assert!(
        msg.contains("model.norm.weight") && msg.contains("dtype"),
        "{msg}"
    );
}

#[test]
fn missing_or_corrupt_tokenizer_is_an_error() {
    let (_tmp, dir) = copy_fixture("gemma2");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let err = Tokenizer::from_dir(&dir)
        .err()
        .expect("missing tokenizer accepted")
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("no tokenizer file"),
        "{err}"
    );

    std::fs::write(dir.join("tokenizer.json"), "{\"model\": 3}").unwrap();
    let err = Tokenizer::from_dir(&dir)
        .err()
        .expect("corrupt tokenizer accepted")
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("cannot read tokenizer"),
        "{err}"
    );
}

#[test]
fn tokenizer_round_trips_and_checks_vocab_fit() {
    let tok = Tokenizer::from_dir(&fixture("llama")).unwrap();
    let text = "Natalia sold 48/2 = 24 clips in May.";
    let ids = tok.encode(text, false).unwrap();
    assert!(ids.len() > 5);
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    assert!(tok.check_fits(320).is_ok());
    let err = tok.check_fits(100).unwrap_err().to_string();
    assert!(
        err.contains("does not fit the model's vocab_size 100"),
        "{err}"
    );
}

#[test]
fn out_of_range_token_ids_are_an_error() {
    let model = load(&fixture("llama")).unwrap();
    let ids = Tensor::from_slice(&[1i64, 2, 5000]).view([1, 3]);
    let err = tch::no_grad(|| model.forward(&ids, None, None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("token ids must be in 0..320"), "{err}");
}
