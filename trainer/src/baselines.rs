//! The trainer's share of the baseline metrics (`premem_core::science::baselines`):
//! gradient variance over fixed minibatches and distance from the initial
//! weights, measured at each checkpoint.
//!
//! The probe leaves the model and the optimizer's state as they were: its
//! gradients go through the optimizer's gradient buffer, which the next step
//! overwrites whole, so a run with the probe trains bit-identically to one
//! without it.

use premem_core::science::baselines::CheckpointBaselines;
use premem_model::CausalLm;
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::optim::Optimizer;
use premem_model::batch::{Batch, TokenizedExample, summed_nll};

/// Elements per chunk of the streaming variance (bounds its temporaries).
const CHUNK: i64 = 1 << 24;

pub struct Probe {
    /// Fixed minibatches (dataset indices).
    pub minibatches: Vec<Vec<usize>>,
    pub micro_batch_size: usize,
    /// The weights at step 0, on the CPU, by variable name; `None` when they
    /// could not be recovered exactly.
    init: Option<Vec<(String, Tensor)>>,
}

/// A digest of a model's weights (names, shapes, dtypes and bytes).
pub fn weights_digest(model: &CausalLm) -> String {
    let mut variables: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hash = Sha256::new();
    for (name, t) in variables {
        let t = t.detach().to_device(Device::Cpu).contiguous();
        hash.update(format!("{name} {:?} {:?}\n", t.size(), t.kind()).as_bytes());
        let bytes = t.numel() * t.kind().elt_size_in_bytes();
        let mut buffer = vec![0u8; bytes];
        t.copy_data_u8(&mut buffer, t.numel());
        hash.update(&buffer);
    }
    hex::encode(hash.finalize())
}

impl Probe {
    /// `init`: a model holding the step-0 weights (copied to the CPU), or
    /// `None` when they are unknown (distance from init is then not measured).
    pub fn new(
        init: Option<&CausalLm>,
        minibatches: Vec<Vec<usize>>,
        micro_batch_size: usize,
    ) -> Probe {
        let init = init.map(|init| {
            let mut init: Vec<(String, Tensor)> = init
                .var_store()
                .variables()
                .into_iter()
                .map(|(name, t)| (name, t.detach().to_device(Device::Cpu).copy()))
                .collect();
            init.sort_by(|a, b| a.0.cmp(&b.0));
            init
        });
        Probe {
            minibatches,
            micro_batch_size: micro_batch_size.max(1),
            init,
        }
    }

    /// Measures `model` at checkpoint `step`.
    pub fn measure(
        &self,
        step: u64,
        model: &CausalLm,
        optimizer: &mut Optimizer,
        examples: &[TokenizedExample],
        pad: i64,
    ) -> Result<CheckpointBaselines> {
        let device = model.device();
        // Welford's update over minibatches, chunk by chunk of the flat
        // gradient: a running mean and the sum of squared deviations, stable
        // when the variance is small next to the mean gradient.
        let mut mean: Option<Tensor> = None;
        let (mut deviations, mut norms) = (0.0, 0.0);
        for (b, minibatch) in self.minibatches.iter().enumerate() {
            let tokens: usize = minibatch.iter().map(|&i| examples[i].loss_tokens()).sum();
            let scale = tokens.max(1) as f64;
            optimizer.zero_grads();
            for micro in minibatch.chunks(self.micro_batch_size) {
                let refs: Vec<&TokenizedExample> = micro.iter().map(|&i| &examples[i]).collect();
                let batch = Batch::collate(&refs, pad, device);
                (summed_nll(model, &batch)? / scale).backward();
            }
            // The gradient of this minibatch's mean token loss, flat fp32.
            optimizer.gather_grads();
            let g = optimizer.local_grads();
            norms += g.square().sum(Kind::Double).double_value(&[]).sqrt();
            let count = (b + 1) as f64;
            tch::no_grad(|| {
                let mean = mean.get_or_insert_with(|| g.zeros_like());
                let n = g.numel() as i64;
                let mut start = 0;
                while start < n {
                    let len = CHUNK.min(n - start);
                    let g = g.narrow(0, start, len).to_kind(Kind::Double);
                    let mut m = mean.narrow(0, start, len);
                    let delta = &g - m.to_kind(Kind::Double);
                    let updated = m.to_kind(Kind::Double) + &delta / count;
                    deviations += (&delta * (&g - &updated))
                        .sum(Kind::Double)
                        .double_value(&[]);
                    m.copy_(&updated);
                    start += len;
                }
            });
        }
        let b = self.minibatches.len();
        let finite = |v: f64| v.is_finite().then_some(v);
        Ok(CheckpointBaselines {
            step,
            grad_variance: (b >= 2)
                .then(|| deviations.max(0.0) / (b - 1) as f64)
                .and_then(finite),
            grad_norm_mean: (b > 0).then(|| norms / b as f64).and_then(finite),
            grad_minibatches: b,
            grad_minibatch_size: self.minibatches.first().map_or(0, Vec::len),
            distance_from_init: self.distance(model).and_then(finite),
        })
    }

    /// `Σ (θ − θ₀)²` in double precision.
    fn distance(&self, model: &CausalLm) -> Option<f64> {
        let init = self.init.as_ref()?;
        let variables = model.var_store().variables();
        Some(tch::no_grad(|| {
            init.iter()
                .map(|(name, init)| {
                    let now = variables[name].to_device(Device::Cpu).to_kind(Kind::Double);
                    (now - init.to_kind(Kind::Double))
                        .square()
                        .sum(Kind::Double)
                        .double_value(&[])
                })
                .sum()
        }))
    }
}
