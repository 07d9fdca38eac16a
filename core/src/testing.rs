//! Test fixtures every crate's tests share (feature `testing`, which the
//! other crates enable in their dev-dependencies): a tiny model's
//! `config.json`, and job specs built from one minimal TOML.
//!
//! A test that needs a job starts from [`MINIMAL_JOB`] and changes what it
//! is about with [`JobToml::with`]; a test that needs a model starts from
//! [`tiny_config`].

use std::path::Path;

use serde_json::json;

use crate::data::dataset::Dataset;
use crate::data::synth::{SynthConfig, SynthData, generate, train_task_tokenizer};
use crate::data::template::PromptTemplate;
use crate::spec::JobSpec;

/// The smallest job spec: a randomly initialised model from `tiny.json`,
/// `train.jsonl` in GSM8K's format, global batch 8 in micro-batches of 4.
pub const MINIMAL_JOB: &str = r#"
[run]
name = "t"
output = "runs/t"

[model]
config = "tiny.json"
tokenizer = "tokenizer.json"

[data.train]
path = "train.jsonl"
format = "gsm8k"

[train]
lr = 1e-4
schedule = { type = "linear", warmup_steps = 20 }
batch_size = 8
micro_batch_size = 4
"#;

/// A job spec's TOML, built from [`MINIMAL_JOB`].
#[derive(Clone, Debug)]
pub struct JobToml {
    table: toml::Table,
}

impl Default for JobToml {
    fn default() -> Self {
        JobToml {
            table: MINIMAL_JOB.parse().expect("MINIMAL_JOB is TOML"),
        }
    }
}

impl JobToml {
    /// Starts from another base than [`MINIMAL_JOB`] (a test's own job).
    pub fn parse(text: &str) -> JobToml {
        JobToml {
            table: text
                .parse()
                .unwrap_or_else(|e| panic!("not TOML: {e}\n{text}")),
        }
    }

    /// The spec with `fragment` (TOML) laid over it: a key of a `fragment` (TOML) laid over it: a key of a
    /// section replaces the same key (a table value such as
    /// `train.schedule` or `data.train` is replaced whole); other keys and
    /// sections are added.
    pub fn with(mut self, fragment: &str) -> JobToml {
        let over: toml::Table = fragment
            .parse()
            .unwrap_or_else(|e| panic!("not TOML: {e}\n{fragment}"));
        for (section, value) in over {
            match (self.table.get_mut(&section), value) {
                (Some(toml::Value::Table(mine)), toml::Value::Table(theirs)) => {
                    mine.extend(theirs);
                }
                (_, value) => {
                    self.table.insert(section, value);
                }
            }
        }
        self
    }

    /// Removes `section.key` (or a whole section).
    pub fn without(mut self, key: &str) -> JobToml {
        match key.split_once('.') {
            Some((section, key)) => {
                if let Some(toml::Value::Table(t)) = self.table.get_mut(section) {
                    t.remove(key);
                }
            }
            None => {
                self.table.remove(key);
            }
        }
        self
    }

    /// The TOML text.
    pub fn text(&self) -> String {
        toml::to_string(&self.table).expect("a TOML table serialises")
    }

    /// The spec, parsed and checked as from `job.toml`.
    pub fn spec(&self) -> JobSpec {
        JobSpec::from_toml(&self.text(), Path::new("job.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{}", self.text()))
    }
}

/// The synthetic task's files in `dir`, as a job names them:
/// `train.jsonl` (`train` examples), `test.jsonl` (when `test` > 0), and a
/// `tokenizer.json` of `vocab_size` tokens trained on both; no pool of new
/// examples. Returns the data.
pub fn write_synth_inputs(
    dir: &Path,
    train: usize,
    test: usize,
    seed: u64,
    vocab_size: usize,
) -> SynthData {
    let data = generate(&SynthConfig {
        train,
        test,
        pool_per_example: 0,
        seed,
        ..Default::default()
    })
    .expect("the synthetic task generates");
    let examples = data.train.iter().chain(&data.test);
    train_task_tokenizer(examples, &PromptTemplate::default(), vocab_size)
        .expect("a tokenizer trains")
        .save(dir.join("tokenizer.json"), false)
        .expect("tokenizer.json is written");
    Dataset::write_gsm8k_jsonl(&data.train, &dir.join("train.jsonl")).expect("train.jsonl");
    if test > 0 {
        Dataset::write_gsm8k_jsonl(&data.test, &dir.join("test.jsonl")).expect("test.jsonl");
    }
    data
}

/// A tiny `config.json` of `family` (`llama`, `qwen2`, `mistral`,
/// `gemma2`) with `vocab_size` tokens: hidden size 32, 2 layers, 4 heads
/// over 2 key-value heads, eos 1 and pad 0; `extra` keys are added or
/// replace these.
pub fn tiny_config(family: &str, vocab_size: usize, extra: serde_json::Value) -> serde_json::Value {
    let mut config = json!({
        "model_type": family, "vocab_size": vocab_size, "hidden_size": 32,
        "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "eos_token_id": 1, "pad_token_id": 0
    });
    let (Some(map), Some(extra)) = (config.as_object_mut(), extra.as_object()) else {
        panic!("extra keys of a config: a JSON object, got {extra}");
    };
    map.extend(extra.clone());
    config
}

/// Writes [`tiny_config`] to `path`.
pub fn write_tiny_config(path: &Path, family: &str, vocab_size: usize, extra: serde_json::Value) {
    let config = tiny_config(family, vocab_size, extra);
    std::fs::write(path, serde_json::to_vec_pretty(&config).expect("JSON"))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fragment_replaces_keys_and_whole_table_values_and_adds_sections() {
        let spec = JobToml::default()
            .with("[train]\nschedule = { type = \"constant\" }\nlr = 3e-3\n[cluster]\ntrainers = 2")
            .spec();
        assert_eq!(spec.train.lr, 3e-3);
        assert_eq!(spec.train.batch_size, 8, "the other keys stay");
        assert_eq!(
            spec.train.schedule,
            crate::spec::ScheduleSpec::Constant { warmup_steps: 0 },
            "a table value is replaced whole"
        );
        assert_eq!(spec.cluster.trainers, 2);
        let no_tokenizer = JobToml::default().without("model.tokenizer").text();
        assert!(!no_tokenizer.contains("tokenizer"), "{no_tokenizer}");
    }

    #[test]
    fn the_tiny_config_is_a_model_the_arch_rules_accept() {
        let config = tiny_config("qwen2", 300, json!({"tie_word_embeddings": true}));
        assert_eq!(config["vocab_size"], 300);
        assert_eq!(config["tie_word_embeddings"], true);
        let shape = crate::spec::plan::ModelShape::from_config_json(
            &config.to_string(),
            Path::new("tiny.json"),
        );
        assert!(shape.is_ok(), "{shape:?}");
    }
}
