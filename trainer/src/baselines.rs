//! The trainer's share of the baseline metrics (`premem_core::baselines`):
//! gradient variance over fixed minibatches and distance from the initial
//! weights, measured at each checkpoint.
//!
//! The probe leaves the model and the optimizer's state as they were: its
//! gradients go through the optimizer's gradient buffer, which the next step
//! overwrites whole, so a run with the probe trains bit-identically to one
//! without it.

use premem_core::baselines::CheckpointBaselines;
use premem_model::CausalLm;
use tch::{Device, Kind, Tensor};

use crate::batch::{Batch, TokenizedExample, summed_nll};
use crate::error::Result;
use crate::optim::Optimizer;

pub struct Probe {
    /// Fixed minibatches (dataset indices).
    pub minibatches: Vec<Vec<usize>>,
    pub micro_batch_size: usize,
    /// The weights at step 0, on the CPU, by variable name.
    init: Vec<(String, Tensor)>,
}

impl Probe {
    /// `init`: a model holding the step-0 weights (copied to the CPU).
    pub fn new(init: &CausalLm, minibatches: Vec<Vec<usize>>, micro_batch_size: usize) -> Probe {
        let mut init: Vec<(String, Tensor)> = init
            .var_store()
            .variables()
            .into_iter()
            .map(|(name, t)| (name, t.detach().to_device(Device::Cpu).copy()))
            .collect();
        init.sort_by(|a, b| a.0.cmp(&b.0));
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
        let mut sum: Option<Tensor> = None;
        let (mut squares, mut norms) = (0.0, 0.0);
        for minibatch in &self.minibatches {
            let tokens: usize = minibatch.iter().map(|&i| examples[i].loss_tokens()).sum();
            let scale = tokens.max(1) as f64;
            for micro in minibatch.chunks(self.micro_batch_size) {
                let refs: Vec<&TokenizedExample> = micro.iter().map(|&i| &examples[i]).collect();
                let batch = Batch::collate(&refs, pad, device);
                (summed_nll(model, &batch)? / scale).backward();
            }
            // The gradient of this minibatch's mean token loss, flat fp32.
            optimizer.gather_grads();
            let g = optimizer.grads_mut().shallow_clone();
            let square = g.square().sum(Kind::Double).double_value(&[]);
            squares += square;
            norms += square.sqrt();
            tch::no_grad(|| match &mut sum {
                Some(s) => *s += &g,
                None => sum = Some(g.copy()),
            });
        }
        let b = self.minibatches.len();
        let grad_variance = match (&sum, b) {
            (Some(sum), 2..) => {
                let sum_square = sum.square().sum(Kind::Double).double_value(&[]);
                ((squares - sum_square / b as f64) / (b - 1) as f64).max(0.0)
            }
            _ => f64::NAN,
        };
        drop(sum);
        let distance_from_init = self.distance(model);
        Ok(CheckpointBaselines {
            step,
            grad_variance,
            grad_norm_mean: if b > 0 { norms / b as f64 } else { f64::NAN },
            grad_minibatches: b,
            grad_minibatch_size: self.minibatches.first().map_or(0, Vec::len),
            distance_from_init,
        })
    }

    /// `Σ (θ − θ₀)²` in double precision.
    fn distance(&self, model: &CausalLm) -> f64 {
        let variables = model.var_store().variables();
        tch::no_grad(|| {
            self.init
                .iter()
                .map(|(name, init)| {
                    let now = variables[name].to_device(Device::Cpu).to_kind(Kind::Double);
                    (now - init.to_kind(Kind::Double))
                        .square()
                        .sum(Kind::Double)
                        .double_value(&[])
                })
                .sum()
        })
    }
}
