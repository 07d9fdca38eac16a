//! Instruction-following difficulty (IFD, Li et al. 2023) for curation: how
//! much the query helps the model predict the answer,
//! `IFD = ppl(answer | query) / ppl(answer alone)`. Scores near or above 1
//! mean the query hardly helps (a hard or noisy example).
//!
//! Both perplexities cover the same tokens: the completion + EOS exactly as
//! [`tokenize`] gives them (the training loss's tokens). The unconditioned
//! sequence starts with the tokenizer's start token(s) (`encode("", true)`,
//! e.g. BOS), or EOS when it adds none.

use premem_core::{Example, PromptTemplate};
use premem_model::batch::{Batch, LengthLimit, TokenizedExample, per_example_nll, tokenize};
use premem_model::{CausalLm, Tokenizer};

use crate::error::{EvalError, Result};

/// IFD score of each example: exp(mean NLL of the completion + EOS given the
/// prompt − mean NLL of the same tokens given only a start token).
#[allow(clippy::too_many_arguments)]
pub fn ifd_scores(
    model: &CausalLm,
    tokenizer: &Tokenizer,
    template: &PromptTemplate,
    eos: i64,
    pad: i64,
    examples: &[&Example],
    batch_size: usize,
    max_length: usize,
) -> Result<Vec<f64>> {
    if batch_size == 0 {
        return Err(EvalError::Invalid("batch size must be at least 1".into()));
    }
    let mut start = tokenizer.encode("", true)?;
    if start.is_empty() {
        start = vec![eos];
    }
    if start.len() >= max_length {
        return Err(EvalError::Invalid(format!(
            "max_length {max_length} leaves no room after the {} start token(s)",
            start.len()
        )));
    }
    let mut scores = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch_size) {
        let mut conditioned = Vec::with_capacity(chunk.len());
        let mut unconditioned = Vec::with_capacity(chunk.len());
        for example in chunk {
            let (mut c, _) = tokenize(
                example,
                template,
                tokenizer,
                eos,
                LengthLimit::train(max_length),
            )?;
            // The unconditioned sequence must fit too: score only the
            // completion tokens both cover.
            let keep = c.loss_tokens().min(max_length - start.len());
            c.tokens.truncate(c.prompt_len + keep);
            let mut tokens = start.clone();
            tokens.extend_from_slice(&c.tokens[c.prompt_len..]);
            unconditioned.push(TokenizedExample {
                tokens,
                prompt_len: start.len(),
            });
            conditioned.push(c);
        }
        let mean_c = mean_nll(model, &conditioned, pad)?;
        let mean_u = mean_nll(model, &unconditioned, pad)?;
        scores.extend(mean_c.iter().zip(&mean_u).map(|(c, u)| (c - u).exp()));
    }
    Ok(scores)
}

/// Mean NLL per loss token of each example.
fn mean_nll(model: &CausalLm, examples: &[TokenizedExample], pad: i64) -> Result<Vec<f64>> {
    let refs: Vec<&TokenizedExample> = examples.iter().collect();
    let batch = Batch::collate(&refs, pad, model.device());
    let nll = tch::no_grad(|| per_example_nll(model, &batch))?;
    let nll = Vec::<f64>::try_from(nll.to_kind(tch::Kind::Double).to_device(tch::Device::Cpu))?;
    Ok(nll
        .into_iter()
        .zip(examples)
        .map(|(n, e)| n / e.loss_tokens() as f64)
        .collect())
}
