//! The job spec: one TOML file that says what to train, on what, how, and
//! where to write it. Unknown keys are errors; every value is validated before
//! any work starts. Relative paths are relative to the working directory.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::dataset::DatasetSpec;
use crate::data::order::DataPlan;
use crate::data::sampling::SamplingSpec;
use crate::data::template::PromptTemplate;
use crate::science::advice::AdviceSpec;
use crate::spec::error::SpecError;

/// A job spec is only ever made valid: its `Deserialize` (in `check.rs`)
/// checks every value, so a `JobSpec` read from TOML, JSON or a run's
/// record is a usable one. `JobSpec::from_toml` and `from_json` also name
/// the file and line of a value that cannot be used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct JobSpec {
    pub run: RunSpec,
    pub model: ModelSpec,
    pub data: DataSpec,
    #[serde(default)]
    pub prompt: PromptTemplate,
    pub train: TrainSpec,
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    /// How the distributed runtime evaluates each checkpoint.
    #[serde(default)]
    pub eval: EvalSpec,
    /// How many processes the distributed runtime uses.
    #[serde(default)]
    pub cluster: ClusterSpec,
    /// The advice's thresholds and the optional early stop
    /// ([`crate::science::advice`]). Left out of `run.json` when default.
    #[serde(default, skip_serializing_if = "AdviceSpec::is_default")]
    pub advice: AdviceSpec,
    /// Experiment trackers the coordinator writes to.
    #[serde(default, skip_serializing_if = "TrackingSpec::is_default")]
    pub tracking: TrackingSpec,
}

/// `[tracking]`: where the coordinator sends a run's metrics besides its
/// own store. TensorBoard event files always go to `<run>/tensorboard/`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingSpec {
    /// An MLflow tracking server (`http://host:5000`): the run's
    /// parameters, per-step training metrics and per-checkpoint P-M, test
    /// and advice metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<String>,
    /// The MLflow experiment (default: the sweep or curation the run is part
    /// of, else `premem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
}

impl TrackingSpec {
    pub fn is_default(&self) -> bool {
        *self == TrackingSpec::default()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// A name for logs and reports.
    pub name: String,
    /// Where checkpoints, metrics and results go: a local directory, or an
    /// object-store URL (`file:///abs/dir`, `s3://bucket/prefix`, `gs://...`,
    /// `az://...`).
    pub output: String,
    /// Seeds data order and everything random in the run.
    #[serde(default)]
    pub seed: u64,
    /// The sweep or curation this run is part of (`sweep/<name>`,
    /// `curation/<name>`), set by `premem sweep` and `premem curate`: the
    /// dashboard groups runs by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A Hugging Face model directory to finetune (config.json, safetensors,
    /// tokenizer.json).
    #[serde(default)]
    pub base: Option<String>,
    /// Or: a config.json to initialise a model randomly from.
    #[serde(default)]
    pub config: Option<String>,
    /// Seed of the random initialisation (with `config`).
    #[serde(default)]
    pub init_seed: i64,
    /// tokenizer.json, when not in `base`.
    #[serde(default)]
    pub tokenizer: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    pub train: DatasetSpec,
    #[serde(default)]
    pub test: Option<DatasetSpec>,
    /// Fraction of the train set used (paper: 1.0, 0.5, 0.25).
    #[serde(default = "one")]
    pub fraction: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with decoupled weight decay.
    Adamw,
    /// Adam with L2 weight decay added to the gradient.
    Adam,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ScheduleSpec {
    /// Linear warmup over `warmup_steps`, then linear decay to 0.
    Linear {
        #[serde(default)]
        warmup_steps: u64,
    },
    /// Linear warmup over `warmup_fraction` of the steps, then cosine to 0.
    Cosine {
        #[serde(default)]
        warmup_fraction: f64,
    },
    /// Linear warmup, then constant.
    Constant {
        #[serde(default)]
        warmup_steps: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// fp32 on the CPU, bf16 weights with fp32 master weights on CUDA.
    Auto,
    Fp32,
    /// bf16 weights and compute, fp32 master weights and optimizer state.
    Bf16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    #[serde(default = "adamw")]
    pub optimizer: OptimizerKind,
    /// Peak learning rate.
    pub lr: f64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default = "betas")]
    pub betas: [f64; 2],
    #[serde(default = "adam_eps")]
    pub eps: f64,
    pub schedule: ScheduleSpec,
    /// Global batch size (examples per optimizer step, all ranks together).
    pub batch_size: usize,
    /// Examples per forward/backward; the rest is gradient accumulation.
    pub micro_batch_size: usize,
    /// Clip the global gradient norm to this (none when absent).
    #[serde(default)]
    pub max_grad_norm: Option<f64>,
    #[serde(default = "one_u64")]
    pub epochs: u64,
    /// Train for as many steps as this many epochs over the full data take,
    /// whatever `data.fraction` is (paper appendix A).
    #[serde(default)]
    pub keep_steps_of_epochs: Option<u64>,
    /// Longer examples (prompt + completion tokens) are truncated.
    #[serde(default = "max_length")]
    pub max_length: usize,
    #[serde(default = "auto_precision")]
    pub precision: Precision,
    /// `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "auto_device")]
    pub device: String,
    /// Greedy accuracy on this many train examples at each checkpoint, in the
    /// metrics (0: off). A quick monitor; the evaluator fleet does the real
    /// sampling evaluation.
    #[serde(default)]
    pub monitor_examples: usize,
    /// Tokens the monitor generates per example.
    #[serde(default = "monitor_tokens")]
    pub monitor_max_new_tokens: i64,
    /// How the optimizer state (and under zero2 the gradient) is split over
    /// the ranks. Not part of the training hash: a run may resume under
    /// another sharding.
    #[serde(default)]
    pub sharding: Sharding,
    /// Recompute activations in backward instead of keeping them. Not part
    /// of the training hash.
    #[serde(default)]
    pub activation_checkpointing: ActivationCheckpointing,
    /// Score the completion tokens this many at a time, so the fp32 logits of
    /// a whole micro-batch never exist (absent: all at once); the
    /// evaluators' perplexity pass scores its batches so too. Not part of
    /// the training hash: it changes the loss's summation order only.
    #[serde(default)]
    pub loss_chunk_tokens: Option<usize>,
    /// Memory of each trainer's and evaluator's GPU (`"80GiB"`, `"141GB"`),
    /// for the memory plan where the device cannot be asked: the
    /// coordinator, a planning machine without the GPUs. A trainer with a
    /// CUDA device uses the device's own figure. Not part of the training
    /// hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<crate::spec::ByteSize>,
}

/// `train.sharding`: ZeRO stages over the flat fp32 buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Sharding {
    /// Every rank holds the whole master, moments and gradient.
    None,
    /// Master and moments split into one contiguous range per rank;
    /// gradients all-reduced; updated parameters all-gathered.
    Zero1,
    /// As zero1, and gradients reduce-scattered (summed in fp32): a rank
    /// holds only its range of the reduced gradient, in the weights' kind.
    Zero2,
    /// The least sharding the memory plan says fits.
    #[default]
    Auto,
}

/// `train.activation_checkpointing`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ActivationCheckpointing {
    /// Keep every activation backward needs.
    #[default]
    None,
    /// Keep each decoder layer's input only; recompute the layer in backward.
    Layers,
}

fn adamw() -> OptimizerKind {
    OptimizerKind::Adamw
}
fn betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn adam_eps() -> f64 {
    1e-8
}
fn one_u64() -> u64 {
    1
}
fn max_length() -> usize {
    1024
}
fn auto_precision() -> Precision {
    Precision::Auto
}
fn auto_device() -> String {
    "auto".into()
}
fn monitor_tokens() -> i64 {
    128
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Checkpoint at the end of every epoch.
    #[serde(default = "yes")]
    pub every_epoch: bool,
    /// And/or every this many steps.
    #[serde(default)]
    pub every_steps: Option<u64>,
    /// And/or at these steps, in increasing order (e.g. log-spaced:
    /// `[6, 12, 24, 48, 96, 192, 384]`, dense where learning is fast). A
    /// step past the run's last is refused when the run starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<u64>,
    /// Keep only the newest K resume states (optimizer state); the weights of
    /// every checkpoint are kept for evaluation.
    #[serde(default)]
    pub keep_resume_states: Option<usize>,
    /// Shard checkpoint weights into files of at most this many bytes.
    #[serde(default = "shard_bytes")]
    pub max_shard_bytes: u64,
    /// Measure the baseline metrics at each checkpoint (gradient variance,
    /// distance from init; see `premem_core::science::baselines`). Costs
    /// `grad_variance_minibatches` global batches of forward/backward, one
    /// extra fp32 copy of the weights on the device while it runs, and a copy
    /// of the initial weights in host memory.
    #[serde(default = "yes")]
    pub baselines: bool,
    /// Minibatches (of train.batch_size examples) for the gradient variance
    /// (paper: 5).
    #[serde(default = "five")]
    pub grad_variance_minibatches: usize,
}

fn yes() -> bool {
    true
}
fn five() -> usize {
    5
}
fn shard_bytes() -> u64 {
    5_000_000_000
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            every_epoch: true,
            every_steps: None,
            steps: vec![],
            keep_resume_states: None,
            max_shard_bytes: shard_bytes(),
            baselines: true,
            grad_variance_minibatches: five(),
        }
    }
}

/// Prompts per generation batch of an evaluation (`eval.batch_size`,
/// `premem eval --batch-size`).
pub const DEFAULT_EVAL_BATCH_SIZE: usize = 16;

/// The evaluation of every checkpoint by the evaluator fleet: the train
/// examples the run trains on (for P-M accuracy) and the test split (when
/// `data.test` is set), in tasks of `task_examples` examples. The sampling
/// settings ([`SamplingSpec`]) sit in the same table (`[eval] samples = 5`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalSpec {
    /// Evaluate checkpoints at all (`premem run`, the coordinator).
    pub enabled: bool,
    /// K, temperature, top-p, new tokens, preambles, kept texts.
    #[serde(flatten)]
    pub sampling: SamplingSpec,
    /// Only the first N examples of each split.
    pub limit: Option<usize>,
    /// Only the first N test examples (default: `limit`); curation
    /// evaluates its train set D and a test split of its own size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_limit: Option<usize>,
    /// Examples per task: the unit of leasing. Results do not depend on it
    /// for a given value, nor on how many evaluators run.
    pub task_examples: usize,
    /// Prompts per generation batch (each with its K samples).
    pub batch_size: usize,
    /// The memorization threshold for the live P-M accuracy.
    pub threshold: crate::science::pm::Threshold,
    /// A task that fails this many times fails the job.
    pub max_attempts: u32,
    /// Keys of `[eval]` that are neither the fields above nor the sampling
    /// settings (serde cannot deny unknown keys next to a flattened table,
    /// so [`JobSpec::validate`] refuses them).
    #[serde(flatten, skip_serializing)]
    pub unknown: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

impl EvalSpec {
    /// How many test examples are evaluated at most.
    pub fn test_limit(&self) -> Option<usize> {
        self.test_limit.or(self.limit)
    }
}

impl Default for EvalSpec {
    fn default() -> Self {
        EvalSpec {
            enabled: true,
            sampling: SamplingSpec::default(),
            limit: None,
            test_limit: None,
            task_examples: 32,
            batch_size: DEFAULT_EVAL_BATCH_SIZE,
            threshold: crate::science::pm::Threshold::LogLog(-2.4),
            max_attempts: 3,
            unknown: Default::default(),
        }
    }
}

/// The collective backend of the trainer ranks (`cluster.backend`). A
/// trainer node resolves `Auto` by `train.device` when it receives the spec,
/// so past that point only `Ring` and `Nccl` occur.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// NCCL on a CUDA device, the TCP ring on the CPU.
    #[default]
    Auto,
    /// The TCP ring between CPU ranks.
    Ring,
    /// NCCL between CUDA ranks: one GPU per rank, the spec's `train.device`
    /// on each host.
    Nccl,
}

/// The processes of a distributed run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSpec {
    /// Trainer ranks (data-parallel world size); `train.batch_size` is the
    /// global batch, split evenly over them.
    pub trainers: usize,
    /// Evaluators `premem run` starts.
    pub evaluators: usize,
    pub backend: Backend,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            trainers: 1,
            evaluators: 1,
            backend: Backend::Auto,
        }
    }
}

impl CheckpointSpec {
    /// Whether a checkpoint is due after `done` steps of `total` (the last
    /// step always checkpoints; `ends_epoch`: step `done` ends an epoch).
    pub fn due(&self, done: u64, total: u64, ends_epoch: bool) -> bool {
        done == total
            || self.every_steps.is_some_and(|n| done.is_multiple_of(n))
            || self.steps.binary_search(&done).is_ok()
            || (self.every_epoch && ends_epoch)
    }

    /// `checkpoint.steps` within a run of `total` steps.
    pub fn check_steps(&self, total: u64) -> Result<(), String> {
        match self.steps.iter().find(|&&s| s > total) {
            Some(step) => Err(format!(
                "checkpoint.steps lists step {step}, but the run has {total} steps"
            )),
            None => Ok(()),
        }
    }
}

impl JobSpec {
    /// The data order of this job over its `n` training examples: the one
    /// place that reads a job's data order out of its spec (the coordinator
    /// for the step count, every trainer rank for its batches).
    pub fn data_plan(&self, n: usize) -> DataPlan {
        let t = &self.train;
        DataPlan::new(
            n,
            self.data.fraction,
            t.batch_size,
            t.epochs,
            t.keep_steps_of_epochs,
            self.run.seed,
        )
    }

    /// A digest of the contents of the files the spec names (train data,
    /// tokenizer, model config; for a base model its config, weight index and
    /// weight file sizes): a resume refuses inputs that changed under the
    /// same paths.
    pub fn inputs_digest(&self) -> Result<String, SpecError> {
        let mut hasher = Sha256::new();
        let mut add_file = |path: &Path| -> Result<(), SpecError> {
            let bytes = std::fs::read(path).map_err(|source| SpecError::Io {
                path: path.into(),
                source,
            })?;
            hasher.update(
                path.file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
            Ok(())
        };
        add_file(Path::new(&self.data.train.path))?;
        if let Some(tokenizer) = &self.model.tokenizer {
            add_file(Path::new(tokenizer))?;
        }
        if let Some(config) = &self.model.config {
            add_file(Path::new(config))?;
        }
        if let Some(base) = &self.model.base {
            let base = Path::new(base);
            for name in [
                "config.json",
                "tokenizer.json",
                "model.safetensors.index.json",
            ] {
                if base.join(name).is_file() {
                    add_file(&base.join(name))?;
                }
            }
            // Weights are too large to hash at every start: their sizes stand in.
            let mut weights: Vec<(String, u64)> = std::fs::read_dir(base)
                .map_err(|source| SpecError::Io {
                    path: base.into(),
                    source,
                })?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
                .filter_map(|e| {
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().ok()?.len(),
                    ))
                })
                .collect();
            weights.sort();
            for (name, size) in weights {
                hasher.update(name.as_bytes());
                hasher.update(size.to_le_bytes());
            }
        }
        Ok(hex::encode(&hasher.finalize()[..16]))
    }

    /// A hash of everything that determines the trained weights (not where
    /// they are written or how often): a resume refuses a changed spec.
    pub fn training_hash(&self) -> String {
        let relevant = serde_json::json!({
            "seed": self.run.seed,
            "model": self.model,
            "data": self.data,
            "prompt": self.prompt,
            "train": {
                "optimizer": self.train.optimizer,
                "lr": self.train.lr,
                "weight_decay": self.train.weight_decay,
                "betas": self.train.betas,
                "eps": self.train.eps,
                "schedule": self.train.schedule,
                "batch_size": self.train.batch_size,
                "micro_batch_size": self.train.micro_batch_size,
                "max_grad_norm": self.train.max_grad_norm,
                "epochs": self.train.epochs,
                "keep_steps_of_epochs": self.train.keep_steps_of_epochs,
                "max_length": self.train.max_length,
                "precision": self.train.precision,
            },
        });
        hex::encode(&Sha256::digest(relevant.to_string().as_bytes())[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::MINIMAL_JOB as MINIMAL;

    fn parse(text: &str) -> Result<JobSpec, SpecError> {
        JobSpec::from_toml(text, Path::new("job.toml"))
    }

    #[test]
    fn minimal_spec_gets_the_documented_defaults() {
        let spec = parse(MINIMAL).unwrap();
        assert_eq!(spec.train.optimizer, OptimizerKind::Adamw);
        assert_eq!(spec.train.betas, [0.9, 0.999]);
        assert_eq!(spec.prompt, PromptTemplate::default());
        assert!(spec.checkpoint.every_epoch);
        assert_eq!(spec.data.fraction, 1.0);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = parse(&MINIMAL.replace("lr = 1e-4", "lr = 1e-4\nlearning_rate = 3"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("job.toml") && err.contains("unknown field `learning_rate`"),
            "{err}"
        );
        let err = parse(&MINIMAL.replace("micro_batch_size = 4", "micro_batch_size = 3"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.batch_size (8) must be a multiple of train.micro_batch_size (3)"),
            "{err}"
        );
        let err = parse(&MINIMAL.replace("type = \"linear\"", "type = \"cosine\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("warmup_steps"), "{err}");
        let err = parse(&MINIMAL.replace("format = \"gsm8k\"", "format = \"csv\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `csv`"), "{err}");
    }

    #[test]
    fn eval_holds_the_sampling_settings_in_its_own_table_and_refuses_unknown_keys() {
        let spec = parse(&format!(
            "{MINIMAL}\n[eval]\nsamples = 3\ntop_p = 1\ntask_examples = 4\n"
        ))
        .unwrap();
        assert_eq!(
            (spec.eval.sampling.samples, spec.eval.sampling.top_p),
            (3, 1.0)
        );
        assert_eq!(spec.eval.sampling.temperature, 0.8);
        assert_eq!(spec.eval.task_examples, 4);
        // The JSON on the wire and in run.json keeps the flat table.
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["eval"]["samples"], 3);
        assert!(json["eval"].get("sampling").is_none() && json["eval"].get("unknown").is_none());
        let back: JobSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, spec);

        let err = parse(&format!("{MINIMAL}\n[eval]\nsampels = 3\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("job.toml") && err.contains("eval: unknown field `sampels`"),
            "{err}"
        );
        let err = parse(&format!("{MINIMAL}\n[eval]\nsamples = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("eval.samples must be 1 to 1024, got 0"),
            "{err}"
        );
    }

    #[test]
    fn training_hash_ignores_where_and_how_often_but_not_what() {
        let a = parse(MINIMAL).unwrap();
        let mut b = a.clone();
        b.run.output = "elsewhere".into();
        b.checkpoint.every_steps = Some(5);
        assert_eq!(a.training_hash(), b.training_hash());
        b.train.lr = 2e-4;
        assert_ne!(a.training_hash(), b.training_hash());
    }

    #[test]
    fn memory_settings_parse_validate_and_stay_out_of_the_training_hash() {
        let a = parse(MINIMAL).unwrap();
        assert_eq!(a.train.sharding, Sharding::Auto);
        assert_eq!(
            a.train.activation_checkpointing,
            ActivationCheckpointing::None
        );
        assert_eq!(a.train.loss_chunk_tokens, None);
        let b = parse(&format!(
            "{MINIMAL}sharding = \"zero2\"\nactivation_checkpointing = \"layers\"\nloss_chunk_tokens = 512\n"
        ))
        .unwrap();
        assert_eq!(b.train.sharding, Sharding::Zero2);
        assert_eq!(
            b.train.activation_checkpointing,
            ActivationCheckpointing::Layers
        );
        assert_eq!(b.train.loss_chunk_tokens, Some(512));
        assert_eq!(a.training_hash(), b.training_hash());
        let err = parse(&format!("{MINIMAL}loss_chunk_tokens = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.loss_chunk_tokens must be positive"),
            "{err}"
        );
        let err = parse(&format!("{MINIMAL}sharding = \"zero3\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("zero3") && err.contains("zero2"), "{err}");
    }

    /// A checkpoint is due at every listed step, every `every_steps`, at
    /// the ends of epochs when asked, and at the last step; the listed
    /// steps must increase and lie within the run; a list that is empty
    /// leaves the spec's JSON as it was (run names hash it).
    #[test]
    fn listed_checkpoint_steps() {
        let spec = parse(&format!(
            "{MINIMAL}\n[checkpoint]\nevery_epoch = false\nevery_steps = 10\nsteps = [3, 7]\n"
        ))
        .unwrap();
        let c = &spec.checkpoint;
        let due: Vec<u64> = (1..=25).filter(|&s| c.due(s, 25, s % 8 == 0)).collect();
        assert_eq!(due, [3, 7, 10, 20, 25]);
        assert!(c.check_steps(7).is_ok());
        let err = c.check_steps(6).unwrap_err();
        assert_eq!(
            err,
            "checkpoint.steps lists step 7, but the run has 6 steps"
        );
        let epochs = CheckpointSpec::default();
        let due: Vec<u64> = (1..=25)
            .filter(|&s| epochs.due(s, 25, s % 8 == 0))
            .collect();
        assert_eq!(due, [8, 16, 24, 25]);
        for bad in ["[0, 4]", "[4, 4]", "[5, 3]"] {
            let err = parse(&format!("{MINIMAL}\n[checkpoint]\nsteps = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("must be positive and increasing"),
                "{bad}: {err}"
            );
        }
        let json = serde_json::to_string(&parse(MINIMAL).unwrap()).unwrap();
        assert!(
            !json.contains("\"steps\"") && !json.contains("test_limit"),
            "{json}"
        );
    }

    /// `make reproduce`'s base: one epoch over the corpus, no evaluation
    /// of its own (Gate 0 samples it with its [eval] settings).
    #[test]
    fn the_reproduce_base_parses() {
        let spec = parse(include_str!("../../../examples/reproduce/base.toml")).unwrap();
        assert_eq!(spec.train.epochs, 1);
        assert!(!spec.eval.enabled);
        assert_eq!(spec.eval.sampling.samples, 8);
        assert_eq!(spec.data.train.path, "data/reproduce/pretrain.jsonl");
    }
}
