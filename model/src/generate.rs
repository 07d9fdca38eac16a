//! Batched generation with the KV cache: prompts are left-padded and
//! prefilled once; each prompt's cache is shared by its samples.
//!
//! Randomness comes from one generator per (prompt, sample), seeded from the
//! caller's seed and the indices, and is drawn on the host as one uniform per
//! row and step; so a row's tokens do not depend on what else is in the batch.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::error::{ModelError, Result};
use crate::model::CausalLm;

#[derive(Clone, Debug)]
pub struct SamplingParams {
    pub max_new_tokens: i64,
    /// 0 means greedy decoding.
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability
    /// reaches `top_p` (1.0 keeps all).
    pub top_p: f64,
    /// Generation of a row stops after it emits one of these.
    pub stop_token_ids: Vec<i64>,
    pub seed: u64,
}

impl SamplingParams {
    pub fn greedy(max_new_tokens: i64) -> SamplingParams {
        SamplingParams {
            max_new_tokens,
            temperature: 0.0,
            top_p: 1.0,
            stop_token_ids: vec![],
            seed: 0,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.max_new_tokens < 0 {
            return Err(ModelError::Invalid("max_new_tokens must be >= 0".into()));
        }
        if self.temperature.is_nan() || self.temperature < 0.0 {
            return Err(ModelError::Invalid(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ModelError::Invalid(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub prompt_index: usize,
    pub sample_index: usize,
    /// Generated tokens, the stop token included when one was emitted.
    pub tokens: Vec<i64>,
    /// Whether generation ended on a stop token (not on the length limit).
    pub stopped: bool,
}

/// Mixes the run seed with a row's indices into the seed of its generator.
pub fn row_seed(seed: u64, prompt_index: u64, sample_index: u64) -> u64 {
    let mut z = seed
        ^ prompt_index.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ sample_index.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    // splitmix64 finaliser
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Generates `num_samples` completions for each prompt (token ids).
/// `pad_id` fills the left padding (its value is masked out).
pub fn generate(
    model: &CausalLm,
    prompts: &[Vec<i64>],
    num_samples: usize,
    params: &SamplingParams,
    pad_id: i64,
) -> Result<Vec<Completion>> {
    params.validate()?;
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(ModelError::Invalid(format!("prompt {i} is empty")));
    }
    if prompts.is_empty() || num_samples == 0 {
        return Ok(vec![]);
    }
    tch::no_grad(|| generate_inner(model, prompts, num_samples, params, pad_id))
}

fn generate_inner(
    model: &CausalLm,
    prompts: &[Vec<i64>],
    num_samples: usize,
    params: &SamplingParams,
    pad_id: i64,
) -> Result<Vec<Completion>> {
    let device = model.device();
    let (ids, mask) = left_pad(prompts, pad_id);
    let prompt_len = ids.size()[1];
    let mut cache = model.new_cache(prompt_len + params.max_new_tokens);
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
            })
        })
        .collect();
    let mut rngs: Vec<ChaCha8Rng> = completions
        .iter()
        .map(|c| {
            ChaCha8Rng::seed_from_u64(row_seed(
                params.seed,
                c.prompt_index as u64,
                c.sample_index as u64,
            ))
        })
        .collect();
    let rows = completions.len() as i64;
    for step in 0..params.max_new_tokens {
        let next = pick_tokens(&logits, &mut rngs, params)?;
        for (completion, &token) in completions.iter_mut().zip(&next) {
            if !completion.stopped {
                completion.tokens.push(token);
                completion.stopped = params.stop_token_ids.contains(&token);
            }
        }
        if step + 1 == params.max_new_tokens || completions.iter().all(|c| c.stopped) {
            break;
        }
        let input = Tensor::from_slice(&next).view([rows, 1]).to_device(device);
        logits = model.forward(&input, None, Some(&mut cache))?.select(1, 0);
    }
    Ok(completions)
}

fn left_pad(prompts: &[Vec<i64>], pad_id: i64) -> (Tensor, Tensor) {
    let len = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(prompts.len() * len);
    let mut mask = Vec::with_capacity(prompts.len() * len);
    for prompt in prompts {
        let pad = len - prompt.len();
        ids.extend(std::iter::repeat_n(pad_id, pad).chain(prompt.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, prompt.len())));
    }
    let shape = [prompts.len() as i64, len as i64];
    (
        Tensor::from_slice(&ids).view(shape),
        Tensor::from_slice(&mask).view(shape),
    )
}

/// One token per row of `logits` `[rows, vocab]`: argmax when greedy, else a
/// draw from the temperature-scaled, top-p-truncated distribution by inverse
/// CDF with one host-drawn uniform per row.
fn pick_tokens(
    logits: &Tensor,
    rngs: &mut [ChaCha8Rng],
    params: &SamplingParams,
) -> Result<Vec<i64>> {
    let device = logits.device();
    let chosen = if params.temperature == 0.0 {
        logits.argmax(-1, false)
    } else {
        let uniforms: Vec<f32> = rngs.iter_mut().map(|rng| rng.random::<f32>()).collect();
        let uniforms = Tensor::from_slice(&uniforms).to_device(device);
        let probs = (logits.to_kind(Kind::Float) / params.temperature).softmax(-1, Kind::Float);
        let (sorted, order) = probs.sort(-1, true);
        let before = sorted.cumsum(-1, Kind::Float) - &sorted;
        // Keep a token while the mass before it is below top_p (the first always).
        let kept = sorted.where_self(&before.lt(params.top_p), &sorted.zeros_like());
        let cdf = kept.cumsum(-1, Kind::Float);
        let total = cdf.select(1, -1).unsqueeze(1);
        let target = uniforms.unsqueeze(1) * &total;
        let vocab = logits.size()[1];
        let position = target
            .searchsorted(&cdf, false, true, "right", None::<Tensor>)
            .clamp_max(vocab - 1);
        order.gather(1, &position, false).squeeze_dim(1)
    };
    Ok(Vec::<i64>::try_from(
        chosen.to_device(tch::Device::Cpu).to_kind(Kind::Int64),
    )?)
}
