//! Shared helpers for the model tests: fixtures made by transformers
//! (`fixtures/make_fixtures.py`) and the device the tests run on.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use tch::{Device, Kind, Tensor};

pub const FAMILIES: [&str; 4] = ["llama", "qwen2", "mistral", "gemma2"];

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn fixture(family: &str) -> PathBuf {
    fixtures().join(family)
}

/// The device under test: the CPU, or `PREMEM_TEST_DEVICE=cuda` to run the
/// same test binary on a GPU host.
pub fn device() -> Device {
    premem_model::runtime::init();
    match std::env::var("PREMEM_TEST_DEVICE").as_deref() {
        Ok("cuda") => {
            assert!(
                tch::Cuda::is_available(),
                "PREMEM_TEST_DEVICE=cuda but CUDA is not available"
            );
            Device::Cuda(0)
        }
        Ok("cpu") | Err(_) => Device::Cpu,
        Ok(other) => panic!("PREMEM_TEST_DEVICE={other}: expected cpu or cuda"),
    }
}

/// input_ids, attention_mask, position_ids and logits recorded by transformers.
pub fn reference(family: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture(family).join("reference.safetensors"))
        .expect("reference.safetensors")
        .into_iter()
        .collect()
}

/// Max |a - b| over the positions where `mask` is 1 (`[batch, seq]`).
pub fn max_abs_diff_at(a: &Tensor, b: &Tensor, mask: &Tensor) -> f64 {
    let keep = mask.to_device(Device::Cpu).ne(0);
    let a = a.to_device(Device::Cpu).to_kind(Kind::Double);
    let b = b.to_device(Device::Cpu).to_kind(Kind::Double);
    let diff = (a - b).abs().amax(-1, false); // [batch, seq]
    diff.masked_select(&keep).max().double_value(&[])
}
