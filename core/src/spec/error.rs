//! The errors of a job spec: reading it, parsing it, and one typed error per
//! section for a value that parses but cannot be used. Each section error
//! knows the key it is about ([`JobSpecError::key`]), so the edge that read
//! the text can name the file and the line ([`SpecError::Job`]).

use std::fmt;
use std::path::PathBuf;

use crate::data::sampling::SamplingError;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a wrong type (the message has the line).
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A job spec value that parses but cannot be used: the file (or the
    /// job, for a spec sent as JSON), the line of its key when known, and
    /// the section's error, which names the key.
    #[error("{path}{}: {error}", Line(*.line))]
    Job {
        path: PathBuf,
        line: Option<usize>,
        #[source]
        error: JobSpecError,
    },
    /// A value of another spec (a sweep, a curation) that parses but cannot
    /// be used; the message names the key.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// `:<line>` when the line is known.
struct Line(Option<usize>);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, ":{line}"),
            None => Ok(()),
        }
    }
}

impl SpecError {
    /// A value of `path` that parses but cannot be used.
    pub fn invalid(path: &std::path::Path, message: String) -> SpecError {
        SpecError::Invalid {
            path: path.into(),
            message,
        }
    }
}

/// A name that cannot be one path component (`check_name`).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "{key} {shown:?}{more}: must be 1 to {max} letters, digits, '-', '_' and '.', \
     starting with a letter or a digit (it names directories and files)",
    more = if *.cut { "..." } else { "" }
)]
pub struct NameError {
    pub key: String,
    /// The longest name allowed.
    pub max: usize,
    /// The name's first 40 characters.
    pub shown: String,
    /// Whether the name is longer than `shown`.
    pub cut: bool,
}

/// A job spec value that parses but cannot be used, by section.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum JobSpecError {
    #[error(transparent)]
    Run(#[from] RunSpecError),
    #[error(transparent)]
    Model(#[from] ModelSpecError),
    #[error("data.fraction must be in (0, 1], got {0}")]
    DataFraction(f64),
    #[error(transparent)]
    Train(#[from] TrainSpecError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointSpecError),
    #[error(transparent)]
    Eval(#[from] EvalSpecError),
    #[error(transparent)]
    Cluster(#[from] ClusterSpecError),
    /// `[prompt]` (the message names the key).
    #[error("{0}")]
    Prompt(String),
    /// `[advice]` (the message names the key).
    #[error("{0}")]
    Advice(String),
    #[error(transparent)]
    Tracking(#[from] TrackingSpecError),
    /// A declared size over its bound (`check.rs`'s `BOUNDS`): nothing is
    /// ever sized from an absurd value.
    #[error("{key} = {value} is over its bound of {max}")]
    TooLarge {
        key: &'static str,
        value: u64,
        max: u64,
    },
}

impl JobSpecError {
    /// The dotted key the error is about (`train.lr`), or its section.
    pub fn key(&self) -> String {
        let key = match self {
            JobSpecError::Eval(e) => return e.key(),
            JobSpecError::Run(e) => e.key(),
            JobSpecError::Model(e) => e.key(),
            JobSpecError::DataFraction(_) => "data.fraction",
            JobSpecError::Train(e) => e.key(),
            JobSpecError::Checkpoint(e) => e.key(),
            JobSpecError::Cluster(e) => e.key(),
            JobSpecError::Prompt(_) => "prompt",
            JobSpecError::Advice(_) => "advice",
            JobSpecError::Tracking(e) => e.key(),
            JobSpecError::TooLarge { key, .. } => key,
        };
        key.to_string()
    }
}

/// `[run]`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RunSpecError {
    #[error(transparent)]
    Name(NameError),
    #[error("run.group {0:?}: `sweep/<name>` or `curation/<name>`")]
    Group(String),
}

impl RunSpecError {
    fn key(&self) -> &str {
        match self {
            RunSpecError::Name(e) if e.key == "run.name" => "run.name",
            _ => "run.group",
        }
    }
}

/// `[model]`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ModelSpecError {
    #[error("model: give either `base` or `config`, not both")]
    BaseAndConfig,
    #[error("model: give `base` (a model directory) or `config` (random init)")]
    NeitherBaseNorConfig,
    #[error("model.tokenizer: a randomly initialised model needs a tokenizer.json")]
    NoTokenizer,
}

impl ModelSpecError {
    fn key(&self) -> &str {
        match self {
            ModelSpecError::NoTokenizer => "model.tokenizer",
            _ => "model",
        }
    }
}

/// `[train]`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TrainSpecError {
    #[error("train.lr must be positive, got {0}")]
    Lr(f64),
    #[error("train.weight_decay must be >= 0, got {0}")]
    WeightDecay(f64),
    #[error("train.eps must be positive, got {0}")]
    Eps(f64),
    #[error("train.betas must be in [0, 1), got {0:?}")]
    Betas([f64; 2]),
    #[error("train.batch_size and train.micro_batch_size must be positive")]
    ZeroBatch,
    #[error("train.batch_size ({batch}) must be a multiple of train.micro_batch_size ({micro})")]
    MicroBatch { batch: usize, micro: usize },
    #[error(
        "train.epochs and train.keep_steps_of_epochs must be 1 to {max}, got {epochs} and {keep:?}"
    )]
    Epochs {
        epochs: u64,
        keep: Option<u64>,
        max: u64,
    },
    #[error("train.max_grad_norm must be positive, got {0}")]
    MaxGradNorm(f64),
    #[error("train.schedule.warmup_fraction must be in [0, 1), got {0}")]
    WarmupFraction(f64),
    #[error("train.max_length must be at least 2")]
    MaxLength,
    #[error("train.monitor_max_new_tokens must be positive, got {0}")]
    MonitorTokens(i64),
    #[error("train.loss_chunk_tokens must be positive (or absent)")]
    LossChunk,
}

impl TrainSpecError {
    fn key(&self) -> &str {
        match self {
            TrainSpecError::Lr(_) => "train.lr",
            TrainSpecError::WeightDecay(_) => "train.weight_decay",
            TrainSpecError::Eps(_) => "train.eps",
            TrainSpecError::Betas(_) => "train.betas",
            TrainSpecError::ZeroBatch | TrainSpecError::MicroBatch { .. } => {
                "train.micro_batch_size"
            }
            TrainSpecError::Epochs { .. } => "train.epochs",
            TrainSpecError::MaxGradNorm(_) => "train.max_grad_norm",
            TrainSpecError::WarmupFraction(_) => "train.schedule",
            TrainSpecError::MaxLength => "train.max_length",
            TrainSpecError::MonitorTokens(_) => "train.monitor_max_new_tokens",
            TrainSpecError::LossChunk => "train.loss_chunk_tokens",
        }
    }
}

/// `[checkpoint]`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CheckpointSpecError {
    #[error(
        "checkpoint.grad_variance_minibatches must be at least 2 (a variance needs two), got {0}"
    )]
    GradVarianceMinibatches(usize),
    #[error("checkpoint.every_steps and checkpoint.keep_resume_states must be positive")]
    Zero,
    #[error("checkpoint.steps {0:?}: steps must be positive and increasing")]
    Steps(Vec<u64>),
    #[error("checkpoint.max_shard_bytes must be positive")]
    MaxShardBytes,
}

impl CheckpointSpecError {
    fn key(&self) -> &str {
        match self {
            CheckpointSpecError::GradVarianceMinibatches(_) => {
                "checkpoint.grad_variance_minibatches"
            }
            CheckpointSpecError::Zero => "checkpoint",
            CheckpointSpecError::Steps(_) => "checkpoint.steps",
            CheckpointSpecError::MaxShardBytes => "checkpoint.max_shard_bytes",
        }
    }
}

/// `[eval]`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EvalSpecError {
    #[error("eval: unknown field `{0}`")]
    UnknownKey(String),
    #[error("{}", .0.in_spec("eval"))]
    Sampling(SamplingError),
    #[error("eval.task_examples, eval.batch_size and eval.max_attempts must be positive")]
    Zero,
    #[error("eval.limit must be positive (leave it out for every example)")]
    Limit,
    #[error("eval.test_limit must be positive (leave it out for every test example)")]
    TestLimit,
    #[error("eval.threshold: {0}")]
    Threshold(String),
}

impl EvalSpecError {
    fn key(&self) -> String {
        match self {
            EvalSpecError::Sampling(e) => format!("eval.{}", e.field),
            EvalSpecError::Limit => "eval.limit".into(),
            EvalSpecError::TestLimit => "eval.test_limit".into(),
            EvalSpecError::Threshold(_) => "eval.threshold".into(),
            _ => "eval".into(),
        }
    }
}

/// `[cluster]`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ClusterSpecError {
    #[error("cluster.trainers must be at least 1")]
    NoTrainers,
    #[error(
        "train.batch_size {batch} must be a multiple of cluster.trainers {trainers}: each rank takes an equal share of the global batch"
    )]
    Split { batch: usize, trainers: usize },
}

impl ClusterSpecError {
    fn key(&self) -> &str {
        "cluster.trainers"
    }
}

/// `[tracking]`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TrackingSpecError {
    #[error("tracking.mlflow {0:?}: an MLflow tracking server's http:// or https:// URL")]
    Mlflow(String),
    #[error("tracking.experiment {0:?}: 1 to 500 characters, not only spaces")]
    Experiment(String),
}

impl TrackingSpecError {
    fn key(&self) -> &str {
        match self {
            TrackingSpecError::Mlflow(_) => "tracking.mlflow",
            TrackingSpecError::Experiment(_) => "tracking.experiment",
        }
    }
}
