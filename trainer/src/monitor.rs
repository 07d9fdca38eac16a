//! A quick in-training monitor: greedy accuracy on a fixed handful of train
//! examples. The evaluator fleet does the real sampling evaluation (K samples
//! at temperature 0.8, perplexity); this only shows, in the metrics and the
//! progress line, whether the model is learning at all.

use premem_core::data::answer::{AnswerStyle, is_correct};
use premem_core::{Example, PromptTemplate, SamplingSpec};
use premem_model::{CausalLm, Prompt, Stop, Tokenizer, generate};

const BATCH: usize = 32;

pub struct Monitor<'a> {
    pub examples: Vec<&'a Example>,
    pub template: &'a PromptTemplate,
    pub style: AnswerStyle,
    pub max_new_tokens: i64,
    pub eos: i64,
}

impl Monitor<'_> {
    /// Fraction of the examples whose greedy completion has the gold answer.
    pub fn greedy_accuracy(
        &self,
        model: &CausalLm,
        tokenizer: &Tokenizer,
    ) -> premem_model::Result<f64> {
        if self.examples.is_empty() {
            return Ok(0.0);
        }
        let greedy = SamplingSpec::greedy(self.max_new_tokens);
        let stop = Stop::at_tokens(std::slice::from_ref(&self.eos));
        let mut correct = 0usize;
        for chunk in self.examples.chunks(BATCH) {
            let prompts = chunk
                .iter()
                .map(|e| {
                    let tokens = tokenizer.encode(&self.template.render_prompt(e), true)?;
                    Ok(Prompt::new(tokens, 0))
                })
                .collect::<premem_model::Result<Vec<_>>>()?;
            for completion in generate(model, &prompts, &greedy, stop)? {
                let text = tokenizer.decode(&completion.tokens, true)?;
                let answer = self.template.cut_at_stop(&text);
                if is_correct(answer, &chunk[completion.prompt_index].answer, self.style) {
                    correct += 1;
                }
            }
        }
        Ok(correct as f64 / self.examples.len() as f64)
    }
}
