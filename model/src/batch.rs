//! From examples to training tensors: prompt and completion are tokenized
//! separately (the sampler sees exactly the prompt tokens), EOS closes the
//! completion, and the loss covers the completion tokens only.

use crate::Tokenizer;
use premem_core::{Example, PromptTemplate};
use tch::{Device, Kind, Tensor};

/// The label of positions outside the loss.
pub const IGNORE: i64 = -100;

/// One tokenized example: `tokens[..prompt_len]` is the prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenizedExample {
    pub tokens: Vec<i64>,
    pub prompt_len: usize,
}

impl TokenizedExample {
    /// Tokens the loss covers (completion + EOS).
    pub fn loss_tokens(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
}

/// The most tokens an example may have, and the setting that says so
/// (named in errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LengthLimit {
    pub tokens: usize,
    pub setting: &'static str,
}

impl LengthLimit {
    /// A job's `train.max_length` (training, and scoring a job's data).
    pub fn train(tokens: usize) -> LengthLimit {
        LengthLimit {
            tokens,
            setting: "train.max_length",
        }
    }

    /// The model's context window (evaluation: no setting of its own).
    pub fn context(tokens: usize) -> LengthLimit {
        LengthLimit {
            tokens,
            setting: "the model's context (max_position_embeddings)",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("example '{id}': the prompt alone has {tokens} tokens, {setting} is {max_length}")]
    PromptTooLong {
        id: String,
        tokens: usize,
        max_length: usize,
        setting: &'static str,
    },
    #[error("example '{id}': the prompt template renders to no tokens")]
    EmptyPrompt { id: String },
    #[error(transparent)]
    Model(#[from] crate::ModelError),
}

/// Tokenizes an example; completions longer than `limit` allows are cut
/// (the caller counts them). Returns the example and whether it was cut.
pub fn tokenize(
    example: &Example,
    template: &PromptTemplate,
    tokenizer: &Tokenizer,
    eos: i64,
    limit: LengthLimit,
) -> Result<(TokenizedExample, bool), BatchError> {
    let max_length = limit.tokens;
    let mut tokens = tokenizer.encode(&template.render_prompt(example), true)?;
    let prompt_len = tokens.len();
    if prompt_len == 0 {
        return Err(BatchError::EmptyPrompt {
            id: example.id.clone(),
        });
    }
    if prompt_len >= max_length {
        return Err(BatchError::PromptTooLong {
            id: example.id.clone(),
            tokens: prompt_len,
            max_length,
            setting: limit.setting,
        });
    }
    tokens.extend(tokenizer.encode(&template.render_completion(example), false)?);
    tokens.push(eos);
    let truncated = tokens.len() > max_length;
    tokens.truncate(max_length);
    Ok((TokenizedExample { tokens, prompt_len }, truncated))
}

/// A right-padded micro-batch. Position `t` predicts `labels[t]` (the token
/// at `t + 1`); `loss_mask[t]` is 1 where that token is part of the
/// completion. Labels outside the mask are -100 (ignored by the loss), so no
/// masked position can turn the sum into NaN.
pub struct Batch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub labels: Tensor,
    pub loss_mask: Tensor,
    /// Tokens in the batch (padding excluded).
    pub tokens: usize,
    /// Positions the loss covers.
    pub loss_tokens: usize,
}

impl Batch {
    pub fn collate(examples: &[&TokenizedExample], pad: i64, device: Device) -> Batch {
        let rows = examples.len();
        let width = examples.iter().map(|e| e.tokens.len()).max().unwrap_or(0);
        let mut ids = vec![pad; rows * width];
        let mut mask = vec![0i64; rows * width];
        let mut labels = vec![IGNORE; rows * width];
        let mut loss_mask = vec![0f32; rows * width];
        for (r, e) in examples.iter().enumerate() {
            let row = r * width;
            for (t, &token) in e.tokens.iter().enumerate() {
                ids[row + t] = token;
                mask[row + t] = 1;
                if t + 1 < e.tokens.len() && t + 1 >= e.prompt_len {
                    labels[row + t] = e.tokens[t + 1];
                    loss_mask[row + t] = 1.0;
                }
            }
        }
        let shape = [rows as i64, width as i64];
        let to = |t: Tensor| t.view(shape).to_device(device);
        Batch {
            input_ids: to(Tensor::from_slice(&ids)),
            attention_mask: to(Tensor::from_slice(&mask)),
            labels: to(Tensor::from_slice(&labels)),
            loss_mask: to(Tensor::from_slice(&loss_mask)),
            tokens: examples.iter().map(|e| e.tokens.len()).sum(),
            loss_tokens: examples.iter().map(|e| e.loss_tokens()).sum(),
        }
    }
}

/// Negative log-likelihood of the masked labels per example `[batch]`
/// (fp32, carries gradients).
pub fn per_example_nll(model: &crate::CausalLm, batch: &Batch) -> crate::Result<Tensor> {
    let logits = model.forward(&batch.input_ids, Some(&batch.attention_mask), None)?;
    Ok(nll_of_logits(&logits, batch))
}

/// [`per_example_nll`] for scoring (no graph), with the LM head projecting
/// and scoring `chunk` completion tokens at a time, so the logits of the
/// whole batch never exist: peak one chunk's logits. An example's NLL is
/// its tokens' NLLs added in position order, which may differ in its last
/// bits from the whole-batch sum.
pub fn per_example_nll_chunked(
    model: &crate::CausalLm,
    batch: &Batch,
    chunk: usize,
) -> crate::Result<Tensor> {
    let hidden = model.forward_hidden(&batch.input_ids, Some(&batch.attention_mask), None)?;
    let (rows, width, dim) = hidden.size3()?;
    let flat = hidden.view([-1, dim]);
    let device = flat.device();
    let (positions, labels) = scored_positions(batch, device);
    let owners = positions.floor_divide_scalar(width);
    let mut nll = Tensor::zeros([rows], (Kind::Float, device));
    let n = positions.size()[0];
    let mut start = 0;
    while start < n {
        let len = (chunk as i64).min(n - start);
        let rows = flat.index_select(0, &positions.narrow(0, start, len));
        let part = chunk_nll(
            model,
            &rows,
            &labels.narrow(0, start, len),
            tch::Reduction::None,
        );
        let _ = nll.index_add_(0, &owners.narrow(0, start, len), &part);
        start += len;
    }
    Ok(nll)
}

/// Per-example NLL `[batch]` of `batch`'s labels under `logits` `[batch,
/// seq, vocab]`, in fp32 (no copy when the logits are fp32 already). The
/// loss mask decides what counts; it multiplies the per-position NLL
/// `[batch, seq]`, never a vocabulary-sized tensor.
pub fn nll_of_logits(logits: &Tensor, batch: &Batch) -> Tensor {
    let (rows, width, vocab) = logits.size3().expect("logits are [batch, seq, vocab]");
    let nll = logits
        .to_kind(Kind::Float)
        .view([-1, vocab])
        .cross_entropy_loss::<Tensor>(
            &batch.labels.view([-1]),
            None,
            tch::Reduction::None,
            IGNORE,
            0.0,
        );
    (nll.view([rows, width]) * &batch.loss_mask).sum_dim_intlist(1, false, Kind::Float)
}

/// How a training step computes a micro-batch's loss and its gradient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossOptions {
    /// Keep only each decoder layer's input and recompute the layer in
    /// backward ([`crate::model::Recompute`]).
    pub checkpoint_layers: bool,
    /// Project and score the completion tokens this many at a time, each
    /// chunk's backward run at once, so no fp32 logits of the whole
    /// micro-batch exist; `None`: the whole micro-batch at once.
    pub chunk_tokens: Option<usize>,
}

impl LossOptions {
    /// The options a job's `[train]` section asks for.
    pub fn of(train: &premem_core::spec::TrainSpec) -> LossOptions {
        LossOptions {
            checkpoint_layers: train.activation_checkpointing
                == premem_core::spec::ActivationCheckpointing::Layers,
            chunk_tokens: train.loss_chunk_tokens,
        }
    }
}

/// Where [`nll_backward`] is, for a caller timing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossPhase {
    /// The forward done: the logits (with a chunked loss: the final hidden
    /// states, the LM head being part of the loss).
    Forward,
    /// The loss computed (with a chunked loss: and back-propagated to the
    /// final hidden states).
    Loss,
    /// Backward done: every parameter's gradient holds this micro-batch.
    Backward,
}

/// Forward and backward of `summed NLL / scale` over `batch` under
/// `options`; returns the summed NLL (fp32, detached). With default options
/// this is exactly `(summed_nll(model, batch) / scale).backward()`.
pub fn nll_backward(
    model: &crate::CausalLm,
    batch: &Batch,
    scale: f64,
    options: LossOptions,
    mut phase: impl FnMut(LossPhase),
) -> crate::Result<Tensor> {
    let mask = Some(&batch.attention_mask);
    let (hidden, recompute) = if options.checkpoint_layers {
        let recompute = model.forward_checkpointed(&batch.input_ids, mask)?;
        (recompute.hidden.shallow_clone(), Some(recompute))
    } else {
        (model.forward_hidden(&batch.input_ids, mask, None)?, None)
    };
    let nll = match options.chunk_tokens {
        Some(chunk) => {
            phase(LossPhase::Forward);
            let nll = chunked_nll_backward(model, &hidden, batch, chunk, scale);
            phase(LossPhase::Loss);
            nll
        }
        None => {
            let logits = model.logits(&hidden);
            phase(LossPhase::Forward);
            let nll = nll_of_logits(&logits, batch).sum(Kind::Float);
            drop(logits);
            phase(LossPhase::Loss);
            (&nll / scale).backward();
            nll.detach()
        }
    };
    drop(hidden);
    if let Some(recompute) = recompute {
        recompute.backward();
    }
    phase(LossPhase::Backward);
    Ok(nll)
}

/// The summed NLL of the completion tokens of `batch` under the LM head over
/// `hidden`, `chunk` tokens at a time, with the backward of `NLL / scale`
/// run per chunk into a detached copy of the hidden states and then through
/// `hidden`'s graph in one go. Peak: one chunk's logits.
fn chunked_nll_backward(
    model: &crate::CausalLm,
    hidden: &Tensor,
    batch: &Batch,
    chunk: usize,
    scale: f64,
) -> Tensor {
    let width = hidden
        .size()
        .last()
        .copied()
        .expect("hidden is [batch, seq, hidden]");
    let flat = hidden.detach().view([-1, width]);
    let (positions, labels) = scored_positions(batch, flat.device());
    let selected = flat.index_select(0, &positions);
    let grad_selected = selected.zeros_like();
    let mut nll = Tensor::zeros([], (Kind::Float, flat.device()));
    let n = positions.size()[0];
    let mut start = 0;
    while start < n {
        let len = (chunk as i64).min(n - start);
        let rows = selected
            .narrow(0, start, len)
            .detach()
            .set_requires_grad(true);
        let part = chunk_nll(
            model,
            &rows,
            &labels.narrow(0, start, len),
            tch::Reduction::Sum,
        );
        (&part / scale).backward();
        grad_selected.narrow(0, start, len).copy_(&rows.grad());
        nll += part.detach();
        start += len;
    }
    if n > 0 {
        let grad = flat.zeros_like().index_copy(0, &positions, &grad_selected);
        (hidden * grad.view_as(hidden)).sum(Kind::Float).backward();
    }
    nll
}

/// The flat positions the loss covers, on `device`, and their labels.
fn scored_positions(batch: &Batch, device: Device) -> (Tensor, Tensor) {
    let positions = batch
        .loss_mask
        .view([-1])
        .nonzero()
        .squeeze_dim(1)
        .to_device(device);
    let labels = batch
        .labels
        .view([-1])
        .to_device(device)
        .index_select(0, &positions);
    (positions, labels)
}

/// The fp32 NLL of `labels` under the LM head over the hidden states
/// `rows` (`[n, hidden]`), reduced as `reduction` says.
pub(crate) fn chunk_nll(
    model: &crate::CausalLm,
    rows: &Tensor,
    labels: &Tensor,
    reduction: tch::Reduction,
) -> Tensor {
    let logits = model.logits(rows).to_kind(Kind::Float);
    logits.cross_entropy_loss::<Tensor>(labels, None, reduction, IGNORE, 0.0)
}

/// Summed negative log-likelihood of the masked labels (a scalar that
/// carries gradients), computed in fp32.
pub fn summed_nll(model: &crate::CausalLm, batch: &Batch) -> crate::Result<Tensor> {
    Ok(per_example_nll(model, batch)?.sum(Kind::Float))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collate_shifts_labels_and_masks_the_prompt() {
        let a = TokenizedExample {
            tokens: vec![5, 6, 7, 8, 1],
            prompt_len: 2,
        };
        let b = TokenizedExample {
            tokens: vec![9, 4, 1],
            prompt_len: 1,
        };
        let batch = Batch::collate(&[&a, &b], 0, Device::Cpu);
        assert_eq!(batch.input_ids.size(), [2, 5]);
        let labels = Vec::<i64>::try_from(batch.labels.view([-1])).unwrap();
        let mask = Vec::<f32>::try_from(batch.loss_mask.view([-1])).unwrap();
        // Row a: positions 1.. predict 7, 8, 1 (completion); position 0 would predict 6 (prompt).
        assert_eq!(&labels[..5], &[IGNORE, 7, 8, 1, IGNORE]);
        assert_eq!(&mask[..5], &[0.0, 1.0, 1.0, 1.0, 0.0]);
        // Row b: position 0 predicts 4, position 1 predicts EOS; padding masked.
        assert_eq!(&labels[5..], &[4, 1, IGNORE, IGNORE, IGNORE]);
        assert_eq!(&mask[5..], &[1.0, 1.0, 0.0, 0.0, 0.0]);
        assert_eq!((batch.tokens, batch.loss_tokens), (8, 5));
        assert_eq!(mask.iter().sum::<f32>() as usize, batch.loss_tokens);
    }
}
