//! premem against transformers: logits on a left-padded batch, incremental
//! decoding with the KV cache, and checkpoint round trips, for each family.

mod common;

use std::collections::BTreeMap;

use common::{FAMILIES, device, fixture, max_abs_diff_at, reference};
use premem_model::weights::Checkpoint;
use premem_model::{CausalLm, ModelConfig, SaveOptions};
use tch::{Kind, Tensor};

const LOGIT_TOLERANCE: f64 = 1e-4;
const CACHE_TOLERANCE: f64 = 1e-5;

#[test]
fn logits_match_transformers_on_a_padded_batch() {
    let device = device();
    for family in FAMILIES {
        let model = CausalLm::load(&fixture(family), device, Kind::Float).unwrap();
        let r = reference(family);
        let mask = &r["attention_mask"];
        assert!(
            mask.eq(0).any().int64_value(&[]) == 1,
            "{family}: the reference batch must be padded"
        );
        let logits = tch::no_grad(|| model.forward(&r["input_ids"], Some(mask), None)).unwrap();
        assert_eq!(logits.size(), r["logits"].size());
        let err = max_abs_diff_at(&logits, &r["logits"], mask);
        println!("{family}: max abs logit error vs transformers {err:.2e}");
        assert!(
            err <= LOGIT_TOLERANCE,
            "{family}: max abs error {err} > {LOGIT_TOLERANCE}"
        );
    }
}

/// An unpadded row alone runs the mask-free (flash, grouped-kv) attention
/// path; it must agree with transformers too.
#[test]
fn unpadded_row_matches_transformers_on_the_causal_path() {
    let device = device();
    for family in FAMILIES {
        let model = CausalLm::load(&fixture(family), device, Kind::Float).unwrap();
        let r = reference(family);
        let row = r["input_ids"].narrow(0, 0, 1);
        assert_eq!(
            r["attention_mask"]
                .narrow(0, 0, 1)
                .sum(Kind::Int64)
                .int64_value(&[]),
            row.size()[1]
        );
        let logits = tch::no_grad(|| model.forward(&row, None, None)).unwrap();
        let ones = Tensor::ones(row.size(), (Kind::Int64, tch::Device::Cpu));
        let err = max_abs_diff_at(&logits, &r["logits"].narrow(0, 0, 1), &ones);
        assert!(
            err <= LOGIT_TOLERANCE,
            "{family}: max abs error {err} > {LOGIT_TOLERANCE}"
        );
    }
}

/// The reference logits are far from trivial: a model that ignored any part
/// of the input (padding, positions, soft-capping) would miss them by > 1e-2.
#[test]
fn reference_logits_are_sensitive_to_positions() {
    let device = device();
    for family in FAMILIES {
        let model = CausalLm::load(&fixture(family), device, Kind::Float).unwrap();
        let r = reference(family);
        // Without the mask, positions of padded rows shift and padding is attended.
        let unmasked = tch::no_grad(|| model.forward(&r["input_ids"], None, None)).unwrap();
        let err = max_abs_diff_at(&unmasked, &r["logits"], &r["attention_mask"]);
        assert!(
            err > 1e-2,
            "{family}: ignoring the mask changed logits by only {err}"
        );
    }
}

#[test]
fn incremental_decoding_matches_full_forward() {
    let device = device();
    for family in FAMILIES {
        let model = CausalLm::load(&fixture(family), device, Kind::Float).unwrap();
        let r = reference(family);
        let (ids, mask) = (&r["input_ids"], &r["attention_mask"]);
        let seq = ids.size()[1];
        let full = tch::no_grad(|| model.forward(ids, Some(mask), None)).unwrap();

        // Prefill 5 columns (all padding for the shortest row), then a chunk
        // of 3, then one token at a time: windows and padding cross chunks.
        let mut cache = model.new_cache(0);
        let mut pieces = vec![];
        let mut start = 0;
        for len in [5, 3].into_iter().chain(std::iter::repeat(1)) {
            if start >= seq {
                break;
            }
            let len = len.min(seq - start);
            let step = tch::no_grad(|| {
                model.forward(
                    &ids.narrow(1, start, len),
                    Some(&mask.narrow(1, start, len)),
                    Some(&mut cache),
                )
            })
            .unwrap();
            pieces.push(step);
            start += len;
        }
        assert_eq!(cache.len(), seq);
        let incremental = Tensor::cat(&pieces, 1);
        let err = max_abs_diff_at(&incremental, &full, mask);
        println!("{family}: incremental vs full forward {err:.2e}");
        assert!(
            err <= CACHE_TOLERANCE,
            "{family}: incremental decoding differs by {err}"
        );
    }
}

#[test]
fn saved_checkpoint_loads_back_bit_identically_in_the_transformers_layout() {
    let device = device();
    for family in FAMILIES {
        let model = CausalLm::load(&fixture(family), device, Kind::Float).unwrap();
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path(), &SaveOptions::default()).unwrap();

        let layout: BTreeMap<String, Vec<i64>> = serde_json::from_str(
            &std::fs::read_to_string(fixture(family).join("layout.json")).unwrap(),
        )
        .unwrap();
        let written = Checkpoint::open(dir.path()).unwrap().shapes();
        assert_eq!(
            written, layout,
            "{family}: tensor names/shapes differ from transformers'"
        );

        let reloaded = CausalLm::load(dir.path(), device, Kind::Float).unwrap();
        let original = model.var_store().variables();
        let again = reloaded.var_store().variables();
        assert_eq!(original.len(), again.len());
        for (name, tensor) in &original {
            assert!(
                tensor.equal(&again[name]),
                "{family}: {name} changed in the round trip"
            );
        }
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["model_type"], family);
        assert_eq!(config["dtype"], "float32");
    }
}

#[test]
fn sharded_save_writes_an_index_and_round_trips() {
    let device = device();
    let model = CausalLm::load(&fixture("llama"), device, Kind::Float).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A single save first: the sharded save must remove its model.safetensors.
    model.save(dir.path(), &SaveOptions::default()).unwrap();
    model
        .save(
            dir.path(),
            &SaveOptions {
                max_shard_bytes: 40_000,
            },
        )
        .unwrap();
    assert!(!dir.path().join("model.safetensors").exists());
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let files: std::collections::BTreeSet<&str> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(files.len() > 3, "expected several shards, got {files:?}");
    let reloaded = CausalLm::load(dir.path(), device, Kind::Float).unwrap();
    for (name, tensor) in model.var_store().variables() {
        assert!(
            tensor.equal(&reloaded.var_store().variables()[&name]),
            "{name}"
        );
    }
}

#[test]
fn random_model_from_config_is_seeded_and_round_trips() {
    let device = device();
    let config = ModelConfig::from_file(&fixture("gemma2").join("config.json")).unwrap();
    let a = CausalLm::random(config.clone(), device, Kind::Float, 7);
    let b = CausalLm::random(config.clone(), device, Kind::Float, 7);
    let c = CausalLm::random(config, device, Kind::Float, 8);
    let name = "model.layers.1.self_attn.q_proj.weight";
    let (va, vb, vc) = (
        a.var_store().variables(),
        b.var_store().variables(),
        c.var_store().variables(),
    );
    assert!(va[name].equal(&vb[name]));
    assert!(!va[name].equal(&vc[name]));
    // Norms start at identity: (1 + w) with w = 0 for Gemma2.
    let norm = &va["model.layers.0.pre_feedforward_layernorm.weight"];
    assert_eq!(norm.abs().sum(Kind::Float).double_value(&[]), 0.0);

    let ids = Tensor::from_slice(&[5i64, 9, 17, 3, 8, 2]).view([2, 3]);
    let dir = tempfile::tempdir().unwrap();
    a.save(dir.path(), &SaveOptions::default()).unwrap();
    let reloaded = CausalLm::load(dir.path(), device, Kind::Float).unwrap();
    let (la, lr) = tch::no_grad(|| {
        (
            a.forward(&ids, None, None).unwrap(),
            reloaded.forward(&ids, None, None).unwrap(),
        )
    });
    assert!(la.equal(&lr));
}

/// bf16 runs end to end (what CUDA uses) and stays close to fp32.
#[test]
fn bf16_forward_tracks_fp32() {
    let device = device();
    let r = reference("llama");
    let fp32 = CausalLm::load(&fixture("llama"), device, Kind::Float).unwrap();
    let bf16 = CausalLm::load(&fixture("llama"), device, Kind::BFloat16).unwrap();
    assert_eq!(bf16.kind(), Kind::BFloat16);
    let (a, b) = tch::no_grad(|| {
        (
            fp32.forward(&r["input_ids"], Some(&r["attention_mask"]), None)
                .unwrap(),
            bf16.forward(&r["input_ids"], Some(&r["attention_mask"]), None)
                .unwrap(),
        )
    });
    assert_eq!(b.kind(), Kind::BFloat16);
    let err = max_abs_diff_at(&a, &b, &r["attention_mask"]);
    println!("llama: bf16 vs fp32 max abs logit difference {err:.3}");
    // Logits have std ~1.5; bf16 keeps 8 bits of mantissa.
    assert!(err < 0.25, "bf16 logits differ from fp32 by {err}");
    assert!(
        err > 0.0,
        "bf16 forward should not be bit-identical to fp32"
    );
}
