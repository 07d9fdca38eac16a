//! Sampling with the KV cache. [`sample`] (and [`generate`]) batch
//! continuously ([`continuous`]): a fixed number of rows in flight, each
//! prompt prefilled once and loaded into the slots of its K samples, a
//! finished row's slot taken by the next (prompt, sample) at once, and a
//! decoding step that reads back only the chosen tokens ([`step`]).
//! [`generate_static`] is the static-batch loop it replaced (left-padded
//! prompts, finished rows kept until a quarter of the batch is done), kept as
//! the reference of `premem bench evaluate` and of the tests.
//!
//! Randomness comes from one generator per (prompt, sample), seeded from the
//! prompt's seed and the sample index: the uniform of a row's `i`-th token is
//! its generator's `i`-th draw, in both samplers. So a row's tokens do not
//! depend on what else is in the batch or on the sampler (up to the
//! floating-point noise of different batch shapes).

mod continuous;
mod static_batch;
mod step;

use premem_core::SamplingSpec;

use crate::error::{ModelError, Result};
use crate::model::CausalLm;

/// A prompt (token ids) and the seed of its samples' generators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    pub tokens: Vec<i64>,
    pub seed: u64,
    /// Tokens after the prompt (a target trace) whose negative
    /// log-likelihood [`sample`] scores in the prompt's own prefill,
    /// teacher-forced: the prompt's keys and values come out of the same
    /// forward. Empty: nothing scored. Samples never see them.
    pub scored: Vec<i64>,
}

impl Prompt {
    /// A prompt with nothing scored.
    pub fn new(tokens: Vec<i64>, seed: u64) -> Prompt {
        Prompt {
            tokens,
            seed,
            scored: vec![],
        }
    }
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
/// preambles and kept texts are the caller's), every row in flight at once.
pub fn generate(
    model: &CausalLm,
    prompts: &[Prompt],
    sampling: &SamplingSpec,
    stop: Stop<'_>,
) -> Result<Vec<Completion>> {
    let limits = SampleLimits::rows((prompts.len() * sampling.samples).max(1));
    Ok(sample(model, prompts, sampling, stop, limits, &|_| {})?.completions)
}

/// How much [`sample`] holds at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleLimits {
    /// Rows (one sample of one prompt each) in flight.
    pub rows: usize,
    /// Scored tokens whose logits exist at once (absent: all of a prompt's).
    pub score_chunk: Option<usize>,
}

impl SampleLimits {
    /// `rows` in flight, each prompt's scored tokens projected at once.
    pub fn rows(rows: usize) -> SampleLimits {
        SampleLimits {
            rows,
            score_chunk: None,
        }
    }
}

/// What [`sample`] returns: the completions, prompt by prompt and sample by
/// sample, each prompt's scored NLL, and how the work went.
#[derive(Debug)]
pub struct Sampled {
    pub completions: Vec<Completion>,
    /// Per prompt: the summed NLL (fp32) of its [`Prompt::scored`] tokens,
    /// `None` when it has none.
    pub scored_nll: Vec<Option<f64>>,
    pub stats: SamplerStats,
}

/// Counts of one [`sample`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SamplerStats {
    /// Decoding steps (each picks one token for every row in flight).
    pub steps: u64,
    /// Reads from the device: one per step, plus one for each step whose
    /// nucleus did not fit the candidate set (`fallbacks`), plus one at the
    /// end for the scored NLLs when a prompt has scored tokens.
    pub readbacks: u64,
    /// Steps redone with the full-vocabulary sort.
    pub fallbacks: u64,
    /// Prompt prefills (one per prompt).
    pub prefills: u64,
    /// Rows (slots) in flight at the start.
    pub slots: u64,
    /// Bytes of the slots' keys and values at the start.
    pub kv_bytes: u64,
}

/// [`generate`] within `limits`, scoring each prompt's [`Prompt::scored`]
/// tokens in its prefill; `progress` is told how many prompts have all
/// their samples.
pub fn sample(
    model: &CausalLm,
    prompts: &[Prompt],
    sampling: &SamplingSpec,
    stop: Stop<'_>,
    limits: SampleLimits,
    progress: &dyn Fn(usize),
) -> Result<Sampled> {
    check(prompts, sampling)?;
    if limits.rows == 0 {
        return Err(ModelError::Invalid(
            "rows in flight must be at least 1".into(),
        ));
    }
    if limits.score_chunk == Some(0) {
        return Err(ModelError::Invalid(
            "scored tokens at once must be at least 1".into(),
        ));
    }
    tch::no_grad(|| continuous::run(model, prompts, sampling, stop, limits, progress))
}

/// The static-batch sampler [`sample`] replaced: all prompts left-padded
/// into one batch, finished rows dropped once a quarter of it is done.
/// `pad_id` fills the left padding (its value is masked out).
pub fn generate_static(
    model: &CausalLm,
    prompts: &[Prompt],
    sampling: &SamplingSpec,
    stop: Stop<'_>,
    pad_id: i64,
) -> Result<Vec<Completion>> {
    check(prompts, sampling)?;
    tch::no_grad(|| static_batch::run(model, prompts, sampling, stop, pad_id))
}

fn check(prompts: &[Prompt], sampling: &SamplingSpec) -> Result<()> {
    sampling
        .validate()
        .map_err(|e| ModelError::Invalid(format!("sampling: {e}")))?;
    if let Some(i) = prompts.iter().position(|p| p.tokens.is_empty()) {
        return Err(ModelError::Invalid(format!("prompt {i} is empty")));
    }
    Ok(())
}

/// The generator of sample `sample_index` of a prompt.
fn row_rng(prompt: &Prompt, sample_index: usize) -> rand_chacha::ChaCha8Rng {
    rand::SeedableRng::seed_from_u64(mix_seed(prompt.seed, sample_index as u64, 0))
}
