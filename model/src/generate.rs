//! Batched generation with the KV cache: prompts are left-padded and
//! prefilled once; each prompt's cache is shared by its samples.
//!
//! Randomness comes from one generator per (prompt, sample), seeded from the
//! prompt's seed and the sample index, and is drawn on the host as one
//! uniform per row and step; so a row's tokens do not depend on what else is
//! in the batch (up to the floating-point noise of different batch shapes).
//! Rows that finish are dropped from the batch once enough have.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use premem_core::SamplingSpec;

use crate::error::{ModelError, Result};
use crate::model::CausalLm;

/// A prompt (token ids) and the seed of its samples' generators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    pub tokens: Vec<i64>,
    pub seed: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub prompt_index: usize,
    pub sample_index: usize,
    /// Generated tokens, the stop token included when one was emitted.
    pub tokens: Vec<i64>,
    /// Whether generation ended on a stop token or stop condition (not on
    /// the length limit).
    pub stopped: bool,
    /// Summed log-probability of `tokens` under the model's own distribution
    /// (temperature 1, no top-p): a confidence score.
    pub logprob: f64,
}

impl Completion {
    /// Mean log-probability per generated token (0 for no tokens).
    pub fn mean_logprob(&self) -> f64 {
        if self.tokens.is_empty() {
            0.0
        } else {
            self.logprob / self.tokens.len() as f64
        }
    }
}

/// Mixes a seed with indices into a well-spread 64-bit seed (splitmix64).
pub fn mix_seed(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A row stops early when this returns true for its generated tokens (for
/// example: the decoded text reached a stop string).
pub type StopCondition<'a> = &'a dyn Fn(&[i64]) -> bool;

/// How a row ends before the length limit.
#[derive(Clone, Copy, Default)]
pub struct Stop<'a> {
    /// After it emits one of these tokens (EOS, say).
    pub token_ids: &'a [i64],
    /// Or once this holds for its generated tokens.
    pub condition: Option<StopCondition<'a>>,
}

impl<'a> Stop<'a> {
    /// Stop at these tokens only.
    pub fn at_tokens(token_ids: &'a [i64]) -> Stop<'a> {
        Stop {
            token_ids,
            condition: None,
        }
    }

    fn reached(&self, token: i64, tokens: &[i64]) -> bool {
        self.token_ids.contains(&token) || self.condition.is_some_and(|c| c(tokens))
    }
}

/// Generates `sampling.samples` completions for each prompt with the
/// sampling settings (temperature, top-p, at most `max_new_tokens`; the
/// preambles and kept texts are the caller's). `pad_id` fills the left
/// padding (its value is masked out).
pub fn generate(
    model: &CausalLm,
    prompts: &[Prompt],
    sampling: &SamplingSpec,
    stop: Stop<'_>,
    pad_id: i64,
) -> Result<Vec<Completion>> {
    sampling
        .validate()
        .map_err(|e| ModelError::Invalid(format!("sampling: {e}")))?;
    if let Some(i) = prompts.iter().position(|p| p.tokens.is_empty()) {
        return Err(ModelError::Invalid(format!("prompt {i} is empty")));
    }
    if prompts.is_empty() {
        return Ok(vec![]);
    }
    tch::no_grad(|| generate_inner(model, prompts, sampling, stop, pad_id))
}

fn generate_inner(
    model: &CausalLm,
    prompts: &[Prompt],
    sampling: &SamplingSpec,
    stop: Stop<'_>,
    pad_id: i64,
) -> Result<Vec<Completion>> {
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
        .map(|c| {
            ChaCha8Rng::seed_from_u64(mix_seed(
                prompts[c.prompt_index].seed,
                c.sample_index as u64,
                0,
            ))
        })
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

/// One token per row of `logits` `[rows, vocab]`: argmax when greedy, else a
/// draw from the temperature-scaled, top-p-truncated distribution by inverse
/// CDF with one host-drawn uniform per row (from the row's own generator).
/// Returns the tokens and their log-probabilities at temperature 1.
fn pick_tokens(
    logits: &Tensor,
    active: &[usize],
    rngs: &mut [ChaCha8Rng],
    params: &SamplingSpec,
) -> Result<(Vec<i64>, Vec<f64>)> {
    let device = logits.device();
    let chosen = if params.temperature == 0.0 {
        logits.argmax(-1, false)
    } else {
        let uniforms: Vec<f32> = active
            .iter()
            .map(|&row| rngs[row].random::<f32>())
            .collect();
        let uniforms = Tensor::from_slice(&uniforms).to_device(device);
        let probs = (logits.to_kind(Kind::Float) / params.temperature).softmax(-1, Kind::Float);
        // The nucleus is found in sorted order: keep a token while the mass
        // before it is below top_p (the first always).
        let (sorted, order) = probs.sort(-1, true);
        let before = sorted.cumsum(-1, Kind::Float) - &sorted;
        let keep =
            probs
                .zeros_like()
                .scatter(1, &order, &before.lt(params.top_p).to_kind(Kind::Float));
        // The draw walks the vocabulary in id order, not sorted order: near
        // ties between probabilities (whose sort order floating-point noise
        // can swap) then cannot change which token a uniform selects.
        let cdf = (probs * &keep).cumsum(-1, Kind::Float);
        let total = cdf.select(1, -1).unsqueeze(1);
        let target = uniforms.unsqueeze(1) * &total;
        // Rounding can put the target at the very end: take the last kept
        // token then, never one outside the nucleus.
        let last_kept = keep.cumsum(-1, Kind::Float).argmax(-1, true);
        target
            .searchsorted(&cdf, false, true, "right", None::<Tensor>)
            .minimum(&last_kept)
            .squeeze_dim(1)
    };
    let logprobs = logits
        .to_kind(Kind::Float)
        .log_softmax(-1, Kind::Float)
        .gather(1, &chosen.unsqueeze(1), false)
        .squeeze_dim(1);
    // One transfer for both: token ids are exact in f64.
    let both = Tensor::stack(
        &[chosen.to_kind(Kind::Double), logprobs.to_kind(Kind::Double)],
        0,
    )
    .to_device(tch::Device::Cpu);
    let both = Vec::<f64>::try_from(both.view([-1]))?;
    let (tokens, logprobs) = both.split_at(active.len());
    Ok((
        tokens.iter().map(|&t| t as i64).collect(),
        logprobs.to_vec(),
    ))
}
