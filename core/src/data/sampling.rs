//! How checkpoints are sampled: the one definition of the sampling settings,
//! their defaults and their validation. The job spec embeds it in `[eval]`
//! (its keys sit directly in that table), `premem eval` and `premem
//! eval-run` flatten it into their flags (feature `cli`), the evaluator
//! takes it from the run's spec, and the sampler (`premem_model::generate`)
//! takes it as it is.
//!
//! The stop strings are not here: they belong to the prompt template, whose
//! completion template ends with them (`prompt.stop`, beside
//! `prompt.completion`), so the two are changed together.

use serde::{Deserialize, Serialize};

use crate::data::dataset::Split;

/// The paper authors' recipe for GSM8K: K = 5 samples at temperature 0.8,
/// top-p 0.95, at most 512 new tokens (MATH: 1024).
pub const DEFAULT_SAMPLES: usize = 5;
pub const DEFAULT_TEMPERATURE: f64 = 0.8;
pub const DEFAULT_TOP_P: f64 = 0.95;
pub const DEFAULT_MAX_NEW_TOKENS: i64 = 512;
pub const DEFAULT_KEEP_SAMPLES: usize = 1;
/// The most samples per example (K): far beyond pass@k curves, and small
/// enough that a batch's rows are an allocation a GPU can answer.
pub const MAX_SAMPLES: usize = 1024;
/// The longest sample in tokens: beyond every context window in use.
pub const MAX_NEW_TOKENS: i64 = 1 << 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(default)]
pub struct SamplingSpec {
    /// K: samples per example (and per preamble).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = DEFAULT_SAMPLES))]
    pub samples: usize,
    /// Sampling temperature; 0 decodes greedily.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = DEFAULT_TEMPERATURE))]
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability
    /// reaches this (1 keeps all).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = DEFAULT_TOP_P))]
    pub top_p: f64,
    /// Longest sample in tokens (paper: 512 for GSM8K, 1024 for MATH).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = DEFAULT_MAX_NEW_TOKENS))]
    pub max_new_tokens: i64,
    /// Also sample with the answer started by this text (paper §5.1; on
    /// train queries only when a run is evaluated: the report's robustness
    /// view), e.g. --preamble First --preamble "We know that".
    #[cfg_attr(feature = "cli", arg(long = "preamble"))]
    pub preambles: Vec<String>,
    /// Sample texts kept per result row.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = DEFAULT_KEEP_SAMPLES))]
    pub keep_samples: usize,
}

impl Default for SamplingSpec {
    fn default() -> Self {
        SamplingSpec {
            samples: DEFAULT_SAMPLES,
            temperature: DEFAULT_TEMPERATURE,
            top_p: DEFAULT_TOP_P,
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            preambles: vec![],
            keep_samples: DEFAULT_KEEP_SAMPLES,
        }
    }
}

/// A sampling setting that cannot be used: which one, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} {problem}", label(field))]
pub struct SamplingError {
    /// The field's name in the spec (`samples`, `top_p`, …).
    pub field: &'static str,
    pub problem: String,
}

/// A field as plain messages name it.
fn label(field: &str) -> &str {
    match field {
        "samples" => "samples (K)",
        other => other,
    }
}

impl SamplingError {
    /// The message with the field named as in a job spec (`eval.top_p …`).
    pub fn in_spec(&self, table: &str) -> String {
        format!("{table}.{} {}", self.field, self.problem)
    }

    /// The message with the field named as a command-line flag (`--top-p …`).
    pub fn as_flag(&self) -> String {
        let flag = match self.field {
            "preambles" => "preamble".to_string(),
            field => field.replace('_', "-"),
        };
        format!("--{flag} {}", self.problem)
    }
}

impl SamplingSpec {
    /// Greedy decoding of one sample of at most `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: i64) -> SamplingSpec {
        SamplingSpec {
            samples: 1,
            temperature: 0.0,
            top_p: 1.0,
            max_new_tokens,
            keep_samples: 0,
            ..SamplingSpec::default()
        }
    }

    /// The one check of every setting.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let bad = |field, problem: String| Err(SamplingError { field, problem });
        if self.samples == 0 || self.samples > MAX_SAMPLES {
            return bad(
                "samples",
                format!("must be 1 to {MAX_SAMPLES}, got {}", self.samples),
            );
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(
                "temperature",
                format!("must be >= 0, got {}", self.temperature),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("must be in (0, 1], got {}", self.top_p));
        }
        if !(1..=MAX_NEW_TOKENS).contains(&self.max_new_tokens) {
            return bad(
                "max_new_tokens",
                format!("must be 1 to {MAX_NEW_TOKENS}, got {}", self.max_new_tokens),
            );
        }
        if self.preambles.iter().any(|p| p.trim().is_empty()) {
            return bad("preambles", "must not be empty strings".into());
        }
        Ok(())
    }

    /// The settings a run's `split` is sampled with: robustness to
    /// preambles is measured on train queries only.
    pub fn for_split(&self, split: Split) -> SamplingSpec {
        match split {
            Split::Train => self.clone(),
            Split::Test => SamplingSpec {
                preambles: vec![],
                ..self.clone()
            },
        }
    }

    /// Whether results sampled with `self` answer a request for `wanted`:
    /// the same samples are drawn (K, temperature, top-p, length) and every
    /// wanted preamble was sampled. Kept texts do not change the rows' numbers.
    pub fn covers(&self, wanted: &SamplingSpec) -> bool {
        let draws = |s: &SamplingSpec| SamplingSpec {
            preambles: vec![],
            keep_samples: 0,
            ..s.clone()
        };
        draws(self) == draws(wanted) && wanted.preambles.iter().all(|p| self.preambles.contains(p))
    }

    /// One line for messages: `K=5 T=0.8 top-p=0.95 max-new-tokens=512 preambles=[]`.
    pub fn describe(&self) -> String {
        format!(
            "K={} T={} top-p={} max-new-tokens={} preambles={:?}",
            self.samples, self.temperature, self.top_p, self.max_new_tokens, self.preambles
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers_recipe_and_valid() {
        let s = SamplingSpec::default();
        assert_eq!(
            (s.samples, s.temperature, s.top_p, s.max_new_tokens),
            (5, 0.8, 0.95, 512)
        );
        s.validate().unwrap();
        SamplingSpec::greedy(4).validate().unwrap();
        // Missing keys take the defaults.
        let parsed: SamplingSpec = serde_json::from_str(r#"{"samples": 3}"#).unwrap();
        assert_eq!(
            parsed,
            SamplingSpec {
                samples: 3,
                ..SamplingSpec::default()
            }
        );
    }

    #[test]
    fn each_bad_value_names_its_field_as_key_and_as_flag() {
        let cases = [
            (
                SamplingSpec {
                    samples: 0,
                    ..Default::default()
                },
                "eval.samples must be 1 to 1024, got 0",
                "--samples must be 1 to 1024, got 0",
            ),
            (
                SamplingSpec {
                    samples: 100_000_000,
                    ..Default::default()
                },
                "eval.samples must be 1 to 1024, got 100000000",
                "--samples must be 1 to 1024, got 100000000",
            ),
            (
                SamplingSpec {
                    temperature: f64::NAN,
                    ..Default::default()
                },
                "eval.temperature must be >= 0, got NaN",
                "--temperature must be >= 0, got NaN",
            ),
            (
                SamplingSpec {
                    top_p: 0.0,
                    ..Default::default()
                },
                "eval.top_p must be in (0, 1], got 0",
                "--top-p must be in (0, 1], got 0",
            ),
            (
                SamplingSpec {
                    max_new_tokens: 0,
                    ..Default::default()
                },
                "eval.max_new_tokens must be 1 to 1048576, got 0",
                "--max-new-tokens must be 1 to 1048576, got 0",
            ),
            (
                SamplingSpec {
                    preambles: vec![" ".into()],
                    ..Default::default()
                },
                "eval.preambles must not be empty strings",
                "--preamble must not be empty strings",
            ),
        ];
        for (spec, key, flag) in cases {
            let err = spec.validate().unwrap_err();
            assert_eq!(
                (err.in_spec("eval").as_str(), err.as_flag().as_str()),
                (key, flag)
            );
        }
        let err = SamplingSpec {
            samples: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.to_string(), "samples (K) must be 1 to 1024, got 0");
    }

    #[test]
    fn results_cover_a_request_with_the_same_draws_and_fewer_preambles() {
        let made = SamplingSpec {
            preambles: vec!["First".into(), "We know that".into()],
            keep_samples: 3,
            ..Default::default()
        };
        let wanted = SamplingSpec {
            preambles: vec!["First".into()],
            ..Default::default()
        };
        assert!(made.covers(&wanted));
        assert!(!wanted.covers(&made));
        let other_k = SamplingSpec {
            samples: 4,
            ..wanted.clone()
        };
        assert!(!made.covers(&other_k));
        assert!(made.for_split(Split::Test).preambles.is_empty());
        assert_eq!(made.for_split(Split::Train), made);
    }
}
