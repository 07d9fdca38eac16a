//! The rules of a job spec: every value that parses but cannot be used,
//! section by section, each refused with its section's typed error
//! (`error.rs`). A `JobSpec` is checked as it is deserialized, whatever
//! the format, so each setting is checked once, where it enters a process.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::spec::error::{
    CheckpointSpecError, ClusterSpecError, EvalSpecError, JobSpecError, ModelSpecError, NameError,
    RunSpecError, TrackingSpecError, TrainSpecError,
};
use crate::spec::job::{
    CheckpointSpec, JobSpec, ModelSpec, RunSpec, ScheduleSpec, TrackingSpec, TrainSpec,
};

/// The most passes over the data a job may ask for (`train.epochs`,
/// `train.keep_steps_of_epochs`): far beyond any finetuning run, and small
/// enough that the step count of any dataset fits in 64 bits.
pub const MAX_EPOCHS: u64 = 1_000_000;

/// The longest name of a job or sweep (a sweep's runs add 13 characters).
pub const MAX_NAME_LEN: usize = 100;

/// The most trainer ranks or evaluators a job may declare.
pub const MAX_PROCESSES: u64 = 1024;

/// The bound of every other size a job declares: far above any real job,
/// low enough that what is sized by it (a rank table, a batch's buffers, a
/// list of steps) fits in memory. Checked where the spec enters, so one
/// job cannot make a coordinator allocate for it (issue 39, item 2).
const BOUNDS: [(&str, u64); 12] = [
    ("cluster.trainers", MAX_PROCESSES),
    ("cluster.evaluators", MAX_PROCESSES),
    ("train.batch_size", 1 << 20),
    ("train.max_length", 1 << 20),
    ("train.monitor_examples", 1 << 20),
    ("train.monitor_max_new_tokens", 1 << 16),
    ("checkpoint.steps (count)", 100_000),
    ("checkpoint.grad_variance_minibatches", 10_000),
    ("eval.task_examples", 1 << 20),
    ("eval.batch_size", 1 << 16),
    ("eval.max_attempts", 1000),
    ("eval.limit", 1 << 32),
];

impl<'de> Deserialize<'de> for JobSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<JobSpec, D::Error> {
        let spec = JobSpec::deserialize(deserializer)?;
        spec.check().map_err(D::Error::custom)?;
        Ok(spec)
    }
}

impl Serialize for JobSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        JobSpec::serialize(self, serializer)
    }
}

/// A job spec as parsed, before [`JobSpec::check`]: for the edges that
/// report a value that cannot be used with its line (`parse.rs`).
pub(crate) struct Unchecked(pub JobSpec);

impl<'de> Deserialize<'de> for Unchecked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Unchecked, D::Error> {
        JobSpec::deserialize(deserializer).map(Unchecked)
    }
}

/// Checks a name that becomes a directory and a file name (a job's
/// `run.name`, a sweep's `sweep.name`): 1 to [`MAX_NAME_LEN`] ASCII letters,
/// digits, '-', '_' and '.', starting with a letter or a digit (so never
/// `.` or `..`). `key` names the setting in the error.
pub fn check_name(key: &str, name: &str) -> Result<(), NameError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let starts_well = name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if name.len() > MAX_NAME_LEN || !starts_well || !name.chars().all(allowed) {
        return Err(NameError {
            key: key.to_string(),
            max: MAX_NAME_LEN,
            shown: name.chars().take(40).collect(),
            cut: name.chars().count() > 40,
        });
    }
    Ok(())
}

impl JobSpec {
    /// Checks every value that parses but cannot be used; the error names
    /// the key. Deserializing a spec calls it; call it again only after
    /// changing a parsed spec (`premem plan`'s flags).
    pub fn check(&self) -> Result<(), JobSpecError> {
        self.check_bounds()?;
        self.run.check()?;
        self.model.check()?;
        let fraction = self.data.fraction;
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(JobSpecError::DataFraction(fraction));
        }
        self.train.check()?;
        self.checkpoint.check()?;
        self.check_eval()?;
        self.check_cluster()?;
        self.prompt.validate().map_err(JobSpecError::Prompt)?;
        self.advice.validate().map_err(JobSpecError::Advice)?;
        self.tracking.check()?;
        Ok(())
    }

    /// Every declared size within [`BOUNDS`].
    fn check_bounds(&self) -> Result<(), JobSpecError> {
        let (t, e) = (&self.train, &self.eval);
        let values = [
            self.cluster.trainers as u64,
            self.cluster.evaluators as u64,
            t.batch_size as u64,
            t.max_length as u64,
            t.monitor_examples as u64,
            t.monitor_max_new_tokens.max(0) as u64,
            self.checkpoint.steps.len() as u64,
            self.checkpoint.grad_variance_minibatches as u64,
            e.task_examples as u64,
            e.batch_size as u64,
            u64::from(e.max_attempts),
            e.limit.max(e.test_limit).unwrap_or(0) as u64,
        ];
        for ((key, max), value) in BOUNDS.into_iter().zip(values) {
            if value > max {
                return Err(JobSpecError::TooLarge { key, value, max });
            }
        }
        Ok(())
    }

    fn check_eval(&self) -> Result<(), EvalSpecError> {
        let e = &self.eval;
        if let Some(key) = e.unknown.keys().next() {
            return Err(EvalSpecError::UnknownKey(key.clone()));
        }
        e.sampling.validate().map_err(EvalSpecError::Sampling)?;
        if e.task_examples == 0 || e.batch_size == 0 || e.max_attempts == 0 {
            return Err(EvalSpecError::Zero);
        }
        if e.limit == Some(0) {
            return Err(EvalSpecError::Limit);
        }
        if e.test_limit == Some(0) {
            return Err(EvalSpecError::TestLimit);
        }
        e.threshold.validate().map_err(EvalSpecError::Threshold)
    }

    fn check_cluster(&self) -> Result<(), ClusterSpecError> {
        let trainers = self.cluster.trainers;
        if trainers == 0 {
            return Err(ClusterSpecError::NoTrainers);
        }
        let batch = self.train.batch_size;
        if !batch.is_multiple_of(trainers) {
            return Err(ClusterSpecError::Split { batch, trainers });
        }
        Ok(())
    }
}

impl RunSpec {
    fn check(&self) -> Result<(), RunSpecError> {
        check_name("run.name", &self.name).map_err(RunSpecError::Name)?;
        let Some(group) = &self.group else {
            return Ok(());
        };
        match group.split_once('/') {
            Some(("sweep" | "curation", name)) => {
                check_name("run.group's name", name).map_err(RunSpecError::Name)
            }
            _ => Err(RunSpecError::Group(group.clone())),
        }
    }
}

impl ModelSpec {
    fn check(&self) -> Result<(), ModelSpecError> {
        match (&self.base, &self.config) {
            (Some(_), Some(_)) => Err(ModelSpecError::BaseAndConfig),
            (None, None) => Err(ModelSpecError::NeitherBaseNorConfig),
            (None, Some(_)) if self.tokenizer.is_none() => Err(ModelSpecError::NoTokenizer),
            _ => Ok(()),
        }
    }
}

impl TrainSpec {
    fn check(&self) -> Result<(), TrainSpecError> {
        let t = self;
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(TrainSpecError::Lr(t.lr));
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return Err(TrainSpecError::WeightDecay(t.weight_decay));
        }
        if !(t.eps.is_finite() && t.eps > 0.0) {
            return Err(TrainSpecError::Eps(t.eps));
        }
        if t.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return Err(TrainSpecError::Betas(t.betas));
        }
        t.check_batches()?;
        if let Some(norm) = t.max_grad_norm
            && norm.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        {
            return Err(TrainSpecError::MaxGradNorm(norm));
        }
        if let ScheduleSpec::Cosine { warmup_fraction } = t.schedule
            && !(0.0..1.0).contains(&warmup_fraction)
        {
            return Err(TrainSpecError::WarmupFraction(warmup_fraction));
        }
        if t.max_length < 2 {
            return Err(TrainSpecError::MaxLength);
        }
        if t.monitor_max_new_tokens < 1 {
            return Err(TrainSpecError::MonitorTokens(t.monitor_max_new_tokens));
        }
        if t.loss_chunk_tokens == Some(0) {
            return Err(TrainSpecError::LossChunk);
        }
        Ok(())
    }

    /// Batch sizes and epochs.
    fn check_batches(&self) -> Result<(), TrainSpecError> {
        let (batch, micro) = (self.batch_size, self.micro_batch_size);
        if micro == 0 || batch == 0 {
            return Err(TrainSpecError::ZeroBatch);
        }
        if !batch.is_multiple_of(micro) {
            return Err(TrainSpecError::MicroBatch { batch, micro });
        }
        let epochs = [Some(self.epochs), self.keep_steps_of_epochs];
        if epochs.iter().flatten().any(|&e| e == 0 || e > MAX_EPOCHS) {
            return Err(TrainSpecError::Epochs {
                epochs: self.epochs,
                keep: self.keep_steps_of_epochs,
                max: MAX_EPOCHS,
            });
        }
        Ok(())
    }
}

impl CheckpointSpec {
    fn check(&self) -> Result<(), CheckpointSpecError> {
        if self.baselines && self.grad_variance_minibatches < 2 {
            return Err(CheckpointSpecError::GradVarianceMinibatches(
                self.grad_variance_minibatches,
            ));
        }
        if self.every_steps == Some(0) || self.keep_resume_states == Some(0) {
            return Err(CheckpointSpecError::Zero);
        }
        if self.steps.first() == Some(&0) || self.steps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(CheckpointSpecError::Steps(self.steps.clone()));
        }
        if self.max_shard_bytes == 0 {
            return Err(CheckpointSpecError::MaxShardBytes);
        }
        Ok(())
    }
}

impl TrackingSpec {
    fn check(&self) -> Result<(), TrackingSpecError> {
        if let Some(url) = &self.mlflow {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || url.len() > 2000 {
                return Err(TrackingSpecError::Mlflow(url.clone()));
            }
        }
        if let Some(name) = &self.experiment
            && (name.trim().is_empty() || name.len() > 500)
        {
            return Err(TrackingSpecError::Experiment(name.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::spec::SpecError;
    use crate::testing::MINIMAL_JOB as MINIMAL;

    fn parse(text: &str) -> Result<JobSpec, SpecError> {
        JobSpec::from_toml(text, Path::new("job.toml"))
    }

    #[test]
    fn names_that_are_not_one_path_component_are_refused() {
        let named =
            |name: &str| parse(&MINIMAL.replace("name = \"t\"", &format!("name = {name:?}")));
        for good in ["t", "gsm8k-llama3-8b_lr1e-5.v2", &"a".repeat(MAX_NAME_LEN)] {
            assert_eq!(named(good).unwrap().run.name, good);
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let huge = "b".repeat(10_000);
        for bad in [
            "",
            "a/b",
            "../escape",
            ".hidden",
            "x\ny",
            "sp ace",
            "é",
            &long,
            &huge,
        ] {
            let err = named(bad).unwrap_err().to_string();
            assert!(
                err.contains("run.name") && err.contains("letters, digits"),
                "{bad:?}: {err}"
            );
            // The message shows a bounded prefix of the name.
            assert!(err.len() < 400, "{err}");
        }
    }

    #[test]
    fn epochs_are_bounded() {
        for (text, ok) in [
            ("epochs = 1_000_000", true),
            ("epochs = 1_000_001", false),
            ("epochs = 18446744073709551615", false),
            ("keep_steps_of_epochs = 0", false),
        ] {
            let spec = parse(&MINIMAL.replace("[train]", &format!("[train]\n{text}")));
            assert_eq!(spec.is_ok(), ok, "{text}: {spec:?}");
            if let Err(e) = spec {
                assert!(e.to_string().contains("must be 1 to 1000000"), "{e}");
            }
        }
    }

    #[test]
    fn an_unusable_value_is_a_typed_error_naming_file_line_and_key() {
        let err = parse(&MINIMAL.replace("lr = 1e-4", "lr = 0.0")).unwrap_err();
        let SpecError::Job { path, line, error } = &err else {
            panic!("not a job spec error: {err:?}");
        };
        let lr_line = MINIMAL.lines().position(|l| l.starts_with("lr")).unwrap() + 1;
        assert_eq!(
            (path.as_path(), *line),
            (Path::new("job.toml"), Some(lr_line))
        );
        assert_eq!(*error, JobSpecError::Train(TrainSpecError::Lr(0.0)));
        assert_eq!(error.key(), "train.lr");
        assert!(
            err.to_string()
                .starts_with(&format!("job.toml:{lr_line}: train.lr must be positive")),
            "{err}"
        );
        // Another key: its own line.
        let err = parse(&format!("{MINIMAL}epochs = 0\n")).unwrap_err();
        let last = MINIMAL.lines().count() + 1;
        assert!(
            matches!(err, SpecError::Job { line: Some(l), .. } if l == last),
            "{err}"
        );
        // Read any other way (a run's record, a spec as a TOML or JSON value),
        // a spec is checked all the same.
        let bad = MINIMAL.replace("lr = 1e-4", "lr = -1.0");
        let as_toml = toml::from_str::<JobSpec>(&bad).unwrap_err().to_string();
        assert!(as_toml.contains("train.lr must be positive"), "{as_toml}");
        let mut json = serde_json::to_value(parse(MINIMAL).unwrap()).unwrap();
        json["train"]["lr"] = (-1.0).into();
        let as_json = serde_json::from_value::<JobSpec>(json.clone()).unwrap_err();
        assert!(
            as_json.to_string().contains("train.lr must be positive"),
            "{as_json}"
        );
        let from_json = JobSpec::from_json(&json.to_string(), Path::new("spec_json"));
        assert!(
            matches!(&from_json, Err(SpecError::Job { path, line: None, .. }) if path == Path::new("job 't'")),
            "{from_json:?}"
        );
    }

    #[test]
    fn declared_sizes_are_bounded_and_the_error_gives_the_bound() {
        use crate::testing::JobToml;
        let at = |fragment: &str| {
            JobSpec::from_toml(
                &JobToml::default().with(fragment).text(),
                Path::new("job.toml"),
            )
        };
        let huge = "[cluster]\ntrainers = 100000000\n[train]\nbatch_size = 100000000\nmicro_batch_size = 100000000";
        let err = at(huge).unwrap_err().to_string();
        assert!(
            err.contains("cluster.trainers = 100000000 is over its bound of 1024"),
            "{err}"
        );
        assert!(
            at("[cluster]\ntrainers = 1024\n[train]\nbatch_size = 1024\nmicro_batch_size = 4")
                .is_ok()
        );
        for (fragment, key) in [
            (
                "[train]\nbatch_size = 2097152\nmicro_batch_size = 4",
                "train.batch_size",
            ),
            ("[train]\nmax_length = 2000000", "train.max_length"),
            ("[eval]\nbatch_size = 70000", "eval.batch_size"),
            ("[cluster]\nevaluators = 5000", "cluster.evaluators"),
        ] {
            let err = at(fragment).unwrap_err();
            assert!(
                matches!(&err, SpecError::Job { error: JobSpecError::TooLarge { key: k, .. }, .. } if *k == key),
                "{fragment}: {err}"
            );
        }
    }
}
