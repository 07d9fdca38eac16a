//! The static-batch sampler (before issue 21): prompts left-padded and
//! prefilled once, each prompt's cache repeated for its samples, the batch
//! decoded until every row is done; rows that finish keep their slot until a
//! quarter of the batch has, then are dropped together. Kept as the
//! reference run of `premem bench evaluate` and of the tests.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use premem_core::SamplingSpec;

use super::step::{self, Nucleus};
use super::{Completion, Prompt, Stop, row_rng};
use crate::error::Result;
use crate::model::CausalLm;

pub(super) fn run(
    model: &CausalLm,
    prompts: &[Prompt],
    sampling: &SamplingSpec,
    stop: Stop<'_>,
    pad_id: i64,
) -> Result<Vec<Completion>> {
    if prompts.is_empty() {
        return Ok(vec![]);
    }
    let num_samples = sampling.samples;
    let device = model.device();
    let (ids, mask) = left_pad(prompts, pad_id);
    let prompt_len = ids.size()[1];
    let mut cache = model.new_cache(prompt_len + sampling.max_new_tokens);
    let logits = model.forward(
        &ids.to_device(device),
        Some(&mask.to_device(device)),
        Some(&mut cache),
    )?;
    let mut logits = logits.select(1, prompt_len - 1);
    if num_samples > 1 {
        let rows = Tensor::arange(prompts.len() as i64, (Kind::Int64, device))
            .repeat_interleave_self_int(num_samples as i64, 0, None);
        cache.select_rows(&rows);
        logits = logits.index_select(0, &rows);
    }

    let mut completions: Vec<Completion> = (0..prompts.len())
        .flat_map(|p| {
            (0..num_samples).map(move |s| Completion {
                prompt_index: p,
                sample_index: s,
                tokens: vec![],
                stopped: false,
                logprob: 0.0,
            })
        })
        .collect();
    let mut rngs: Vec<ChaCha8Rng> = completions
        .iter()
        .map(|c| row_rng(&prompts[c.prompt_index], c.sample_index))
        .collect();
    // Completion index of each row of the batch.
    let mut active: Vec<usize> = (0..completions.len()).collect();
    for step in 0..sampling.max_new_tokens {
        let (next, logprobs) = pick_tokens(&logits, &active, &mut rngs, sampling)?;
        for ((&row, &token), &logprob) in active.iter().zip(&next).zip(&logprobs) {
            let completion = &mut completions[row];
            // Finished rows stay in the batch until enough of them are
            // dropped together; what they draw meanwhile is discarded.
            if completion.stopped {
                continue;
            }
            completion.tokens.push(token);
            completion.logprob += logprob;
            completion.stopped = stop.reached(token, &completion.tokens);
        }
        let finished = active.iter().filter(|&&r| completions[r].stopped).count();
        if finished == active.len() || step + 1 == sampling.max_new_tokens {
            break;
        }
        let mut input: Vec<i64> = next;
        // Drop finished rows once a quarter of the batch is done with.
        if finished > 0 && finished * 4 >= active.len() {
            let keep: Vec<i64> = (0..active.len() as i64)
                .filter(|&i| !completions[active[i as usize]].stopped)
                .collect();
            let index = Tensor::from_slice(&keep).to_device(device);
            cache.select_rows(&index);
            input = keep.iter().map(|&i| input[i as usize]).collect();
            active = keep.iter().map(|&i| active[i as usize]).collect();
        }
        let input = Tensor::from_slice(&input)
            .view([active.len() as i64, 1])
            .to_device(device);
        logits = model.forward(&input, None, Some(&mut cache))?.select(1, 0);
    }
    Ok(completions)
}

fn left_pad(prompts: &[Prompt], pad_id: i64) -> (Tensor, Tensor) {
    let len = prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(prompts.len() * len);
    let mut mask = Vec::with_capacity(prompts.len() * len);
    for prompt in prompts {
        let pad = len - prompt.tokens.len();
        ids.extend(std::iter::repeat_n(pad_id, pad).chain(prompt.tokens.iter().copied()));
        mask.extend(
            std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, prompt.tokens.len())),
        );
    }
    let shape = [prompts.len() as i64, len as i64];
    (
        Tensor::from_slice(&ids).view(shape),
        Tensor::from_slice(&mask).view(shape),
    )
}

/// One token per row of `logits` `[rows, vocab]` ([`step::pick`] over the
/// whole vocabulary), with one host-drawn uniform per row from the row's own
/// generator, read back at once: the tokens and their log-probabilities at
/// temperature 1.
fn pick_tokens(
    logits: &Tensor,
    active: &[usize],
    rngs: &mut [ChaCha8Rng],
    params: &SamplingSpec,
) -> Result<(Vec<i64>, Vec<f64>)> {
    let uniforms = (params.temperature != 0.0).then(|| {
        let uniforms: Vec<f32> = active
            .iter()
            .map(|&row| rngs[row].random::<f32>())
            .collect();
        Tensor::from_slice(&uniforms).to_device(logits.device())
    });
    let picked = step::pick(logits, uniforms.as_ref(), params, Nucleus::FullSort);
    let both = picked.packed().narrow(0, 0, 2).to_device(tch::Device::Cpu);
    let both = Vec::<f64>::try_from(both.view([-1]))?;
    let (tokens, logprobs) = both.split_at(active.len());
    Ok((
        tokens.iter().map(|&t| t as i64).collect(),
        logprobs.to_vec(),
    ))
}
