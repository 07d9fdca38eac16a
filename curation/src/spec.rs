//! The curation spec: one TOML file. Unknown keys are errors; every value is
//! checked before any work starts; errors name the file and the key.
//! Relative paths are relative to the working directory (as in job specs).
//!
//! ```toml
//! [curation]
//! name = "synth-curation"
//! output = "runs/synth-curation"   # a local directory
//! iterations = 3                   # n >= 1 runs per strategy
//! threshold = 0.75                 # t in (0, 1]
//! new_examples = 32                # or [32, 64]: one per iteration 1..n-1
//! strategies = ["pm", "iid"]       # pm, iid, ifd, heuristic
//! seed = 0
//! trainers = 2
//! evaluators = 2
//! job = "examples/cluster.toml"    # or an inline [job] table
//!
//! [ifd]                            # needed when "ifd" is a strategy
//! fraction = 0.5
//! [heuristic]                      # needed when "heuristic" is a strategy
//! key = "lines"                    # or "level"
//! fraction = 0.5
//!
//! [source]                         # exactly one of pool / generator
//! pool = { path = "data/synth/pool.jsonl", format = "gsm8k" }
//! # generator = { command = ["python3", "examples/rephrase.py"], attempts = 3, timeout_s = 300 }
//! ```

mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use premem_core::data::answer::AnswerStyle;
use premem_core::data::dataset::DatasetSpec;
use premem_core::spec::{JobSpec, SpecError, parse_toml, read_spec_file};

/// How the parents of new examples are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Pre-memorization: the examples with P-M accuracy below the threshold.
    Pm,
    /// Every example of the train set (uniform over the candidates).
    Iid,
    /// The top fraction by IFD score.
    Ifd,
    /// The top fraction by a difficulty heuristic (trace lines, MATH level).
    Heuristic,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::Pm,
        Strategy::Iid,
        Strategy::Ifd,
        Strategy::Heuristic,
    ];

    /// The spec's spelling: `pm`, `iid`, `ifd`, `heuristic`.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Pm => "pm",
            Strategy::Iid => "iid",
            Strategy::Ifd => "ifd",
            Strategy::Heuristic => "heuristic",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurationSpec {
    pub curation: CurationSection,
    /// The base job inline (instead of `curation.job`, a path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSpec>,
    /// Read only when `ifd` is a strategy (then required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifd: Option<IfdSpec>,
    /// Read only when `heuristic` is a strategy (then required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heuristic: Option<HeuristicSpec>,
    pub source: SourceSpec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurationSection {
    /// A name for logs, reports and run names.
    pub name: String,
    /// A local directory: the state, each iteration's data files (trainers
    /// read them) and the report go here. Not an object-store URL.
    pub output: String,
    /// n: runs per strategy (the first trains on the train set alone).
    pub iterations: u32,
    /// t: parents of the `pm` strategy have P-M accuracy `< t` (paper: 0.75).
    pub threshold: f64,
    /// N'_i: new examples added after iteration i, for i = 1..n-1.
    pub new_examples: NewExamples,
    pub strategies: Vec<Strategy>,
    /// Seeds every random choice of the curation.
    #[serde(default)]
    pub seed: u64,
    /// Trainer processes of the local cluster (at least the base job's
    /// `cluster.trainers`).
    #[serde(default = "one")]
    pub trainers: usize,
    /// Evaluator processes of the local cluster.
    #[serde(default = "one")]
    pub evaluators: usize,
    /// Runs whose per-example P-M accuracy no strategy reads (all but the
    /// shared first run and pm's runs before the last iteration) checkpoint
    /// only at their last step: the same final weights and test accuracy,
    /// a fraction of the evaluation. Their P-M accuracy in the report is
    /// then that of one checkpoint.
    #[serde(default)]
    pub measure_last_checkpoint_only: bool,
    /// The base job spec (a path); or an inline `[job]` table. Exactly one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

fn one() -> usize {
    1
}

/// `new_examples`: one number for every iteration that adds examples, or
/// one number per such iteration (a list of `iterations - 1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum NewExamples {
    Each(usize),
    PerIteration(Vec<usize>),
}

impl<'de> Deserialize<'de> for NewExamples {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NewExamples;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a number of new examples, or a list of one number per iteration 1..n-1",
                )
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NewExamples, E> {
                Ok(NewExamples::Each(v as usize))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NewExamples, E> {
                usize::try_from(v)
                    .map(NewExamples::Each)
                    .map_err(|_| E::custom(format!("new_examples must be positive, got {v}")))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NewExamples, A::Error> {
                let mut out = vec![];
                while let Some(n) = seq.next_element::<usize>()? {
                    out.push(n);
                }
                Ok(NewExamples::PerIteration(out))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IfdSpec {
    /// Keep the top `ceil(fraction · |D|)` by IFD score (paper: 0.5 GSM8K,
    /// 0.75 MATH).
    pub fraction: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeuristicKey {
    /// Non-blank lines of the target trace (GSM8K).
    Lines,
    /// The number in `meta["level"]` ("Level 3"; MATH).
    Level,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeuristicSpec {
    pub key: HeuristicKey,
    /// Keep the top `ceil(fraction · |D|)`, hardest first.
    pub fraction: f64,
}

/// Where new examples come from: exactly one of the two.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Candidates keyed by `parent_id` (every row needs one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<DatasetSpec>,
    /// A command that writes new examples (see [`crate::generate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSpec {
    /// Program and arguments, run without a shell.
    pub command: Vec<String>,
    /// Tries per iteration before the curation fails.
    #[serde(default = "three")]
    pub attempts: u32,
    /// Seconds per try; then the command (its process group) is killed.
    #[serde(default = "five_minutes")]
    pub timeout_s: u64,
    /// How the generated answers mark the final answer (default gsm8k:
    /// `#### N`; `math`: the last `\boxed{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_style: Option<AnswerStyle>,
}

fn three() -> u32 {
    3
}
fn five_minutes() -> u64 {
    300
}

impl GeneratorSpec {
    pub fn answer_style(&self) -> AnswerStyle {
        self.answer_style.unwrap_or(AnswerStyle::Gsm8k)
    }

    /// The command as one line, for messages.
    pub fn display(&self) -> String {
        self.command
            .iter()
            .map(|a| {
                if a.is_empty() || a.contains(char::is_whitespace) {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl CurationSpec {
    pub fn from_file(path: &Path) -> Result<CurationSpec, SpecError> {
        Self::from_toml(&read_spec_file(path)?, path)
    }

    /// Parses and validates; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<CurationSpec, SpecError> {
        let spec: CurationSpec = parse_toml(text, origin)?;
        spec.validate()
            .map_err(|message| SpecError::invalid(origin, message))?;
        Ok(spec)
    }

    /// The base job: the inline `[job]`, or the file `curation.job` (read
    /// and validated), checked for what a curation needs of it (see
    /// `validate.rs`). `origin` is the curation file.
    pub fn base_job(&self, origin: &Path) -> Result<JobSpec, SpecError> {
        let (job, where_) = match (&self.job, &self.curation.job) {
            (Some(job), _) => (job.clone(), "[job]".to_string()),
            (None, Some(path)) => (
                JobSpec::from_file(Path::new(path))?,
                format!("curation.job ({path})"),
            ),
            (None, None) => {
                return Err(SpecError::invalid(
                    origin,
                    "curation.job: no base job".into(),
                ));
            }
        };
        self.check_base_job(&job, &where_)
            .map_err(|message| SpecError::invalid(origin, message))?;
        Ok(job)
    }

    /// N'_i: how many new examples iteration `i` (1-based) adds after its
    /// run; 0 for the last iteration (its run is only measured) and beyond.
    pub fn new_examples_after(&self, iteration: u32) -> usize {
        if iteration == 0 || iteration >= self.curation.iterations {
            return 0;
        }
        match &self.curation.new_examples {
            NewExamples::Each(n) => *n,
            NewExamples::PerIteration(list) => list[iteration as usize - 1],
        }
    }

    pub fn output_dir(&self) -> PathBuf {
        PathBuf::from(&self.curation.output)
    }

    /// `<output>/<strategy>/iter-<i>`: where the driver puts an iteration's
    /// data files.
    pub fn iteration_dir(&self, strategy: Strategy, iteration: u32) -> PathBuf {
        self.output_dir()
            .join(strategy.name())
            .join(format!("iter-{iteration}"))
    }

    /// `<name>-<strategy>-<i>`.
    pub fn run_name(&self, strategy: Strategy, iteration: u32) -> String {
        format!("{}-{}-{iteration}", self.curation.name, strategy.name())
    }

    /// The `[ifd]` fraction (0.5 when absent: only read for `ifd`, which
    /// validation requires to have it).
    pub fn ifd_fraction(&self) -> f64 {
        self.ifd.as_ref().map_or(0.5, |i| i.fraction)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) const POOL_SPEC: &str = r#"
[curation]
name = "synth-curation"
output = "runs/synth-curation"
iterations = 3
threshold = 0.75
new_examples = 32
strategies = ["pm", "iid", "ifd", "heuristic"]
seed = 7
trainers = 2
evaluators = 2
job = "examples/cluster.toml"

[ifd]
fraction = 0.5
[heuristic]
key = "lines"
fraction = 0.75

[source]
pool = { path = "data/synth/pool.jsonl", format = "gsm8k" }
"#;

    fn parse(text: &str) -> Result<CurationSpec, SpecError> {
        CurationSpec::from_toml(text, Path::new("cur.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_documented_spec() {
        let spec = parse(POOL_SPEC).unwrap();
        let c = &spec.curation;
        assert_eq!(c.name, "synth-curation");
        assert_eq!(c.iterations, 3);
        assert_eq!(c.threshold, 0.75);
        assert_eq!(c.new_examples, NewExamples::Each(32));
        assert_eq!(
            c.strategies,
            vec![
                Strategy::Pm,
                Strategy::Iid,
                Strategy::Ifd,
                Strategy::Heuristic
            ]
        );
        assert_eq!((c.seed, c.trainers, c.evaluators), (7, 2, 2));
        assert_eq!(c.job.as_deref(), Some("examples/cluster.toml"));
        assert_eq!(spec.ifd, Some(IfdSpec { fraction: 0.5 }));
        assert_eq!(
            spec.heuristic,
            Some(HeuristicSpec {
                key: HeuristicKey::Lines,
                fraction: 0.75
            })
        );
        assert_eq!(
            spec.source.pool.as_ref().unwrap().path,
            "data/synth/pool.jsonl"
        );
        assert!(spec.source.generator.is_none());
        // N'_i: iterations 1 and 2 add 32, the last (3) adds nothing.
        assert_eq!(
            (1..=4)
                .map(|i| spec.new_examples_after(i))
                .collect::<Vec<_>>(),
            vec![32, 32, 0, 0]
        );
        assert_eq!(
            spec.state_path(),
            Path::new("runs/synth-curation/curation-state.json")
        );
        assert_eq!(
            spec.iteration_dir(Strategy::Ifd, 2),
            Path::new("runs/synth-curation/ifd/iter-2")
        );
        assert_eq!(spec.run_name(Strategy::Pm, 1), "synth-curation-pm-1");
        assert_eq!(
            Strategy::ALL.map(Strategy::name),
            ["pm", "iid", "ifd", "heuristic"]
        );
    }

    #[test]
    fn generator_source_and_list_of_new_examples() {
        let text = POOL_SPEC
            .replace("new_examples = 32", "new_examples = [10, 20]")
            .replace(
                r#"pool = { path = "data/synth/pool.jsonl", format = "gsm8k" }"#,
                r#"generator = { command = ["python3", "examples/rephrase.py"] }"#,
            );
        let spec = parse(&text).unwrap();
        let g = spec.source.generator.as_ref().unwrap();
        assert_eq!(g.command, ["python3", "examples/rephrase.py"]);
        assert_eq!((g.attempts, g.timeout_s), (3, 300));
        assert_eq!(g.answer_style(), AnswerStyle::Gsm8k);
        assert_eq!(g.display(), "python3 examples/rephrase.py");
        assert_eq!(
            (1..=3)
                .map(|i| spec.new_examples_after(i))
                .collect::<Vec<_>>(),
            vec![10, 20, 0]
        );
        // One iteration: nothing is ever added; an empty list fits.
        let one = text
            .replace("iterations = 3", "iterations = 1")
            .replace("[10, 20]", "[]");
        assert_eq!(parse(&one).unwrap().new_examples_after(1), 0);
    }

    #[test]
    fn every_error_names_the_file_and_the_key() {
        let e = err(&POOL_SPEC.replace("seed = 7", "seed = 7\nsede = 1"));
        assert!(
            e.starts_with("cur.toml:") && e.contains("unknown field `sede`"),
            "{e}"
        );
        let e = err(&POOL_SPEC.replace("fraction = 0.5", "fraction = 0.5\nkeep = 1"));
        assert!(e.contains("unknown field `keep`"), "{e}");
        let e = err(&POOL_SPEC.replace(r#"format = "gsm8k" }"#, r#"format = "gsm8k", x = 1 }"#));
        assert!(e.contains("unknown field `x`"), "{e}");

        let e = err(&POOL_SPEC.replace(
            r#"["pm", "iid", "ifd", "heuristic"]"#,
            r#"["pm", "random"]"#,
        ));
        assert!(
            e.starts_with("cur.toml:")
                && e.contains("unknown variant `random`")
                && e.contains("strategies"),
            "{e}"
        );
        let e = err(&POOL_SPEC.replace(r#"["pm", "iid", "ifd", "heuristic"]"#, "[]"));
        assert!(
            e.starts_with("cur.toml:") && e.contains("curation.strategies must name"),
            "{e}"
        );
        let e = err(&POOL_SPEC.replace(
            r#"["pm", "iid", "ifd", "heuristic"]"#,
            r#"["pm", "iid", "pm"]"#,
        ));
        assert!(e.contains("curation.strategies lists \"pm\" twice"), "{e}");

        for bad in ["0", "1.5", "-0.1", "nan"] {
            let e = err(&POOL_SPEC.replace("threshold = 0.75", &format!("threshold = {bad}")));
            assert!(
                e.contains("curation.threshold must be in (0, 1]"),
                "{bad}: {e}"
            );
        }
        parse(&POOL_SPEC.replace("threshold = 0.75", "threshold = 1.0")).unwrap();

        for url in ["s3://bucket/prefix", "file:///cur", "gs://b/p"] {
            let e = err(&POOL_SPEC.replace("\"runs/synth-curation\"", &format!("\"{url}\"")));
            assert!(
                e.contains("curation.output") && e.contains("not a URL"),
                "{url}: {e}"
            );
        }
        parse(&POOL_SPEC.replace("\"runs/synth-curation\"", "\"/abs/dir\"")).unwrap();

        let both = POOL_SPEC.replace(
            "[source]\n",
            "[source]\ngenerator = { command = [\"sh\"] }\n",
        );
        let e = err(&both);
        assert!(
            e.contains("[source]: give either `pool` or `generator`, not both"),
            "{e}"
        );
        let neither = POOL_SPEC.replace(
            r#"pool = { path = "data/synth/pool.jsonl", format = "gsm8k" }"#,
            "",
        );
        assert!(err(&neither).contains("[source]: give `pool`"));

        let e = err(&POOL_SPEC.replace("iterations = 3", "iterations = 0"));
        assert!(e.contains("curation.iterations must be at least 1"), "{e}");
        let e = err(&POOL_SPEC.replace("new_examples = 32", "new_examples = [1, 2, 3]"));
        assert!(
            e.contains("iterations - 1 = 2") && e.contains("got 3 numbers"),
            "{e}"
        );
        let e = err(&POOL_SPEC.replace("new_examples = 32", "new_examples = 0"));
        assert!(
            e.contains("curation.new_examples must be at least 1"),
            "{e}"
        );
        let e = err(&POOL_SPEC.replace("new_examples = 32", "new_examples = -3"));
        assert!(e.contains("new_examples must be positive"), "{e}");
        let e = err(&POOL_SPEC.replace("new_examples = 32", "new_examples = \"many\""));
        assert!(e.contains("a number of new examples, or a list"), "{e}");

        let e = err(&POOL_SPEC.replace("[ifd]\nfraction = 0.5\n", ""));
        assert!(
            e.contains("[ifd]: the strategy \"ifd\" needs `fraction`"),
            "{e}"
        );
        let e = err(&POOL_SPEC.replace("fraction = 0.5", "fraction = 0"));
        assert!(e.contains("ifd.fraction must be in (0, 1], got 0"), "{e}");
        let e = err(&POOL_SPEC.replace("fraction = 0.75", "fraction = 2"));
        assert!(
            e.contains("heuristic.fraction must be in (0, 1], got 2"),
            "{e}"
        );
        let e = err(&POOL_SPEC.replace("key = \"lines\"", "key = \"words\""));
        assert!(e.contains("unknown variant `words`"), "{e}");
        // [ifd] is not read without the strategy.
        parse(
            &POOL_SPEC
                .replace(r#"["pm", "iid", "ifd", "heuristic"]"#, r#"["pm"]"#)
                .replace("fraction = 0.5", "fraction = 7"),
        )
        .unwrap();

        let e = err(&POOL_SPEC.replace("job = \"examples/cluster.toml\"", ""));
        assert!(e.contains("curation.job: give the base job"), "{e}");
        let e = err(&POOL_SPEC.replace("trainers = 2", "trainers = 0"));
        assert!(
            e.contains("curation.trainers and curation.evaluators"),
            "{e}"
        );

        let generator = |g: &str| {
            POOL_SPEC.replace(
                r#"pool = { path = "data/synth/pool.jsonl", format = "gsm8k" }"#,
                &format!("generator = {g}"),
            )
        };
        assert!(err(&generator("{ command = [] }")).contains("source.generator.command"));
        assert!(
            err(&generator("{ command = [\"sh\"], attempts = 0 }"))
                .contains("source.generator.attempts")
        );
        assert!(
            err(&generator("{ command = [\"sh\"], timeout_s = 0 }"))
                .contains("source.generator.timeout_s")
        );
    }

    pub(crate) const JOB: &str = r#"
[run]
name = "base"
output = "runs/base"

[model]
config = "examples/tiny-llama.json"
tokenizer = "data/synth/tokenizer.json"

[data]
train = { path = "data/synth/train.jsonl", format = "gsm8k" }
test = { path = "data/synth/test.jsonl", format = "gsm8k" }

[train]
lr = 1e-3
schedule = { type = "constant" }
batch_size = 8
micro_batch_size = 4

[cluster]
trainers = 2
"#;

    #[test]
    fn base_job_from_a_file_or_inline_and_its_checks() {
        let dir = tempfile::tempdir().unwrap();
        let job_path = dir.path().join("job.toml");
        std::fs::write(&job_path, JOB).unwrap();
        let text = POOL_SPEC.replace("examples/cluster.toml", job_path.to_str().unwrap());
        let spec = parse(&text).unwrap();
        let job = spec.base_job(Path::new("cur.toml")).unwrap();
        assert_eq!(job.run.name, "base");

        // Inline: the [job] table's keys nest under job.
        let nested = JOB
            .replace("[run]", "[job.run]")
            .replace("[model]", "[job.model]")
            .replace("[data]", "[job.data]")
            .replace("[train]", "[job.train]")
            .replace("[cluster]", "[job.cluster]");
        let inline = format!(
            "{}\n{nested}",
            POOL_SPEC.replace("job = \"examples/cluster.toml\"", ""),
        );
        let spec_inline = parse(&inline).unwrap();
        assert_eq!(spec_inline.base_job(Path::new("cur.toml")).unwrap(), job);
        let e = err(&format!("{inline}\n").replace("batch_size = 8", "batch_size = 7"));
        // Checked as the [job] table is parsed: the error shows the table.
        assert!(
            e.contains("[job.run]") && e.contains("train.batch_size (7)"),
            "{e}"
        );
        let both = format!("{POOL_SPEC}\n{nested}");
        assert!(err(&both).contains("either as curation.job (a path) or as a [job] table"));

        let check = |job_text: &str| {
            std::fs::write(&job_path, job_text).unwrap();
            spec.base_job(Path::new("cur.toml"))
                .unwrap_err()
                .to_string()
        };
        let e = check(&JOB.replace(
            "test = { path = \"data/synth/test.jsonl\", format = \"gsm8k\" }",
            "",
        ));
        assert!(
            e.starts_with("cur.toml:") && e.contains("needs data.test"),
            "{e}"
        );
        let e = check(&format!("{JOB}\n[eval]\nlimit = 48\n"));
        assert!(
            e.contains("eval.limit = 48") && e.contains("remove the limit"),
            "{e}"
        );
        let e = check(&format!("{JOB}\n[eval]\nenabled = false\n"));
        assert!(e.contains("eval.enabled is false"), "{e}");
        let e = check(&JOB.replace("trainers = 2", "trainers = 4"));
        assert!(
            e.contains("curation.trainers (2) is fewer than the base job's cluster.trainers (4)"),
            "{e}"
        );
        let e = check("[run]\n");
        assert!(e.contains("job.toml"), "{e}");
    }

    #[test]
    fn the_example_spec_parses() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/synth-curation.toml"
        ));
        let spec = CurationSpec::from_file(path).unwrap();
        let job = spec.base_job(path).unwrap();
        assert!(job.data.test.is_some());
        assert!(spec.source.pool.is_some());
    }

    /// `scripts/reproduce.sh curation` fills in `{seed}`: every seed of the
    /// curation and its job follows, and the paths are that seed's.
    #[test]
    fn the_reproduce_template_parses_for_a_seed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/reproduce");
        let text = std::fs::read_to_string(format!("{dir}/curation.toml.in")).unwrap();
        let path = Path::new(dir).join("seed-3.toml");
        let spec = CurationSpec::from_toml(&text.replace("{seed}", "3"), &path).unwrap();
        let job = spec.base_job(&path).unwrap();
        assert_eq!(spec.curation.seed, 3);
        assert_eq!(job.run.seed, 3);
        assert_eq!(
            job.model.base.as_deref(),
            Some("runs/reproduce-base/checkpoints/step-00004000")
        );
        assert_eq!(spec.curation.output, "runs/reproduce-curation/seed-3");
        assert!(job.data.train.path.contains("seed-3/"));
        assert!(spec.curation.measure_last_checkpoint_only);
        assert_eq!(spec.curation.strategies.len(), 4);
        assert_eq!(job.eval.test_limit, Some(300));
        let templated =
            std::fs::read_to_string(format!("{dir}/templated/curation.toml.in")).unwrap();
        let spec = CurationSpec::from_toml(&templated.replace("{seed}", "3"), &path).unwrap();
        let job = spec.base_job(&path).unwrap();
        assert_eq!((job.run.seed, job.model.init_seed), (3, 3));
        assert_eq!(
            spec.curation.output,
            "runs/reproduce-templated-curation/seed-3"
        );
    }
}
