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

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(
        "example '{id}': the prompt alone has {tokens} tokens, train.max_length is {max_length}"
    )]
    PromptTooLong {
        id: String,
        tokens: usize,
        max_length: usize,
    },
    #[error("example '{id}': the prompt template renders to no tokens")]
    EmptyPrompt { id: String },
    #[error(transparent)]
    Model(#[from] crate::ModelError),
}

/// Tokenizes an example; completions longer than `max_length` allows are cut
/// (the caller counts them). Returns the example and whether it was cut.
pub fn tokenize(
    example: &Example,
    template: &PromptTemplate,
    tokenizer: &Tokenizer,
    eos: i64,
    max_length: usize,
) -> Result<(TokenizedExample, bool), BatchError> {
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
