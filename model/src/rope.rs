//! Rotary position embeddings (RoPE) with the `rotate_half` convention of
//! transformers, and the `linear` and `llama3` frequency scalings.

use tch::{Kind, Tensor};

use crate::config::{ModelConfig, RopeScaling};

/// Rotary position embedding with the `rotate_half` convention of transformers.
pub(crate) struct Rotary {
    inv_freq: Tensor,
}

impl Rotary {
    pub(crate) fn new(config: &ModelConfig, device: tch::Device) -> Rotary {
        Rotary {
            inv_freq: inv_freq(config).to_device(device),
        }
    }

    /// cos and sin of shape `[batch, seq, head_dim]` for integer positions
    /// `[batch, seq]`, computed in fp32 and cast to `kind`.
    pub(crate) fn cos_sin(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * &self.inv_freq;
        let emb = Tensor::cat(&[&freqs, &freqs], -1);
        (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
    }
}

/// Inverse frequencies as transformers computes them (fp32, same operations),
/// including the `linear` and `llama3` scalings.
pub fn inv_freq(config: &ModelConfig) -> Tensor {
    let dim = config.head_dim;
    let exponents = Tensor::arange_start_step(0, dim, 2, (Kind::Int64, tch::Device::Cpu))
        .to_kind(Kind::Float)
        / dim as f64;
    let inv_freq = Tensor::pow_scalar(config.rope_theta, &exponents).reciprocal();
    match config.rope_scaling {
        RopeScaling::None => inv_freq,
        RopeScaling::Linear { factor } => inv_freq / factor,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old_context_len,
        } => {
            let low_freq_wavelen = old_context_len / low_freq_factor;
            let high_freq_wavelen = old_context_len / high_freq_factor;
            let wavelen = inv_freq.reciprocal() * (2.0 * std::f64::consts::PI);
            // Long wavelengths are divided by `factor`, short ones kept.
            let inv_freq_llama =
                (&inv_freq / factor).where_self(&wavelen.gt(low_freq_wavelen), &inv_freq);
            let smooth = (wavelen.reciprocal() * old_context_len - low_freq_factor)
                / (high_freq_factor - low_freq_factor);
            let smoothed = (smooth.ones_like() - &smooth) * &inv_freq_llama / factor
                + &smooth * &inv_freq_llama;
            let is_medium = wavelen
                .lt(high_freq_wavelen)
                .logical_not()
                .logical_and(&wavelen.gt(low_freq_wavelen).logical_not());
            smoothed.where_self(&is_medium, &inv_freq_llama)
        }
    }
}

fn rotate_half(xs: &Tensor) -> Tensor {
    let half = xs.size()[xs.dim() - 1] / 2;
    let x1 = xs.narrow(-1, 0, half);
    let x2 = xs.narrow(-1, half, half);
    Tensor::cat(&[&x2.neg(), &x1], -1)
}

/// `x * cos + rotate_half(x) * sin`, with cos/sin `[batch, 1, seq, head_dim]`.
pub(crate) fn apply_rotary(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    xs * cos + rotate_half(xs) * sin
}
