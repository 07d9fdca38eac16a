//! How surprising a target trace is to a perfect solver: a model that knows
//! the problem's answer and every step, and the style's grammar, but not
//! which of the style's draws wrote this trace. Its probability of a trace
//! is the style's own probability of writing it, computed exactly: a
//! forward pass over the lines, whose state is the set of groups already
//! written (the steps come in any order), adding every draw that gives the
//! same text. Per token, that is the lowest perplexity a model can reach on
//! traces it has not memorized (in expectation over the draws): the floor
//! that tells "solves it in its own way" from "memorized this wording".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Problem, TraceStyle};
use crate::data::dataset::Example;
use crate::data::template::PromptTemplate;

/// The natural log of the probability that `style` writes `trace` for
/// `problem`; minus infinity when it cannot.
pub(super) fn log_probability(style: TraceStyle, problem: &Problem, trace: &str) -> f64 {
    let options = style.options(problem);
    let lines: Vec<&str> = trace.split('\n').collect();
    let k = problem.groups.len();
    if lines.len() != k + usize::from(k > 1) + 2 {
        return f64::NEG_INFINITY;
    }
    // Probability of the lines so far, by the set of groups they wrote.
    let mut states: BTreeMap<u32, f64> = [(0u32, 1.0)].into();
    for (position, line) in lines[..k].iter().enumerate() {
        let mut next: BTreeMap<u32, f64> = BTreeMap::new();
        let matched: Vec<f64> = (0..k)
            .map(|group| matching(&options.step(group, position), line))
            .collect();
        for (&done, &p) in &states {
            let left: Vec<usize> = (0..k).filter(|g| done & (1 << g) == 0).collect();
            for &group in &left {
                if matched[group] > 0.0 {
                    *next.entry(done | (1 << group)).or_default() +=
                        p * matched[group] / left.len() as f64;
                }
            }
        }
        states = next;
    }
    let mut p: f64 = states.values().sum();
    let mut rest = lines[k..].iter();
    if k > 1 {
        p *= matching(&options.sum(), rest.next().expect("counted"));
    }
    p *= matching(&options.change(), rest.next().expect("counted"));
    if *rest.next().expect("counted") != options.answer() {
        p = 0.0;
    }
    p.ln()
}

/// The total probability of the options whose text is `line`.
fn matching(options: &[(String, f64)], line: &str) -> f64 {
    options
        .iter()
        .filter(|(text, _)| text == line)
        .map(|(_, p)| p)
        .sum()
}

/// Per-token perplexity of a text of log-probability `log_p` over `tokens`
/// tokens.
pub fn perplexity(log_p: f64, tokens: usize) -> f64 {
    (-log_p / tokens.max(1) as f64).exp()
}

/// The tokens a target's perplexity is measured over, as the trainer and
/// the evaluators count them: the rendered completion and the EOS token.
pub fn completion_tokens(
    tokenizer: &tokenizers::Tokenizer,
    template: &PromptTemplate,
    example: &Example,
) -> Result<usize, String> {
    let encoding = tokenizer
        .encode(template.render_completion(example), false)
        .map_err(|e| format!("tokenizing {}: {e}", example.id))?;
    Ok(encoding.len() + 1)
}

/// The perfect solver's perplexity over one family's examples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FamilyPerplexity {
    pub family: String,
    pub examples: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Per family (in family order), the median, least and largest of the
/// perplexities given as `(family, perplexity)`.
pub fn summarize_families(values: &[(String, f64)]) -> Vec<FamilyPerplexity> {
    let mut by_family: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (family, ppl) in values {
        by_family.entry(family).or_default().push(*ppl);
    }
    by_family
        .into_iter()
        .map(|(family, mut v)| {
            v.sort_by(f64::total_cmp);
            let n = v.len();
            let median = if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            };
            FamilyPerplexity {
                family: family.to_string(),
                examples: n,
                median,
                min: v[0],
                max: v[n - 1],
            }
        })
        .collect()
}

/// The summary `premem data synth` writes beside the data it makes.
pub const SYNTH_FILE: &str = "synth.json";

/// The perfect solver's perplexity per split and family from the
/// `synth.json` beside the dataset file `data`; `None` when there is none
/// or it holds no such table.
pub fn perfect_solver_beside(
    data: &std::path::Path,
) -> Option<BTreeMap<String, Vec<FamilyPerplexity>>> {
    let text = std::fs::read_to_string(data.with_file_name(SYNTH_FILE)).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    serde_json::from_value(json.get("perfect_solver_perplexity")?.clone()).ok()
}
