//! Devices and weight dtypes as the command line names them.

use anyhow::Result;
use premem_model::{default_kind, runtime};
use tch::{Device, Kind};

/// `--dtype`: the weight dtype.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DType {
    Auto,
    F32,
    Bf16,
    F16,
}

impl DType {
    pub fn kind(self, device: Device) -> Kind {
        match self {
            DType::Auto => default_kind(device),
            DType::F32 => Kind::Float,
            DType::Bf16 => Kind::BFloat16,
            DType::F16 => Kind::Half,
        }
    }

    /// The dtype to load with, `None` for the device's default policy.
    pub fn explicit(self, device: Device) -> Option<Kind> {
        match self {
            DType::Auto => None,
            other => Some(other.kind(device)),
        }
    }
}

/// `--device`: `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(name: &str) -> Result<Device> {
    runtime::parse_device(name).map_err(|e| anyhow::anyhow!("--device {e}"))
}
