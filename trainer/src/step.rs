//! One optimizer step, the unit the run loop, the distributed runtime and the
//! benchmark share.
//!
//! For each micro-batch of this rank's share of the global batch: forward and
//! backward of (summed NLL of its completion tokens / completion tokens of the
//! whole global batch), so gradients add up to the global mean whatever the
//! split. Then the gradients are gathered into the optimizer's flat buffer,
//! all-reduced across ranks, clipped, and applied.

use premem_model::CausalLm;
use tch::{Kind, Tensor};

use crate::collective::Collective;
use crate::error::Result;
use crate::optim::Optimizer;
use premem_model::batch::{Batch, summed_nll};

#[derive(Clone, Copy, Debug)]
pub struct StepOutput {
    /// Mean NLL per completion token over the global batch.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens this rank processed (padding excluded).
    pub tokens: usize,
}

pub struct StepSettings {
    /// Completion tokens in the global batch (all ranks).
    pub global_loss_tokens: usize,
    pub lr: f64,
    pub max_grad_norm: Option<f64>,
}

pub fn train_step(
    model: &CausalLm,
    optimizer: &mut Optimizer,
    micro_batches: impl IntoIterator<Item = Batch>,
    settings: &StepSettings,
    collective: &mut dyn Collective,
) -> Result<StepOutput> {
    let scale = settings.global_loss_tokens.max(1) as f64;
    let mut loss_sum = Tensor::zeros([1], (Kind::Float, model.device()));
    let mut tokens = 0usize;
    for batch in micro_batches {
        let nll = summed_nll(model, &batch)?;
        (&nll / scale).backward();
        loss_sum += nll.detach();
        tokens += batch.tokens;
    }
    optimizer.gather_grads();
    collective.all_reduce_sum(optimizer.grads_mut())?;
    collective.all_reduce_sum(&mut loss_sum)?;
    let grad_norm = optimizer.clip_grad_norm(settings.max_grad_norm);
    optimizer.step(settings.lr);
    Ok(StepOutput {
        loss: loss_sum.double_value(&[0]) / scale,
        grad_norm,
        tokens,
    })
}
