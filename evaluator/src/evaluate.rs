//! The per-task core: for each example, the perplexity of its target trace
//! (teacher-forced, completion tokens + EOS, the same tokens the training
//! loss covers; scored in the forward that prefills the example's prompt for
//! sampling, so the prompt is run once) and K samples checked against its
//! answer, optionally with the answer started by a preamble (paper §5.1).
//!
//! Sampling seeds derive from (run seed, checkpoint step, example id,
//! preamble, sample index), so a result depends on none of: batch size, task
//! split, which evaluator ran it.

use premem_core::data::answer::{AnswerStyle, is_correct};
pub use premem_core::data::results::ExampleResult;
use premem_core::{Example, PromptTemplate, SamplingSpec, Split};
use premem_model::batch::{
    Batch, LengthLimit, TokenizedExample, per_example_nll, per_example_nll_chunked, tokenize,
};
use premem_model::{
    CausalLm, Completion, Prompt, SampleLimits, Stop, Tokenizer, generate_static, mix_seed, sample,
};
use sha2::{Digest, Sha256};

use crate::error::{EvalError, Result};

/// One evaluation: which split and checkpoint (both part of every sampling
/// seed, with the run seed), how to sample, and how to batch.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalSettings {
    pub split: Split,
    /// The checkpoint's training step (part of every sampling seed).
    pub checkpoint_step: u64,
    /// The run seed.
    pub seed: u64,
    /// K, temperature, top-p, new tokens, the preambles to sample with
    /// (results come for no preamble and for each of these), kept texts.
    pub sampling: SamplingSpec,
    /// Prompts in flight (each with its K samples): the sampler keeps
    /// `batch_size × K` rows going (the static one batches this many
    /// prompts, and targets for their perplexity).
    pub batch_size: usize,
    /// Longer prompt + target sequences are cut for the perplexity.
    pub max_length: usize,
    /// Score the targets this many tokens at a time, so the perplexity
    /// pass never holds the logits of a whole batch (the job's
    /// `train.loss_chunk_tokens`; absent: all at once).
    pub loss_chunk_tokens: Option<usize>,
    /// Which sampler runs (the static one, with its own perplexity pass,
    /// only for `premem bench evaluate`'s before figure).
    pub sampler: SamplerKind,
}

/// The sampler an evaluation runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SamplerKind {
    /// Continuous batching ([`premem_model::sample`]), the targets scored in
    /// the prompts' prefills.
    #[default]
    Continuous,
    /// The static-batch loop it replaced ([`premem_model::generate_static`]),
    /// one batch per `batch_size` prompts, after a teacher-forced forward
    /// per `batch_size` targets.
    Static,
}

impl EvalSettings {
    /// The paper authors' recipe ([`SamplingSpec::default`]) in batches of 16.
    pub fn paper(split: Split, checkpoint_step: u64) -> EvalSettings {
        EvalSettings {
            split,
            checkpoint_step,
            seed: 0,
            sampling: SamplingSpec::default(),
            batch_size: 16,
            max_length: 4096,
            loss_chunk_tokens: None,
            sampler: SamplerKind::Continuous,
        }
    }

    fn validate(&self) -> Result<()> {
        self.sampling
            .validate()
            .map_err(|e| EvalError::Invalid(e.to_string()))?;
        if self.batch_size == 0 {
            return Err(EvalError::Invalid("batch size must be at least 1".into()));
        }
        Ok(())
    }
}

/// What an evaluation needs besides the examples: the model, how to turn an
/// example into tokens, and how to check an answer.
pub struct Evaluator<'a> {
    pub model: &'a CausalLm,
    pub tokenizer: &'a Tokenizer,
    pub template: &'a PromptTemplate,
    pub style: AnswerStyle,
    pub eos: i64,
    pub pad: i64,
}

/// One sampling pass over a task's examples: its index (part of the
/// seeds), its preamble, and the targets it scores (the pass without a
/// preamble, under the continuous sampler).
struct Pass<'a> {
    index: usize,
    preamble: &'a str,
    targets: Option<&'a [TokenizedExample]>,
}

/// A pass's samples, example by example, and the targets' summed NLLs when
/// it scored them.
type PassOutput = (Vec<Vec<Sample>>, Option<Vec<f64>>);

/// One sample: its answer text (cut at the stop string), generated tokens,
/// and mean log-probability per token.
#[derive(Clone)]
struct Sample {
    text: String,
    tokens: usize,
    confidence: f64,
}

/// The seed of an example's samples under a preamble.
pub fn prompt_seed(run_seed: u64, checkpoint_step: u64, example_id: &str, preamble: usize) -> u64 {
    let id = u64::from_le_bytes(
        Sha256::digest(example_id.as_bytes())[..8]
            .try_into()
            .expect("8 bytes"),
    );
    mix_seed(run_seed ^ id, checkpoint_step, preamble as u64)
}

impl Evaluator<'_> {
    /// Evaluates `examples`; rows come example by example, no preamble first.
    /// `progress` is told how many examples are done.
    pub fn evaluate(
        &self,
        examples: &[&Example],
        settings: &EvalSettings,
        progress: &dyn Fn(usize),
    ) -> Result<Vec<ExampleResult>> {
        settings.validate()?;
        let preambles = &settings.sampling.preambles;
        let targets = self.targets(examples, settings)?;
        let mut scored = None;
        // Progress counts examples done with every preamble.
        let passes = 1 + preambles.len();
        let mut per_preamble = Vec::with_capacity(passes);
        for (p, preamble) in with_none(preambles).enumerate() {
            let pass_progress = |done: usize| progress((p * examples.len() + done) / passes);
            // The pass without a preamble prefills exactly the targets'
            // prompts: it scores them.
            let fold = p == 0 && settings.sampler == SamplerKind::Continuous;
            let pass = Pass {
                index: p,
                preamble,
                targets: fold.then_some(&targets[..]),
            };
            let (samples, nll) = self.sample(examples, settings, &pass, &pass_progress)?;
            scored = scored.or(nll);
            per_preamble.push(samples);
        }
        let nll = match scored {
            Some(nll) => nll,
            None => self.target_nll(&targets, settings)?,
        };
        let mut rows = Vec::with_capacity(examples.len() * passes);
        for (i, example) in examples.iter().enumerate() {
            let tokens = targets[i].loss_tokens() as u64;
            for (p, preamble) in with_none(preambles).enumerate() {
                let samples = &per_preamble[p][i];
                rows.push(self.row(example, settings, preamble, nll[i], tokens, samples));
            }
        }
        Ok(rows)
    }

    /// Each example's prompt + target completion + EOS, cut at the
    /// settings' `max_length`.
    fn targets(
        &self,
        examples: &[&Example],
        settings: &EvalSettings,
    ) -> Result<Vec<TokenizedExample>> {
        examples
            .iter()
            .map(|e| {
                let limit = LengthLimit::context(settings.max_length);
                Ok(tokenize(e, self.template, self.tokenizer, self.eos, limit)?.0)
            })
            .collect()
    }

    /// The summed NLL of each target's completion + EOS, by teacher-forced
    /// forwards of `batch_size` targets (the static sampler's perplexity).
    fn target_nll(
        &self,
        targets: &[TokenizedExample],
        settings: &EvalSettings,
    ) -> Result<Vec<f64>> {
        let mut nll = Vec::with_capacity(targets.len());
        for chunk in targets.chunks(settings.batch_size) {
            nll.extend(self.batch_nll(chunk, settings)?);
        }
        Ok(nll)
    }

    fn batch_nll(
        &self,
        tokenized: &[TokenizedExample],
        settings: &EvalSettings,
    ) -> Result<Vec<f64>> {
        let refs: Vec<&TokenizedExample> = tokenized.iter().collect();
        let batch = Batch::collate(&refs, self.pad, self.model.device());
        let nll = tch::no_grad(|| match settings.loss_chunk_tokens {
            Some(chunk) => per_example_nll_chunked(self.model, &batch, chunk),
            None => per_example_nll(self.model, &batch),
        })?;
        Ok(Vec::<f64>::try_from(
            nll.to_kind(tch::Kind::Double).to_device(tch::Device::Cpu),
        )?)
    }

    /// The prompts of a pass: each example's prompt with the preamble, or
    /// with the pass's targets, their tokens (the same encoding of the same
    /// text) and the target to score.
    fn prompts(
        &self,
        examples: &[&Example],
        settings: &EvalSettings,
        pass: &Pass<'_>,
        prefix: &str,
    ) -> Result<Vec<Prompt>> {
        let seed =
            |e: &Example| prompt_seed(settings.seed, settings.checkpoint_step, &e.id, pass.index);
        if let Some(targets) = pass.targets {
            return Ok(examples
                .iter()
                .zip(targets)
                .map(|(e, t)| {
                    let (prompt, target) = t.tokens.split_at(t.prompt_len);
                    let mut p = Prompt::new(prompt.to_vec(), seed(e));
                    p.scored = target.to_vec();
                    p
                })
                .collect());
        }
        examples
            .iter()
            .map(|e| {
                let text = format!("{}{prefix}", self.template.render_prompt(e));
                Ok(Prompt::new(self.tokenizer.encode(&text, true)?, seed(e)))
            })
            .collect()
    }

    /// K samples per example, in sample order, and the targets' NLLs when
    /// the pass scores them.
    fn sample(
        &self,
        examples: &[&Example],
        settings: &EvalSettings,
        pass: &Pass<'_>,
        progress: &dyn Fn(usize),
    ) -> Result<PassOutput> {
        let prefix = if pass.preamble.is_empty() {
            String::new()
        } else {
            format!(" {}", pass.preamble)
        };
        let prompts = self.prompts(examples, settings, pass, &prefix)?;
        let stop_string = self.stop_condition();
        let stop = Stop {
            token_ids: std::slice::from_ref(&self.eos),
            condition: Some(&stop_string),
        };
        let (completions, nll) = self.generate(&prompts, settings, stop, progress)?;
        let mut samples = vec![Vec::with_capacity(settings.sampling.samples); examples.len()];
        for c in completions {
            let text = self.tokenizer.decode(&c.tokens, true)?;
            let answer = self
                .template
                .cut_at_stop(&format!("{prefix}{text}"))
                .to_string();
            samples[c.prompt_index].push(Sample {
                text: answer,
                tokens: c.tokens.len(),
                confidence: c.mean_logprob(),
            });
        }
        // Nothing scored sums to 0.
        let nll = pass
            .targets
            .map(|_| nll.into_iter().map(|n| n.unwrap_or(0.0)).collect());
        Ok((samples, nll))
    }

    /// The samples of `prompts` with the settings' sampler, and each
    /// prompt's scored NLL (the continuous sampler's).
    fn generate(
        &self,
        prompts: &[Prompt],
        settings: &EvalSettings,
        stop: Stop<'_>,
        progress: &dyn Fn(usize),
    ) -> Result<(Vec<Completion>, Vec<Option<f64>>)> {
        let sampling = &settings.sampling;
        match settings.sampler {
            SamplerKind::Continuous => {
                let limits = SampleLimits {
                    rows: settings.batch_size * sampling.samples,
                    score_chunk: settings.loss_chunk_tokens,
                };
                let sampled = sample(self.model, prompts, sampling, stop, limits, progress)?;
                Ok((sampled.completions, sampled.scored_nll))
            }
            SamplerKind::Static => {
                let mut completions = vec![];
                for (b, batch) in prompts.chunks(settings.batch_size).enumerate() {
                    let first = b * settings.batch_size;
                    for mut c in generate_static(self.model, batch, sampling, stop, self.pad)? {
                        c.prompt_index += first;
                        completions.push(c);
                    }
                    progress(first + batch.len());
                }
                Ok((completions, vec![None; prompts.len()]))
            }
        }
    }

    /// True once the decoded tail of a row contains a stop string.
    fn stop_condition(&self) -> impl Fn(&[i64]) -> bool + '_ {
        move |tokens: &[i64]| reached_stop(self.tokenizer, &self.template.stop, tokens)
    }

    fn row(
        &self,
        example: &Example,
        settings: &EvalSettings,
        preamble: &str,
        nll: f64,
        tokens: u64,
        samples: &[Sample],
    ) -> ExampleResult {
        let k = samples.len().max(1) as f64;
        let n_correct = samples
            .iter()
            .filter(|s| is_correct(&s.text, &example.answer, self.style))
            .count();
        let equal = samples
            .iter()
            .filter(|s| s.text.trim() == example.target.trim())
            .count();
        ExampleResult {
            id: example.id.clone(),
            split: settings.split.name().to_string(),
            checkpoint_step: settings.checkpoint_step,
            preamble: preamble.to_string(),
            n_correct: n_correct as u32,
            samples: samples.len() as u32,
            accuracy: n_correct as f64 / k,
            target_nll: nll,
            target_tokens: tokens,
            target_perplexity: (nll / tokens.max(1) as f64).exp(),
            mean_sample_tokens: samples.iter().map(|s| s.tokens as f64).sum::<f64>() / k,
            frac_equal_target: equal as f64 / k,
            sample_confidences: samples.iter().map(|s| s.confidence).collect(),
            sample_texts: samples
                .iter()
                .take(settings.sampling.keep_samples)
                .map(|s| s.text.clone())
                .collect(),
            distinct_samples: Some(distinct_texts(samples)),
        }
    }
}

/// How many of the samples' texts differ (surrounding whitespace aside).
fn distinct_texts(samples: &[Sample]) -> u32 {
    let texts: std::collections::BTreeSet<&str> = samples.iter().map(|s| s.text.trim()).collect();
    texts.len() as u32
}

/// No preamble (""), then each of `preambles`.
fn with_none(preambles: &[String]) -> impl Iterator<Item = &str> {
    std::iter::once("").chain(preambles.iter().map(String::as_str))
}

/// Whether the text of `tokens` contains a stop string near its end. Each
/// token decodes to at least one character, so a window of one token more
/// than the longest stop string sees any stop string as it completes; only
/// that tail is decoded, so the check costs the same at every step.
pub(crate) fn reached_stop(tokenizer: &Tokenizer, stop: &[String], tokens: &[i64]) -> bool {
    let Some(longest) = stop.iter().map(|s| s.chars().count()).max() else {
        return false;
    };
    let tail = &tokens[tokens.len().saturating_sub(longest + 1)..];
    tokenizer
        .decode(tail, false)
        .is_ok_and(|text| stop.iter().any(|s| text.contains(s.as_str())))
}

/// The examples of a dataset with the given ids, in the given order; all of
/// them when `ids` is `None`. An unknown id is an error naming it.
pub fn select<'a>(
    dataset: &'a premem_core::Dataset,
    ids: Option<&[String]>,
) -> Result<Vec<&'a Example>> {
    let Some(ids) = ids else {
        return Ok(dataset.examples.iter().collect());
    };
    let by_id: std::collections::HashMap<&str, &Example> = dataset
        .examples
        .iter()
        .map(|e| (e.id.as_str(), e))
        .collect();
    ids.iter()
        .map(|id| {
            by_id
                .get(id.as_str())
                .copied()
                .ok_or_else(|| EvalError::UnknownExample {
                    id: id.clone(),
                    path: dataset.path.clone(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_are_found_in_the_decoded_tail_only_once_complete() {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/fixtures/llama");
        let tokenizer = Tokenizer::from_dir(&dir).unwrap();
        let stop = vec!["\nDone.".to_string()];
        let encode = |text: &str| tokenizer.encode(text, false).unwrap();
        let long =
            "Natalia sold 48/2 = 24 clips in May and 72 in all, so the answer is 72.\n#### 72";
        assert!(!reached_stop(&tokenizer, &stop, &encode(long)));
        assert!(!reached_stop(
            &tokenizer,
            &stop,
            &encode(&format!("{long}\nDone"))
        ));
        assert!(reached_stop(
            &tokenizer,
            &stop,
            &encode(&format!("{long}\nDone."))
        ));
        assert!(reached_stop(&tokenizer, &stop, &encode("\nDone.")));
        assert!(!reached_stop(
            &tokenizer,
            &[],
            &encode(&format!("{long}\nDone."))
        ));
    }
}
