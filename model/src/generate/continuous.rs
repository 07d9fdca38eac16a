//! Continuous batching: a fixed number of rows (slots) in flight. Each prompt
//! is prefilled once, on its own (so its keys and values, its first token's
//! distribution and the NLL of its scored tokens, which the same forward
//! covers, do not depend on what else is being sampled), and copied into the
//! slots of its samples; when a row finishes, the next
//! (prompt, sample) takes its slot before the next step, so the batch stays
//! full until the work runs out; then it is compacted as it empties.
//!
//! A step is [`step::pick`] on the device, one read-back of the chosen
//! tokens (stop detection needs them), and [`CausalLm::forward_slots`] fed
//! with the chosen tokens where they are. A row's uniforms are drawn on the
//! host when it starts (its generator's first `max_new_tokens` draws, the
//! ones [`super::generate_static`] draws step by step) and sent with its
//! prompt; during decoding each slot's step counter picks its uniform on
//! the device.

use rand::Rng;
use tch::{Device, Kind, Tensor};

use premem_core::SamplingSpec;

use super::step::{self, Nucleus, Picked};
use super::{Completion, Prompt, SampleLimits, Sampled, SamplerStats, Stop, row_rng};
use crate::batch::chunk_nll;
use crate::cache::KvCache;
use crate::error::Result;
use crate::model::CausalLm;
use crate::slots::SlotCache;

pub(super) fn run(
    model: &CausalLm,
    prompts: &[Prompt],
    sampling: &SamplingSpec,
    stop: Stop<'_>,
    limits: SampleLimits,
    progress: &dyn Fn(usize),
) -> Result<Sampled> {
    if prompts.is_empty() {
        return Ok(Sampled {
            completions: vec![],
            scored_nll: vec![],
            stats: SamplerStats::default(),
        });
    }
    let mut sampler = Sampler::new(model, prompts, sampling, stop, limits, progress);
    sampler.admit()?;
    while sampler.slots.iter().any(Option::is_some) {
        sampler.step()?;
    }
    let scored_nll = sampler.read_scored()?;
    Ok(Sampled {
        completions: sampler.completions,
        scored_nll,
        stats: sampler.stats,
    })
}

/// The row a slot holds: its completion, and how many positions the slot
/// has cached (so the host knows the longest without asking the device).
struct Row {
    completion: usize,
    cached: i64,
}

/// A prefilled prompt, kept while its samples are being started.
struct Prefix {
    prompt: usize,
    /// The prompt's positions in `cache` (its scored tokens follow).
    len: i64,
    cache: KvCache,
    /// `[1, vocab]` f32: the distribution of its first token.
    logits: Tensor,
}

/// What one read-back brought: per slot, the token, its log-probability,
/// and whether its nucleus fit the candidates.
struct Host {
    tokens: Vec<i64>,
    logprobs: Vec<f64>,
    covered: Vec<bool>,
}

struct Sampler<'a> {
    model: &'a CausalLm,
    prompts: &'a [Prompt],
    sampling: &'a SamplingSpec,
    stop: Stop<'a>,
    progress: &'a dyn Fn(usize),
    /// Prompt by prompt, sample by sample.
    completions: Vec<Completion>,
    /// Per prompt: samples not finished yet.
    remaining: Vec<usize>,
    prompts_done: usize,
    /// The next completion to start.
    next: usize,
    slots: Vec<Option<Row>>,
    cache: SlotCache,
    /// `[slots, vocab]` f32: each slot's next-token logits.
    logits: Tensor,
    /// `[slots, max_new_tokens]` f32: each row's uniforms (not when greedy).
    uniforms: Option<Tensor>,
    /// `[slots]` int64: tokens each slot's row has chosen.
    steps: Tensor,
    prefix: Option<Prefix>,
    /// `[prompts]` f32: each prompt's scored NLL, kept on the device until
    /// the end (absent when no prompt has scored tokens).
    scored_nll: Option<Tensor>,
    score_chunk: Option<usize>,
    stats: SamplerStats,
}

impl<'a> Sampler<'a> {
    fn new(
        model: &'a CausalLm,
        prompts: &'a [Prompt],
        sampling: &'a SamplingSpec,
        stop: Stop<'a>,
        limits: SampleLimits,
        progress: &'a dyn Fn(usize),
    ) -> Sampler<'a> {
        let k = sampling.samples;
        let completions: Vec<Completion> = (0..prompts.len())
            .flat_map(|p| (0..k).map(move |s| empty_completion(p, s)))
            .collect();
        let slots = limits.rows.min(completions.len());
        let longest = prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
        let cache = SlotCache::new(
            model.config(),
            (model.kind(), model.device()),
            slots as i64,
            longest as i64 + sampling.max_new_tokens,
        );
        let device = model.device();
        let float = (Kind::Float, device);
        let vocab = model.config().vocab_size;
        let stats = SamplerStats {
            slots: slots as u64,
            kv_bytes: cache.bytes() as u64,
            ..SamplerStats::default()
        };
        Sampler {
            model,
            prompts,
            sampling,
            stop,
            progress,
            completions,
            remaining: vec![k; prompts.len()],
            prompts_done: 0,
            next: 0,
            slots: (0..slots).map(|_| None).collect(),
            cache,
            logits: Tensor::zeros([slots as i64, vocab], float),
            uniforms: (sampling.temperature != 0.0)
                .then(|| Tensor::zeros([slots as i64, sampling.max_new_tokens], float)),
            steps: Tensor::zeros([slots as i64], (Kind::Int64, device)),
            prefix: None,
            scored_nll: prompts
                .iter()
                .any(|p| !p.scored.is_empty())
                .then(|| Tensor::zeros([prompts.len() as i64], float)),
            score_chunk: limits.score_chunk,
            stats,
        }
    }

    /// One decoding step: pick, read back, record, forward the rows that go
    /// on, start rows in the freed slots.
    fn step(&mut self) -> Result<()> {
        self.stats.steps += 1;
        let (picked, host) = self.pick()?;
        let last = self.sampling.max_new_tokens - 1;
        let _ = self.steps.g_add_scalar_(1).clamp_max_(last);
        let mut attended = 0;
        for slot in 0..self.slots.len() {
            if let Some(cached) = self.record(slot, host.tokens[slot], host.logprobs[slot]) {
                attended = attended.max(cached);
            }
        }
        if attended > 0 {
            let logits = self
                .model
                .forward_slots(&picked.tokens, &mut self.cache, attended)?;
            self.logits = logits.to_kind(Kind::Float);
        }
        self.admit()?;
        self.compact_when_sparse();
        Ok(())
    }

    /// The step's tokens, read back; redone with the full sort when a row's
    /// nucleus did not fit the candidates.
    fn pick(&mut self) -> Result<(Picked, Host)> {
        let uniforms = self
            .uniforms
            .as_ref()
            .map(|u| u.gather(1, &self.steps.unsqueeze(1), false).squeeze_dim(1));
        let picked = step::pick(
            &self.logits,
            uniforms.as_ref(),
            self.sampling,
            Nucleus::Candidates,
        );
        let host = self.read_back(&picked)?;
        let fits = (0..self.slots.len()).all(|s| self.slots[s].is_none() || host.covered[s]);
        if fits {
            return Ok((picked, host));
        }
        self.stats.fallbacks += 1;
        let picked = step::pick(
            &self.logits,
            uniforms.as_ref(),
            self.sampling,
            Nucleus::FullSort,
        );
        let host = self.read_back(&picked)?;
        Ok((picked, host))
    }

    /// The one transfer from the device per step.
    fn read_back(&mut self, picked: &Picked) -> Result<Host> {
        self.stats.readbacks += 1;
        let packed = Vec::<f64>::try_from(picked.packed().to_device(Device::Cpu).view([-1]))?;
        let n = self.slots.len();
        Ok(Host {
            tokens: packed[..n].iter().map(|&t| t as i64).collect(),
            logprobs: packed[n..2 * n].to_vec(),
            covered: packed[2 * n..].iter().map(|&c| c != 0.0).collect(),
        })
    }

    /// Adds a slot's token to its row. Returns the keys the row's next
    /// query sees when it goes on; frees the slot when it is done.
    fn record(&mut self, slot: usize, token: i64, logprob: f64) -> Option<i64> {
        let row = self.slots[slot].as_mut()?;
        let completion = &mut self.completions[row.completion];
        completion.tokens.push(token);
        completion.logprob += logprob;
        completion.stopped = self.stop.reached(token, &completion.tokens);
        let full = completion.tokens.len() as i64 == self.sampling.max_new_tokens;
        if !completion.stopped && !full {
            row.cached += 1;
            return Some(row.cached);
        }
        let prompt = completion.prompt_index;
        self.slots[slot] = None;
        self.remaining[prompt] -= 1;
        if self.remaining[prompt] == 0 {
            self.prompts_done += 1;
            (self.progress)(self.prompts_done);
        }
        None
    }

    /// Starts the next rows in the free slots: their prompt's keys and
    /// values, first-token logits, uniforms and step counter.
    fn admit(&mut self) -> Result<()> {
        let mut started: Vec<i64> = vec![];
        let mut draws: Vec<f32> = vec![];
        for slot in 0..self.slots.len() {
            if self.next == self.completions.len() {
                break;
            }
            if self.slots[slot].is_some() {
                continue;
            }
            let completion = self.next;
            self.next += 1;
            let (p, s) = {
                let c = &self.completions[completion];
                (c.prompt_index, c.sample_index)
            };
            self.prefill(p)?;
            let prefix = self.prefix.as_ref().expect("prefilled");
            self.cache
                .load_prompt(slot as i64, &prefix.cache, prefix.len);
            self.logits.narrow(0, slot as i64, 1).copy_(&prefix.logits);
            self.slots[slot] = Some(Row {
                completion,
                cached: prefix.len,
            });
            started.push(slot as i64);
            if self.uniforms.is_some() {
                let mut rng = row_rng(&self.prompts[p], s);
                draws.extend((0..self.sampling.max_new_tokens).map(|_| rng.random::<f32>()));
            }
        }
        if !started.is_empty() {
            self.reset_rows(&started, &draws);
        }
        Ok(())
    }

    /// Step counters to 0 and the rows' uniforms, for the slots `started`.
    fn reset_rows(&mut self, started: &[i64], draws: &[f32]) {
        let device = self.model.device();
        let index = Tensor::from_slice(started).to_device(device);
        let _ = self.steps.index_fill_(0, &index, 0);
        if let Some(uniforms) = &mut self.uniforms {
            let rows = Tensor::from_slice(draws)
                .view([started.len() as i64, -1])
                .to_device(device);
            let _ = uniforms.index_copy_(0, &index, &rows);
        }
    }

    /// Makes `prompt` the prefilled one: a forward over it alone and its
    /// scored tokens, whose NLL it records.
    fn prefill(&mut self, prompt: usize) -> Result<()> {
        if self.prefix.as_ref().is_some_and(|p| p.prompt == prompt) {
            return Ok(());
        }
        self.stats.prefills += 1;
        let Prompt { tokens, scored, .. } = &self.prompts[prompt];
        let len = tokens.len() as i64;
        let all: Vec<i64> = tokens.iter().chain(scored).copied().collect();
        let ids = Tensor::from_slice(&all)
            .view([1, -1])
            .to_device(self.model.device());
        let mut cache = self.model.new_cache(all.len() as i64);
        let hidden = self
            .model
            .forward_hidden(&ids, None, Some(&mut cache))?
            .squeeze_dim(0);
        if let Some(nll) = &self.scored_nll
            && !scored.is_empty()
        {
            let labels = ids.narrow(1, len, scored.len() as i64).view([-1]);
            let rows = hidden.narrow(0, len - 1, scored.len() as i64);
            let summed = self.score(&rows, &labels);
            nll.narrow(0, prompt as i64, 1).copy_(&summed.view([1]));
        }
        let first = self.model.logits(&hidden.narrow(0, len - 1, 1));
        self.prefix = Some(Prefix {
            prompt,
            len,
            cache,
            logits: first.to_kind(Kind::Float),
        });
        Ok(())
    }

    /// The summed NLL (fp32, on the device) of `labels` under the hidden
    /// states `rows` that predict them, `score_chunk` rows at a time.
    fn score(&self, rows: &Tensor, labels: &Tensor) -> Tensor {
        let n = rows.size()[0];
        let chunk = self.score_chunk.map_or(n, |c| c as i64);
        let mut summed = Tensor::zeros([], (Kind::Float, rows.device()));
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let part = chunk_nll(
                self.model,
                &rows.narrow(0, start, len),
                &labels.narrow(0, start, len),
                tch::Reduction::Sum,
            );
            summed += part;
            start += len;
        }
        summed
    }

    /// The scored NLLs, read back once at the end.
    fn read_scored(&mut self) -> Result<Vec<Option<f64>>> {
        let Some(nll) = &self.scored_nll else {
            return Ok(vec![None; self.prompts.len()]);
        };
        self.stats.readbacks += 1;
        let nll = Vec::<f64>::try_from(nll.to_kind(Kind::Double).to_device(Device::Cpu))?;
        Ok(self
            .prompts
            .iter()
            .zip(nll)
            .map(|(p, n)| (!p.scored.is_empty()).then_some(n))
            .collect())
    }

    /// Once nothing is left to start and half the slots or more are free,
    /// keeps only the busy ones (so the tail's steps are smaller).
    fn compact_when_sparse(&mut self) {
        let busy: Vec<i64> = (0..self.slots.len() as i64)
            .filter(|&s| self.slots[s as usize].is_some())
            .collect();
        let all_started = self.next == self.completions.len();
        if !all_started || busy.is_empty() || busy.len() * 2 > self.slots.len() {
            return;
        }
        let index = Tensor::from_slice(&busy).to_device(self.model.device());
        self.cache.keep_slots(&index);
        self.logits = self.logits.index_select(0, &index);
        self.steps = self.steps.index_select(0, &index);
        self.uniforms = self.uniforms.as_ref().map(|u| u.index_select(0, &index));
        self.slots.retain(Option::is_some);
    }
}

fn empty_completion(prompt_index: usize, sample_index: usize) -> Completion {
    Completion {
        prompt_index,
        sample_index,
        tokens: vec![],
        stopped: false,
        logprob: 0.0,
    }
}
